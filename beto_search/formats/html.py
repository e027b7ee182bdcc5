"""HTML and XHTML: the main content only, through trafilatura (Apache-2.0).

trafilatura drops navigation, menus, cookie banners, footers, scripts and styles, and reads the
title (og:title, <title>, first <h1>), author and date from the usual meta tags. The charset comes
from the document (BOM, <meta charset>, <?xml encoding?>), else UTF-8, else detection (a latin-1
page without a declaration reads right). Headings become section locations.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Any

from ..text import decode_bytes
from ..types import Document
from .base import FormatSkip, TextBuilder, file_metadata

_CHARSET = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?\s*([-\w.:]+)|<\?xml[^>]+encoding\s*=\s*["']([-\w.:]+)""",
    re.I,
)
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>", re.I)
_LANG = [
    re.compile(r"""<html\b[^>]*?\b(?:xml:)?lang\s*=\s*["']?([A-Za-z]{2,3}(?:[-_][\w]+)?)""", re.I),
    re.compile(
        r"""<meta[^>]+http-equiv\s*=\s*["']?content-language["']?[^>]+content\s*=\s*["']?([\w-]+)""",
        re.I,
    ),
    re.compile(
        r"""<meta[^>]+property\s*=\s*["']og:locale["'][^>]+content\s*=\s*["']?([\w-]+)""", re.I
    ),
]
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# browsers read pages declared latin-1 or ascii as windows-1252 (its superset): so do we
_AS_CP1252 = {"iso-8859-1", "latin-1", "latin1", "ascii", "us-ascii", "iso8859-1", "l1"}


def decode_html(data: bytes) -> str:
    """The page's text: BOM, then the declared charset, then UTF-8, then detection."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace").lstrip("\ufeff")
    m = _CHARSET.search(data[:8192])
    if m:
        declared = (m.group(1) or m.group(2)).decode("ascii", "replace").lower()
        declared = "cp1252" if declared in _AS_CP1252 else declared
        try:
            codecs.lookup(declared)
        except LookupError:
            pass
        else:
            try:
                return data.decode(declared)
            except UnicodeDecodeError:
                pass  # a wrong declaration: detect instead
    return decode_bytes(data)


def _language(page: str) -> str | None:
    head = page[:16384]
    for pattern in _LANG:
        m = pattern.search(head)
        if m:
            return m.group(1).replace("_", "-")
    return None


def _text_of(el: Any) -> str:
    return " ".join("".join(el.itertext()).split())


def add_blocks(xml: Any, builder: TextBuilder) -> None:
    """trafilatura's XML body (head, p, list, table, quote...) into ``builder``, in order."""
    for el in xml:
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag == "head":
            rend = str(el.get("rend") or "h2")
            level = int(rend[1]) if re.fullmatch(r"h[1-6]", rend) else 2
            builder.heading(level, _text_of(el))
        elif tag == "list":
            builder.block("\n".join(_text_of(item) for item in el if _text_of(item)))
        elif tag == "table":
            rows = (" | ".join(_text_of(c) for c in row if _text_of(c)) for row in el.iter("row"))
            builder.block("\n".join(r for r in rows if r))
        elif tag in ("div", "main", "section"):
            add_blocks(el, builder)
        else:
            builder.block(_text_of(el))


_CONFIG: list[Any] = []


def _config() -> Any:
    """trafilatura's settings with no minimum size: a short page or chapter is content too."""
    if not _CONFIG:
        from trafilatura.settings import use_config

        config = use_config()
        for key in ("MIN_EXTRACTED_SIZE", "MIN_OUTPUT_SIZE"):
            config.set("DEFAULT", key, "1")
        _CONFIG.append(config)
    return _CONFIG[0]


def extract_html(page: str, builder: TextBuilder) -> dict[str, Any]:
    """Add the page's main content to ``builder``; the metadata trafilatura found (title,
    author, date) plus the language."""
    import trafilatura
    from lxml import etree
    from trafilatura.settings import set_date_params

    page = _XML_DECL.sub("", page, count=1)  # lxml refuses str input with an encoding declaration
    found = trafilatura.extract(
        page,
        output_format="xml",
        include_tables=True,
        include_comments=False,
        with_metadata=True,
        config=_config(),
        # the date from the page's meta data, not guessed from dates in its text
        date_extraction_params=set_date_params(extensive=False),
    )
    meta: dict[str, Any] = {"language": _language(page)}
    if found:
        root = etree.fromstring(found.encode("utf-8"))
        meta.update({k: root.get(k) for k in ("title", "author", "date")})
        main = root.find("main")
        if main is not None:
            add_blocks(main, builder)
    if not builder.text().strip():
        # trafilatura found no main content (a page too short for its heuristics): its
        # baseline, which still leaves scripts and styles out
        _, text, _ = trafilatura.baseline(page)
        builder.block(text)
    return meta


def read_html(path: Path) -> Document:
    page = decode_html(path.read_bytes())
    builder = TextBuilder()
    meta = extract_html(page, builder)
    text = builder.text()
    if not text.strip():
        raise FormatSkip("empty or whitespace-only (no text in the page)")
    title = (meta.get("title") or builder.first_heading or text.split("\n", 1)[0]).strip()
    return Document(
        id=path.name,
        text=text,
        title=title[:300],
        source=str(path),
        metadata=file_metadata(meta.get("author"), meta.get("date"), meta.get("language")),
        locations=builder.finished_locations(),
    )

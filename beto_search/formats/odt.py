"""OpenDocument text (.odt) through odfpy (Apache-2.0/GPL/LGPL, any of them): headings,
paragraphs, lists and tables in order; headings as section locations; title, author, date and
language from meta.xml."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any
from xml.parsers.expat import ExpatError

from ..types import Document
from .base import FormatSkip, TextBuilder, damaged, encrypted, file_metadata
from .docx import table_rows

TEXT_NS = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
TABLE_NS = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"


def _walk(node: Any, builder: TextBuilder) -> None:
    from odf import teletype

    for el in node.childNodes:
        qname = getattr(el, "qname", None)
        if not qname:
            continue
        ns, tag = qname
        if ns == TEXT_NS and tag == "h":
            level = el.getAttribute("outlinelevel") or "1"
            builder.heading(int(level) if str(level).isdigit() else 1, teletype.extractText(el))
        elif ns == TEXT_NS and tag == "p":
            builder.block(teletype.extractText(el))
        elif ns == TABLE_NS and tag == "table":
            rows = [
                [teletype.extractText(c) for c in row.childNodes if getattr(c, "qname", None)]
                for row in el.getElementsByType(_table_row())
            ]
            builder.block(table_rows(rows))
        elif ns == TEXT_NS and tag in ("list", "list-item", "section"):
            _walk(el, builder)
        elif ns == TEXT_NS and tag in ("sequence-decls", "tracked-changes"):
            continue
        else:
            _walk(el, builder)


def _table_row() -> Any:
    from odf.table import TableRow

    return TableRow


def _meta(doc: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for el in doc.meta.childNodes:
        qname = getattr(el, "qname", None)
        if qname:
            out.setdefault(qname[1], str(el).strip())
    return out


def read_odt(path: Path) -> Document:
    from odf.opendocument import load

    try:
        with zipfile.ZipFile(path) as z:
            manifest = (
                z.read("META-INF/manifest.xml") if "META-INF/manifest.xml" in z.namelist() else b""
            )
    except zipfile.BadZipFile as exc:
        raise damaged(f"not a readable ODT: {exc}") from None
    if b"encryption-data" in manifest:
        raise encrypted("password-protected OpenDocument file")
    try:
        doc = load(str(path))
    except (zipfile.BadZipFile, KeyError, ExpatError, ValueError) as exc:
        raise damaged(f"not a readable ODT: {exc}") from None
    builder = TextBuilder()
    _walk(doc.text, builder)
    text = builder.text()
    if not text.strip():
        raise FormatSkip("empty or whitespace-only (no text in the document)")
    meta = _meta(doc)
    title = (meta.get("title") or builder.first_heading or text.split("\n", 1)[0]).strip()
    return Document(
        id=path.name,
        text=text,
        title=title[:300],
        source=str(path),
        metadata=file_metadata(
            meta.get("creator") or meta.get("initial-creator"),
            meta.get("date") or meta.get("creation-date"),
            meta.get("language"),
        ),
        locations=builder.finished_locations(),
    )

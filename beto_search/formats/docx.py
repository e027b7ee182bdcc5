"""Word DOCX through python-docx (MIT): paragraphs and tables in body order, headings as section
locations, core properties (title, author, dates, language) as metadata."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

from ..types import Document
from .base import FormatSkip, TextBuilder, damaged, encrypted, file_metadata

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # a password-protected OOXML file is OLE, not zip
_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.I)


def table_rows(rows: list[list[str]]) -> str:
    """A table as one line per row, cells joined by `` | `` (merged cells counted once)."""
    lines = []
    for cells in rows:
        kept: list[str] = []
        for cell in cells:
            cell = " ".join(cell.split())
            if cell and (not kept or kept[-1] != cell):
                kept.append(cell)
        if kept:
            lines.append(" | ".join(kept))
    return "\n".join(lines)


def _style_names(d: Any) -> dict[str | None, str]:
    """Style id -> name. ``Paragraph.style`` looks styles up by scanning them all, for every
    paragraph (10x the cost of the rest of the reading): look each id up once here instead."""
    names: dict[str | None, str] = {None: ""}
    for style in d.styles:
        names[style.style_id] = style.name or ""
    return names


def _heading_level(style: str) -> int | None:
    m = _HEADING_STYLE.match(style)
    return int(m.group(1)) if m else None


def read_docx(path: Path) -> Document:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    with path.open("rb") as fh:
        if fh.read(8) == OLE_MAGIC:
            raise encrypted("password-protected Word file")
    try:
        d = docx.Document(str(path))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise damaged(f"not a readable DOCX: {exc}") from None
    builder = TextBuilder()
    title = ""
    names = _style_names(d)
    for item in d.iter_inner_content():
        if isinstance(item, Table):
            builder.block(table_rows([[c.text for c in row.cells] for row in item.rows]))
            continue
        style = names.get(item._p.style, "")  # the paragraph's style id (None: the default)
        level = _heading_level(style)
        if level is not None:
            builder.heading(level, item.text)
        else:
            if not title and style == "Title":
                title = item.text.strip()
            builder.block(item.text)
    text = builder.text()
    if not text.strip():
        raise FormatSkip("empty or whitespace-only (no text in the document)")
    props = d.core_properties
    title = (props.title or title or builder.first_heading or text.split("\n", 1)[0]).strip()
    return Document(
        id=path.name,
        text=text,
        title=title[:300],
        source=str(path),
        metadata=file_metadata(
            props.author or props.last_modified_by, props.created or props.modified, props.language
        ),
        locations=builder.finished_locations(),
    )

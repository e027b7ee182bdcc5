"""Readers of document formats (PDF, HTML/XHTML, DOCX, ODT, EPUB), one module each.

``FORMATS`` maps an extension to its reader: a function ``path -> Document`` whose ``locations``
say where each page or section starts. Modules and their libraries are imported only when a
file of theirs is read. A reader raises ``FormatSkip`` (an ``InputError``) with the reason a file
cannot be read: encrypted, no text layer, damaged, empty.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from ..types import Document


@dataclass(frozen=True)
class Format:
    """A file format: its reader (``module:function``) and the libraries it imports."""

    name: str
    reader: str
    requires: tuple[tuple[str, str], ...]  # (import name, pip package)


PDF = Format("PDF", "pdf:read_pdf", (("pypdfium2", "pypdfium2"),))
HTML = Format("HTML", "html:read_html", (("trafilatura", "trafilatura"), ("lxml", "lxml")))
DOCX = Format("DOCX", "docx:read_docx", (("docx", "python-docx"),))
ODT = Format("ODT", "odt:read_odt", (("odf", "odfpy"),))
EPUB = Format("EPUB", "epub:read_epub", (("trafilatura", "trafilatura"), ("lxml", "lxml")))

FORMATS: dict[str, Format] = {
    ".pdf": PDF,
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": HTML,
    ".docx": DOCX,
    ".odt": ODT,
    ".epub": EPUB,
}


def missing_library(fmt: Format) -> str | None:
    """The skip reason when a library the format needs is not installed, else None."""
    for module, package in fmt.requires:
        if importlib.util.find_spec(module) is None:
            return f"needs {package} to read {fmt.name} (pip install {package})"
    return None


def read_format(path: Path) -> Document:
    """The document in ``path`` read by its extension's reader (``InputError`` when it cannot)."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"unsupported extension {path.suffix or '(none)'}")
    reason = missing_library(fmt)
    if reason is not None:
        raise InputError(reason)
    module, func = fmt.reader.split(":")
    reader = getattr(importlib.import_module(f"{__name__}.{module}"), func)
    return reader(path)

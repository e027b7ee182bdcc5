"""EPUB (2 and 3): chapters in spine order, read with zipfile and the HTML extractor.

No EPUB library: ebooklib is AGPL, and an EPUB is a zip of XHTML chapters listed by an OPF file.
Each chapter's headings become section locations (the chapter's title when it has none).
"""

from __future__ import annotations

import posixpath
import zipfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from ..types import Document
from .base import FormatSkip, TextBuilder, damaged, encrypted, file_metadata
from .html import decode_html, extract_html

_NS = {
    "c": "urn:oasis:names:tc:opendocument:xmlns:container",
    "opf": "http://www.idpf.org/2007/opf",
    "dc": "http://purl.org/dc/elements/1.1/",
}


def _xml(z: zipfile.ZipFile, name: str) -> Any:
    try:
        return ElementTree.fromstring(z.read(name))
    except KeyError:
        raise damaged(f"{name} is missing") from None
    except ElementTree.ParseError as exc:
        raise damaged(f"{name}: {exc}") from None


def read_epub(path: Path) -> Document:
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise damaged(f"not a readable EPUB: {exc}") from None
    with z:
        names = set(z.namelist())
        if "META-INF/encryption.xml" in names and b"EncryptedData" in z.read(
            "META-INF/encryption.xml"
        ):
            raise encrypted("DRM-protected EPUB")
        rootfile = _xml(z, "META-INF/container.xml").find(".//c:rootfile", _NS)
        if rootfile is None or not rootfile.get("full-path"):
            raise damaged("no package file named in META-INF/container.xml")
        opf_name = str(rootfile.get("full-path"))
        opf = _xml(z, opf_name)
        base = posixpath.dirname(opf_name)
        items = {
            it.get("id"): posixpath.normpath(posixpath.join(base, it.get("href") or ""))
            for it in opf.iterfind("opf:manifest/opf:item", _NS)
        }
        builder = TextBuilder()
        for ref in opf.iterfind("opf:spine/opf:itemref", _NS):
            name = items.get(ref.get("idref"))
            if name is None or name not in names or ref.get("linear") == "no":
                continue  # linear="no": notes, covers, tables of contents read out of order
            chapter = TextBuilder()
            meta = extract_html(decode_html(z.read(name)), chapter)
            starts_with_heading = any(o == 0 and "section" in loc for o, loc in chapter.locations)
            if not starts_with_heading and meta.get("title"):
                builder.heading(1, str(meta["title"]))
            builder.extend(chapter)

        def dc(tag: str) -> str | None:
            el = opf.find(f"opf:metadata/dc:{tag}", _NS)
            return el.text.strip() if el is not None and el.text else None

    text = builder.text()
    if not text.strip():
        raise FormatSkip("empty or whitespace-only (no text in the book)")
    title = (dc("title") or builder.first_heading or text.split("\n", 1)[0]).strip()
    return Document(
        id=path.name,
        text=text,
        title=title[:300],
        source=str(path),
        metadata=file_metadata(dc("creator"), dc("date"), dc("language")),
        locations=builder.finished_locations(),
    )

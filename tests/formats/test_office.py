"""DOCX, ODT and EPUB: headings as sections, tables, properties as filterable metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from beto_search.formats import read_format
from beto_search.formats.base import FormatSkip


def _section_at(doc, needle: str) -> str:
    pos = doc.text.index(needle)
    return [loc["section"] for off, loc in doc.locations if off <= pos][-1]


def test_docx_headings_tables_properties(sample_dir: Path) -> None:
    doc = read_format(sample_dir / "memoria.docx")
    assert doc.title == "Memoria anual de la asociación"
    assert doc.metadata == {"autor": "José Peñalver", "fecha": "2023-06-01", "idioma": "es-es"}
    assert "Cuota de señoría | Ciento cincuenta" in doc.text
    assert _section_at(doc, "¿Quién paga la cuota?") == "Capítulo 1 › Artículo 2"
    assert _section_at(doc, "Cuota de señoría") == "Capítulo 1 › Artículo 2"
    assert _section_at(doc, "cigüeñal") == "Capítulo 2"


def test_odt_headings_tables_metadata(sample_dir: Path) -> None:
    doc = read_format(sample_dir / "acta.odt")
    assert doc.title == "Acta de la reunión vecinal"
    assert doc.metadata == {"autor": "Íñigo Muñoz", "fecha": "2022-11-20", "idioma": "es-es"}
    assert "Señalización del portal | Doscientos euros" in doc.text
    assert _section_at(doc, "¡Demasiado") == "Orden del día › Presupuesto"


def test_epub_chapters_in_order(sample_dir: Path) -> None:
    doc = read_format(sample_dir / "libro.epub")
    assert doc.title == "Historias del Cantábrico"
    assert doc.metadata == {"autor": "Nuria Cañete", "fecha": "2021-04-23", "idioma": "es"}
    assert doc.text.index("acantilado") < doc.text.index("¿Volverá el barco?")
    assert _section_at(doc, "¿Volverá el barco?") == "Capítulo dos"


@pytest.mark.parametrize("suffix", [".docx", ".odt", ".epub"])
def test_not_a_zip_is_damaged(tmp_path: Path, suffix: str) -> None:
    bad = tmp_path / f"roto{suffix}"
    bad.write_bytes(b"esto no es un archivo comprimido, se corto la descarga")
    with pytest.raises(FormatSkip, match=r"^damaged \("):
        read_format(bad)


def test_protected_word_file_is_encrypted(tmp_path: Path) -> None:
    ole = tmp_path / "protegido.docx"
    ole.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512)
    with pytest.raises(FormatSkip, match=r"^encrypted \(password-protected Word file"):
        read_format(ole)

"""HTML: main content only, metadata from meta tags, charset from the page or detected."""

from __future__ import annotations

from pathlib import Path

from beto_search.formats import read_format
from beto_search.formats.html import decode_html


def test_news_page_main_content_only(sample_dir: Path) -> None:
    doc = read_format(sample_dir / "noticia.html")
    assert "captura récord de atún rojo" in doc.text
    assert "¿Cuánto durará la bonanza? ¡Nadie lo sabe!" in doc.text
    for noise in ("Portada", "Deportes", "galletas", "derechos reservados", "rastreo", "color"):
        assert noise not in doc.text, noise


def test_news_page_metadata_and_sections(sample_dir: Path) -> None:
    doc = read_format(sample_dir / "noticia.html")
    assert doc.title == "Crónica del puerto"
    assert doc.metadata == {"autor": "Begoña Ibáñez", "fecha": "2024-03-05", "idioma": "es"}
    sections = {loc["section"]: off for off, loc in doc.locations}
    off = sections["Crónica del puerto › La campaña de pesca"]
    assert doc.text[off:].startswith("La campaña de pesca")


def test_latin1_page_without_charset_reads_right(sample_dir: Path) -> None:
    doc = read_format(sample_dir / "latin1.html")
    assert doc.title == "Año nuevo en Logroño"
    assert "La señora Peña celebró el año nuevo" in doc.text
    assert "¡Más años de salud" in doc.text and "\ufffd" not in doc.text


def test_declared_charset_wins_over_detection() -> None:
    page = '<html><head><meta charset="utf-8"></head><body><p>Ñandú</p></body></html>'
    assert "Ñandú" in decode_html(page.encode("utf-8"))
    declared = '<?xml version="1.0" encoding="iso-8859-1"?><p>canción</p>'
    assert "canción" in decode_html(declared.encode("latin-1"))
    assert "añil" in decode_html(b"\xef\xbb\xbf<p>a\xc3\xb1il</p>")


def test_xhtml_with_xml_declaration(tmp_path: Path) -> None:
    page = tmp_path / "cap.xhtml"
    page.write_text(
        '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml">'
        "<head><title>Señales</title></head><body><h1>Señales</h1>"
        "<p>El faro de Finisterre emitía señales cada noche de niebla.</p></body></html>",
        encoding="utf-8",
    )
    doc = read_format(page)
    assert doc.title == "Señales" and "faro de Finisterre" in doc.text

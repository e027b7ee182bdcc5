"""PDF: pages in order, hyphenation joined, running lines dropped, skips with their reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from beto_search.formats import read_format
from beto_search.formats.base import FormatSkip
from beto_search.formats.pdf import iter_pdf_pages, running_lines
from tests.formats import samples


def test_pages_in_order_with_locations(sample_dir: Path) -> None:
    doc = read_format(sample_dir / "informe.pdf")
    assert doc.title == "Informe de prueba"
    assert doc.metadata["autor"] == "María Núñez"
    pages = [loc["page"] for _, loc in doc.locations]
    assert pages == [1, 2, 3]
    # each page's text starts at its location
    starts = {loc["page"]: off for off, loc in doc.locations}
    assert doc.text[starts[2] :].startswith("¿Dónde está la información?")
    assert doc.text[starts[3] :].startswith("La niña leyó")
    assert doc.text.index("cigüeñal") < starts[3]


def test_hyphenated_word_is_joined(sample_dir: Path) -> None:
    doc = read_format(sample_dir / "informe.pdf")
    assert "más información consulte" in doc.text
    assert "infor-" not in doc.text and "\x02" not in doc.text


def test_running_header_and_page_numbers_dropped(sample_dir: Path) -> None:
    doc = read_format(sample_dir / "informe.pdf")
    assert samples.HEADER not in doc.text
    assert "Página" not in doc.text


def test_iter_pdf_pages_is_a_generator_of_pages(sample_dir: Path) -> None:
    pages = iter_pdf_pages(sample_dir / "informe.pdf")
    text, loc = next(pages)
    assert loc == {"page": 1} and text.startswith("Capítulo primero")
    assert [loc["page"] for _, loc in pages] == [2, 3]


def test_running_lines_need_three_pages() -> None:
    two = ["Cabecera\ntexto uno\n1", "Cabecera\ntexto dos\n2"]
    assert running_lines(two) == set()
    assert running_lines([*two, "Cabecera\ntexto tres\n3"]) == {"Cabecera", "#"}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("cifrado.pdf", "encrypted (password-protected PDF"),
        ("escaneado.pdf", "no text layer (a scanned or image-only PDF; OCR is out of scope)"),
        ("roto.pdf", "damaged ("),
    ],
)
def test_unreadable_pdfs_say_why(sample_dir: Path, name: str, reason: str) -> None:
    with pytest.raises(FormatSkip) as err:
        read_format(sample_dir / name)
    assert str(err.value).startswith(reason)


def test_long_pdf_is_streamed_and_hits_name_their_page(tmp_path: Path, hash_encoder) -> None:
    """A PDF over STREAM_PAGES pages is read a page at a time (``Document.parts``), stored as one
    whole document, and a hit on its last pages names the right page."""
    from beto_search import SearchEngine
    from beto_search.formats.pdf import STREAM_PAGES

    n = STREAM_PAGES + 5
    words = ["río", "montaña", "ciudad", "puerto", "mercado", "escuela", "puente", "campo"]
    pages = [
        [f"Capítulo {i}.", f"Hablamos del {words[i % 8]} y del {words[(i * 3) % 8]}.", "Fin."]
        for i in range(1, n + 1)
    ]
    pages[-2] = ["Capítulo.", "El cigüeñal del camión apareció en la penúltima página.", "Fin."]
    path = samples.write_pdf(tmp_path / "largo.pdf", pages)
    doc = read_format(path)
    assert doc.parts is not None and doc.text == ""
    with SearchEngine.open(tmp_path / "idx", encoder=hash_encoder) as engine:
        summary = engine.ingest([path])
        assert summary.added == 1 and not summary.skipped
        hits = engine.search("cigüeñal camión", k=1, mode="lexical")
        assert hits[0].doc_id == "largo.pdf"
        assert hits[0].to_dict()["page"] == n - 1
        stored = engine.get_document("largo.pdf")
        assert stored is not None and "penúltima página" in stored["text"]
        assert stored["text"].count("Hablamos del") == n - 1

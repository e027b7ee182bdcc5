"""Sample files of every format (generated once per session; Spanish text in all of them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.formats import samples


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("formatos")
    samples.write_pdf(folder / "informe.pdf")
    samples.write_encrypted_pdf(folder / "cifrado.pdf")
    samples.write_image_pdf(folder / "escaneado.pdf")
    samples.write_damaged_pdf(folder / "roto.pdf")
    samples.write_html(folder / "noticia.html")
    samples.write_latin1_html(folder / "latin1.html")
    samples.write_docx(folder / "memoria.docx")
    samples.write_odt(folder / "acta.odt")
    samples.write_epub(folder / "libro.epub")
    return folder

"""A mixed Spanish folder through the engine: every file searchable or skipped with its reason,
hits that name their page or section, file metadata filterable, old indexes still readable."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from beto_search import SearchEngine
from beto_search.readers import ReaderOptions

EXPECTED_SKIPS = {
    "cifrado.pdf": "encrypted",
    "escaneado.pdf": "no text layer",
    "roto.pdf": "damaged",
    ".git/": "hidden folder",
    ".DS_Store": "hidden file",
    "foto.jpg": "unsupported extension .jpg",
    "vacio.html": "empty or whitespace-only",
}


@pytest.fixture
def mixed(sample_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "carpeta"
    shutil.copytree(sample_dir, folder)
    (folder / "nota.md").write_text("# Nota\n\nLa señal del faro se apagó.", encoding="utf-8")
    (folder / ".git").mkdir()
    for i in range(50):
        (folder / ".git" / f"obj{i}").write_bytes(b"\x00\x01")
    (folder / ".DS_Store").write_bytes(b"\x00\x01\x02")
    (folder / "foto.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    (folder / "vacio.html").write_text("   \n", encoding="utf-8")
    return folder


def _reasons(summary) -> dict[str, str]:
    return {
        s.where.rsplit("/", 2)[-2] + "/" if s.where.endswith("/") else Path(s.where).name: s.reason
        for s in summary.skipped
    }


def test_mixed_folder_every_file_read_or_listed(mixed: Path, tmp_path: Path, hash_encoder) -> None:
    with SearchEngine.open(tmp_path / "idx", encoder=hash_encoder) as engine:
        summary = engine.ingest([mixed])
        reasons = _reasons(summary)
        assert set(reasons) == set(EXPECTED_SKIPS)
        for name, reason in EXPECTED_SKIPS.items():
            assert reasons[name].startswith(reason), (name, reasons[name])
        read = {"informe.pdf", "noticia.html", "latin1.html", "memoria.docx", "acta.odt"}
        read |= {"libro.epub", "nota.md"}
        assert summary.files == len(read) and summary.added == len(read)
        assert set(engine.store.document_ids()) == read


def test_pdf_hit_names_its_page(mixed: Path, tmp_path: Path, hash_encoder) -> None:
    with SearchEngine.open(tmp_path / "idx", encoder=hash_encoder) as engine:
        engine.ingest([mixed])
        hit = engine.search("cigüeñal del camión carretera Huesca", k=1, mode="lexical")[0]
        assert hit.doc_id == "informe.pdf" and hit.location == {"page": 2}
        assert hit.to_dict()["page"] == 2
        hit = engine.search("pingüinos sardinas", k=1, mode="lexical")[0]
        assert hit.to_dict()["page"] == 3
        hits = engine.search("campaña bonanza", k=1, mode="lexical", snippets=False)
        assert hits[0].doc_id == "noticia.html"
        assert hits[0].to_dict()["section"].startswith("Crónica del puerto")


def test_hit_location_spanning_pages(tmp_path: Path, hash_encoder) -> None:
    from beto_search.types import Document

    doc = Document("d", "uno dos\n\ntres cuatro", locations=[(0, {"page": 1}), (9, {"page": 2})])
    with SearchEngine.open(tmp_path / "idx", encoder=hash_encoder) as engine:
        engine.add([doc])
        hit = engine.search("dos tres", k=1, mode="lexical")[0]
        assert hit.to_dict()["pages"] == [1, 2] and "page" not in hit.to_dict()


def test_file_metadata_is_filterable(mixed: Path, tmp_path: Path, hash_encoder) -> None:
    with SearchEngine.open(tmp_path / "idx", encoder=hash_encoder) as engine:
        engine.ingest([mixed])
        hits = engine.search("asociación cuota", k=5, where={"autor": "José Peñalver"})
        assert [h.doc_id for h in hits] == ["memoria.docx"]
        hits = engine.search("vecinos", k=5, where={"idioma": "es-es", "fecha": "2022-11-20"})
        assert [h.doc_id for h in hits] == ["acta.odt"]


def test_include_exclude_and_max_file_size(mixed: Path, tmp_path: Path, hash_encoder) -> None:
    with SearchEngine.open(tmp_path / "idx", encoder=hash_encoder) as engine:
        opts = ReaderOptions(include=("*.pdf", "*.html"), exclude=("roto.*",))
        summary = engine.ingest([mixed], opts)
        assert set(engine.store.document_ids()) == {"informe.pdf", "noticia.html", "latin1.html"}
        assert "roto.pdf" not in _reasons(summary) and summary.excluded >= 6
    with SearchEngine.open(tmp_path / "idx2", encoder=hash_encoder) as engine:
        summary = engine.ingest([mixed], ReaderOptions(max_file_size=3000))
        assert _reasons(summary)["memoria.docx"].startswith("too large (")
        assert "memoria.docx" not in engine.store.document_ids()


def test_locations_survive_reingest_and_old_index_gains_column(
    mixed: Path, tmp_path: Path, hash_encoder
) -> None:
    idx = tmp_path / "idx"
    with SearchEngine.open(idx, encoder=hash_encoder) as engine:
        engine.ingest([mixed / "informe.pdf"])
    # an index written before documents had locations: drop the column
    db = sqlite3.connect(idx / "index.db")
    db.execute("ALTER TABLE documents DROP COLUMN locations")
    db.execute("UPDATE documents SET content_hash = 'hash de antes'")
    db.commit()
    db.close()
    with SearchEngine.open(idx, encoder=hash_encoder, create=False) as engine:
        hit = engine.search("pingüinos", k=1, mode="lexical")[0]  # readable, no location yet
        assert hit.doc_id == "informe.pdf" and hit.location == {}
    with SearchEngine.open(idx, encoder=hash_encoder) as engine:
        summary = engine.ingest([mixed / "informe.pdf"])
        assert summary.updated == 1
        assert engine.search("pingüinos", k=1, mode="lexical")[0].location == {"page": 3}
        assert engine.ingest([mixed / "informe.pdf"]).unchanged == 1

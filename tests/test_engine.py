"""The library end to end on corpora/es with the tiny BETO-shaped model (never mocked)."""

from __future__ import annotations

import itertools
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import sqlite_utils

from beto_search import SearchEngine
from beto_search.errors import IndexNotFoundError, InputError, ManifestMismatchError
from tests.paths import CORPUS


def test_corpus_is_ingested(corpus_index: Path) -> None:
    with SearchEngine.open(corpus_index, create=False) as engine:
        info = engine.info()
        assert info["documents"] >= 40
        assert info["chunks"] > info["documents"]  # long documents need several chunks
        assert info["index_type"] == "flat" and info["dimension"] == 32
        assert any(name.endswith(".faiss") for name in info["files"])
        assert engine.verify() == []
        m = engine.manifest.to_dict()
        for key in (
            "encoder",
            "revision",
            "pooling",
            "dimension",
            "normalized",
            "max_length",
            "package_version",
            "index",
            "precision",
            "format_version",
        ):
            assert key in m
        # chunks keep spans that slice the document text
        doc = engine.get_document("literatura/cien-anos-de-soledad.txt")
        ids = [c["chunk_id"] for c in doc["chunks"]]
        assert len(ids) > 1
        rows = [c for batch in engine.iter_chunks() for c in batch if c.chunk_id in ids]
        assert len(rows) == len(ids)
        for row in rows:
            assert doc["text"][row.start : row.end] == row.text


@pytest.mark.parametrize("mode", ["semantic", "hybrid", "lexical"])
def test_a_document_text_finds_itself_first(corpus_index: Path, mode: str) -> None:
    with SearchEngine.open(corpus_index, create=False) as engine:
        doc = engine.get_document("faq-01")
        hits = engine.search(doc["text"], k=5, mode=mode)
        assert hits[0].doc_id == "faq-01"
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        assert hits[0].title == doc["title"] and hits[0].metadata["categoria"]
        if mode == "semantic":
            assert hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_results_are_documents_not_chunks(corpus_index: Path) -> None:
    with SearchEngine.open(corpus_index, create=False) as engine:
        hits = engine.search("historia de México y su independencia", k=20, mode="semantic")
        assert len(hits) == 20
        assert len({h.doc_id for h in hits}) == 20
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


def test_reingest_encodes_nothing(index_copy: Path, tiny_encoder) -> None:
    calls = []
    original = tiny_encoder.encode_token_ids

    def counting(ids):
        calls.append(len(ids))
        return original(ids)

    tiny_encoder.encode_token_ids = counting
    try:
        with SearchEngine.open(index_copy, encoder=tiny_encoder) as engine:
            before = engine.info()
            summary = engine.ingest([CORPUS])
            assert summary.added == summary.updated == 0
            assert summary.unchanged == before["documents"] and summary.chunks == 0
            assert engine.info()["chunks"] == before["chunks"]
    finally:
        del tiny_encoder.encode_token_ids
    assert calls == []


def test_changed_and_deleted_files_with_prune(tmp_path: Path, tiny_encoder) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    with SearchEngine.open(tmp_path / "idx", encoder=tiny_encoder) as engine:
        first = engine.ingest([corpus])
        changed = corpus / "literatura" / "cien-anos-de-soledad.txt"
        changed.write_text("Cien años de soledad\n\nUn texto nuevo y corto sobre Macondo.", "utf-8")
        (corpus / "historia" / "independencia-mexico.txt").unlink()
        kept = engine.ingest([corpus])
        assert kept.updated == 1 and kept.pruned == 0
        assert engine.get_document("historia/independencia-mexico.txt") is not None
        pruned = engine.ingest([corpus], prune=True)
        assert pruned.pruned == 1 and pruned.unchanged == first.added - 1
        assert engine.get_document("historia/independencia-mexico.txt") is None
        doc = engine.get_document("literatura/cien-anos-de-soledad.txt")
        assert "Macondo" in doc["text"]
        assert len(doc["chunks"]) == 1
        assert engine.verify() == []


def test_library_api_add_search_delete(tmp_path: Path, tiny_model: Path) -> None:
    engine = SearchEngine.open(tmp_path / "lib", model=str(tiny_model), pooling="max")
    summary = engine.add(
        [
            {
                "id": "a1",
                "title": "Macondo",
                "text": "Macondo es un pueblo imaginario.",
                "metadata": {"autor": "García Márquez"},
            },
            {"id": "a2", "title": "Madrid", "text": "Madrid es la capital de España."},
        ]
    )
    assert summary.added == 2
    assert engine.manifest.pooling == "max"
    hits = engine.search("capital de España", k=10, mode="lexical")
    assert [h.doc_id for h in hits] == ["a2"]
    engine.add([{"id": "a2", "text": "Madrid tiene el museo del Prado."}])  # upsert
    assert engine.search("Prado", mode="lexical")[0].doc_id == "a2"
    assert engine.search("capital", mode="lexical") == []
    assert engine.delete(["a1", "zz"]) == ["a1"]
    assert engine.info()["documents"] == 1
    assert engine.verify() == []
    engine.close()


def test_custom_encoder_object(tmp_path: Path, hash_encoder) -> None:
    with SearchEngine.open(tmp_path / "custom", encoder=hash_encoder) as engine:
        engine.ingest([CORPUS])
        m = engine.manifest
        assert m["encoder"] == "test-hash-encoder" and m["dimension"] == 64
        assert m["tokenizer"] == "words"
        hits = engine.search("Cien años de soledad García Márquez Macondo", k=3, mode="semantic")
        assert hits[0].doc_id == "literatura/cien-anos-de-soledad.txt"
    with pytest.raises(ManifestMismatchError):
        SearchEngine.open(tmp_path / "custom", model="otro-modelo")


def test_nfc_and_nfd_queries_match(corpus_index: Path) -> None:
    with SearchEngine.open(corpus_index, create=False) as engine:
        nfc = engine.search("canción", k=5, mode="hybrid")
        nfd = engine.search(unicodedata.normalize("NFD", "canción"), k=5, mode="hybrid")
        assert [h.doc_id for h in nfc] == [h.doc_id for h in nfd]
        assert nfc


@pytest.mark.parametrize(
    "kwargs,err",
    [
        ({"query": ""}, InputError),
        ({"query": "   "}, InputError),
        ({"query": "x", "k": 0}, InputError),
        ({"query": "x", "mode": "fuzzy"}, InputError),
        ({"query": "x", "alpha": 2.0}, InputError),
    ],
)
def test_bad_queries(corpus_index: Path, kwargs: dict, err: type) -> None:
    with SearchEngine.open(corpus_index, create=False) as engine, pytest.raises(err):
        engine.search(**kwargs)


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError):
        SearchEngine.open(tmp_path / "none", create=False)


def test_empty_new_index_returns_nothing(tmp_path: Path, hash_encoder) -> None:
    with SearchEngine.open(tmp_path / "empty", encoder=hash_encoder) as engine:
        assert engine.search("nada") == []
        assert engine.verify() == []


def test_stored_embeddings_are_the_encoder_output(corpus_index: Path, tiny_encoder) -> None:
    with SearchEngine.open(corpus_index, create=False) as engine:
        ids = [c["chunk_id"] for c in engine.get_document("faq-02")["chunks"]]
        texts = {c.chunk_id: c.text for batch in engine.iter_chunks() for c in batch}
    # index.db is a plain SQLite file: read the stored vectors with sqlite-utils
    db = sqlite_utils.Database(corpus_index / "index.db")
    blobs = {
        r["chunk_id"]: r["vector"]
        for r in db["embeddings"].rows_where(f"chunk_id IN ({','.join('?' * len(ids))})", ids)
    }
    db.close()
    stored = np.stack([np.frombuffer(blobs[i], dtype=np.float32) for i in ids])
    fresh = tiny_encoder.encode_documents([texts[i] for i in ids])
    np.testing.assert_allclose(stored, fresh, atol=1e-5)


def test_duplicate_id_across_batches_counts_once(tmp_path: Path, hash_encoder) -> None:
    docs = [{"id": f"d{i}", "text": f"documento {i}"} for i in range(300)]
    docs.append({"id": "d0", "text": "la última versión gana"})
    with SearchEngine.open(tmp_path / "dup", encoder=hash_encoder) as engine:
        s = engine.add(docs)
        assert (s.added, s.updated, s.duplicates) == (300, 0, 1)
        assert engine.get_document("d0")["text"] == "la última versión gana"


def test_query_of_only_nul_characters_is_empty(corpus_index: Path) -> None:
    with (
        SearchEngine.open(corpus_index, create=False) as engine,
        pytest.raises(InputError, match="empty"),
    ):
        engine.search("\x00\x00")


def test_prune_keeps_documents_of_files_that_could_not_be_read(
    tmp_path: Path, hash_encoder
) -> None:
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Primer documento sobre ríos.", "utf-8")
    (corpus / "b.jsonl").write_text(
        '{"id": "j1", "text": "uno"}\n{"id": "j2", "text": "dos"}\n', "utf-8"
    )
    with SearchEngine.open(tmp_path / "idx", encoder=hash_encoder) as engine:
        assert engine.ingest([corpus]).added == 3
        (corpus / "a.txt").write_bytes(b"\x00\x01\x02\x03" * 100)  # now binary: skipped, not gone
        (corpus / "b.jsonl").write_text(
            '{"id": "j1", "text": "uno"}\n{"id": "j2", "text": \n', "utf-8"
        )
        s = engine.ingest([corpus], prune=True)
        assert s.pruned == 0 and len(s.skipped) == 2
        assert engine.info()["documents"] == 3
        (corpus / "b.jsonl").write_text('{"id": "j1", "text": "uno"}\n', "utf-8")  # j2 removed
        (corpus / "a.txt").unlink()
        s = engine.ingest([corpus], prune=True)
        assert s.pruned == 2 and engine.get_document("j1") is not None

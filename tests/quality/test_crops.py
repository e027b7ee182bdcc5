"""Pseudo-queries for one-sentence documents without a title group (issue 20): word crops."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from beto_search import SearchEngine
from beto_search.fusion import DEFAULT_CONFIG
from beto_search.quality.pseudoqueries import MIN_WORDS, cloze_crop, crop_queries, sentence_spans
from beto_search.quality.tuning import MIN_QUERIES, cloze_candidates, cloze_set, tune
from tests.paths import CORPUS
from tests.quality.test_tuning import BagEncoder, NoiseEncoder


def _untitled_sentences() -> list[dict[str, str]]:
    """corpora/es split into sentences, every sentence a document with NO title (no groups)."""
    out = []
    for path in sorted(CORPUS.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        for n, (a, b) in enumerate(sentence_spans(text)):
            piece = " ".join(text[a:b].split())
            if len(piece.split()) >= 4:
                out.append({"id": f"{path.stem}#{n}", "title": "", "text": piece})
    return out


def test_a_crop_splits_the_words_into_a_query_and_the_rest() -> None:
    text = "el imperio inca fue el mayor estado de américa del sur antes de 1532"
    words = text.split(" ")
    for seed in range(20):
        pair = cloze_crop(text, random.Random(seed))
        assert pair is not None
        query, rest = pair[0].split(), pair[1].split()
        assert len(query) >= MIN_WORDS and len(rest) >= MIN_WORDS
        assert len(query) + len(rest) == len(words)
        # the query is one contiguous span; the rest is what lies around it, in order
        start = next(i for i in range(len(words)) if words[i : i + len(query)] == query)
        assert words[:start] + words[start + len(query) :] == rest
    assert cloze_crop("demasiado corto para cortar", random.Random(0)) is None


def test_crop_queries_take_one_crop_per_document_and_skip_short_ones() -> None:
    chunks = [
        SimpleNamespace(chunk_id=i, doc_id=f"d{i // 2}", text=t)
        for i, t in enumerate(
            [
                "La paella valenciana lleva arroz, azafrán, pollo, conejo y judías verdes.",
                "Se cocina en una sartén ancha y poco profunda sobre fuego de leña.",
                "Muy corto aquí.",
                "Tampoco da.",
                "El Imperio inca fue el mayor estado de América del Sur precolombina.",
            ]
        )
    ]
    got = crop_queries(chunks, 0, seed=3)
    assert sorted(p.doc_id for p in got) == ["d0", "d2"]  # d1 too short, d0 once
    assert got == crop_queries(chunks, 0, seed=3)  # seeded
    assert len(crop_queries(chunks, 1, seed=3)) == 1


def test_untitled_one_sentence_documents_get_crop_pseudo_queries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sentence-level index without titles had no pseudo-queries (the tune kept the default);
    now a crop of each sentence asks for it, the sentence scored on its other words."""
    monkeypatch.setenv("BETO_SEARCH_AUTOTUNE", "0")
    with SearchEngine.open(tmp_path / "idx", encoder=BagEncoder()) as engine:
        engine.add(_untitled_sentences())
        assert engine.counts()["chunks"] == engine.counts()["documents"]  # one chunk each
        pset = cloze_set(engine, 60)
        assert len(pset.queries) == 60 and set(pset.rest) == set(pset.queries)
        assert pset.kinds["short document, a crop of its words"] == 60
        dense, _, _ = cloze_candidates(engine, pset)
        cid, doc_id, text, remainder = pset.rest["pq0"]
        assert pset.queries["pq0"] not in remainder and pset.queries["pq0"] in text
        whole = engine.search(pset.queries["pq0"], k=1, mode="semantic")[0]
        assert whole.doc_id == doc_id
        # scored on the remainder: lower than the whole sentence (or out of the candidates)
        assert dense["pq0"].get(cid, float("-inf")) < whole.dense_score
        result = tune(engine, store=False)
    assert result.queries >= MIN_QUERIES, result.reason
    assert "crop" in result.tuned_on


def test_a_weak_dense_side_on_untitled_sentences_moves_the_weight_to_lexical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BETO_SEARCH_AUTOTUNE", "0")
    with SearchEngine.open(tmp_path / "idx", encoder=NoiseEncoder()) as engine:
        engine.add(_untitled_sentences())
        result = tune(engine, store=False)
    assert result.queries >= MIN_QUERIES, result.reason
    assert result.config.alpha < DEFAULT_CONFIG.alpha, result.reason
    assert "weaker" in result.reason

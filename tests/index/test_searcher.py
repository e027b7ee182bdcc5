"""``Searcher`` on an ``IndexContext`` with the fake encoder (no engine): candidates per mode,
filters, exact dense scores, and one Searcher seeing later writes."""

from __future__ import annotations

import numpy as np
import pytest

from beto_search.encoder import normalize_rows
from beto_search.errors import InputError
from beto_search.index.candidates import MODES
from beto_search.index.context import IndexContext
from beto_search.index.indexer import Indexer
from beto_search.index.searcher import Searcher
from tests.encoders import HashEncoder
from tests.index.conftest import records


@pytest.fixture
def filled(index_ctx: IndexContext) -> IndexContext:
    Indexer(index_ctx).add(records(40), False, None)
    return index_ctx


def _qvec(text: str) -> np.ndarray:
    return normalize_rows(HashEncoder().encode_queries([text]))


def test_search_candidates_per_mode(filled: IndexContext) -> None:
    searcher = Searcher(filled)
    query = "río montaña"
    total = filled.store.chunk_count()
    got = {
        mode: searcher.search_candidates(query, 10, mode, query_vector=_qvec(query))
        for mode in MODES
    }
    assert got["semantic"].dense and not got["semantic"].lexical
    assert got["lexical"].lexical and not got["lexical"].dense
    assert got["hybrid"].dense == got["semantic"].dense
    assert got["hybrid"].lexical == got["lexical"].lexical
    for cands in got.values():
        assert cands.reach == total
        assert set(cands.rows) == cands.dense.keys() | cands.lexical.keys()
        assert len(cands.dense) <= 10 and len(cands.lexical) <= 10
    # the dense side is the cosine ranking: the 10 best scores of the stored vectors
    ids, vecs = filled.store.embeddings(filled.store.chunk_ids().tolist(), 64)
    cosines = dict(zip(ids.tolist(), (vecs @ _qvec(query)[0]).tolist()))
    best = sorted(cosines.values(), reverse=True)[:10]
    dense = got["semantic"].dense
    assert sorted(dense.values(), reverse=True) == pytest.approx(best, abs=1e-5)
    assert all(dense[i] == pytest.approx(cosines[i], abs=1e-5) for i in dense)
    with pytest.raises(InputError, match="query vector"):
        searcher.search_candidates(query, 10, "semantic")


def test_search_candidates_with_filters(filled: IndexContext) -> None:
    searcher = Searcher(filled)
    query = "río montaña ciudad"
    cands = searcher.search_candidates(
        query, 50, "hybrid", where={"par": "true"}, query_vector=_qvec(query)
    )
    assert cands.rows and cands.reach == 20
    assert {r.metadata["par"] for r in cands.rows.values()} == {"true"}
    none = searcher.search_candidates(
        query, 50, "hybrid", where={"par": "quizá"}, query_vector=_qvec(query)
    )
    assert (none.dense, none.lexical, none.reach) == ({}, {}, 0)
    hits = searcher.search(query, k=5, where={"par": "false"})
    assert hits and all(h.metadata["par"] == "false" for h in hits)


def test_dense_scores_are_exact_cosines(filled: IndexContext) -> None:
    chunks = [c for batch in filled.store.iter_chunks() for c in batch][:5]
    qvec = _qvec("historia de la ciencia")
    scores = Searcher(filled).dense_scores([c.chunk_id for c in chunks], qvec)
    expected = HashEncoder().encode_documents([c.text for c in chunks]) @ qvec[0]
    assert [scores[c.chunk_id] for c in chunks] == pytest.approx(expected.tolist(), abs=1e-5)


def test_search_modes_and_a_later_write_is_seen(filled: IndexContext) -> None:
    searcher = Searcher(filled)  # built once, as the engine does
    for mode in MODES:
        hits = searcher.search("río", k=3, mode=mode)
        assert len(hits) == 3 and [h.rank for h in hits] == [1, 2, 3]
    assert not searcher.search("zanahoria", k=3, mode="lexical")
    Indexer(filled).add([{"id": "nuevo", "text": "La zanahoria crece en la huerta."}], False, None)
    hits = searcher.search("zanahoria", k=3, mode="lexical")
    assert [h.doc_id for h in hits] == ["nuevo"]
    cands = searcher.search_candidates("zanahoria", 5, "lexical")
    assert {r.doc_id for r in cands.rows.values()} == {"nuevo"}
    assert searcher.similar("nuevo", k=2) and searcher.document_vector("nuevo") is not None

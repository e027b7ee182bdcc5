"""``quality.scoring``: the one scorer (evaluation, tuning and the training self-checks) and the
one per-document aggregation they rank by."""

from __future__ import annotations

import numpy as np
import pytest

from beto_search.quality.evaluation import EvalSet, Query
from beto_search.quality.scoring import best_per_document, score_many, score_run

QRELS = {"q1": {"a": 2, "b": 1}, "q2": {"c": 1}, "q3": {"d": 1}}
EVAL_SET = EvalSet({q: Query(q, q) for q in QRELS}, QRELS)


def test_score_many_gives_each_run_the_per_query_ndcg_score_run_gives() -> None:
    runs = [
        {"q1": ["b", "a", "x"], "q2": ["c"], "q3": []},
        {"q1": ["a", "b"], "q2": ["x", "y", "c"]},  # q3 absent: scores 0
        {},
    ]
    many = score_many(QRELS, runs)
    for run, got in zip(runs, many, strict=True):
        _, per_query = score_run(EVAL_SET, {q: [(d, 1.0) for d in docs] for q, docs in run.items()})
        assert got == pytest.approx({q: v["ndcg@10"] for q, v in per_query.items()})
    assert many[1]["q1"] == pytest.approx(1.0) and many[1]["q3"] == 0.0
    assert many[2] == {"q1": 0.0, "q2": 0.0, "q3": 0.0}


def test_ranks_not_scores_decide_the_order() -> None:
    """A run's scores are ignored: its order is the engine's (ties included)."""
    same = {"q1": [("b", 1.0), ("a", 1.0)]}
    reversed_scores = {"q1": [("b", 0.1), ("a", 0.9)]}
    assert score_run(EVAL_SET, same)[1]["q1"] == score_run(EVAL_SET, reversed_scores)[1]["q1"]
    assert score_run(EVAL_SET, same)[1]["q1"]["ndcg@10"] < 1.0


def test_best_per_document_is_the_best_chunk_ties_to_the_lower_id() -> None:
    scores = np.array([0.5, 0.9, 0.9, 0.7, -np.inf, 0.1])
    docs = ["a", "b", "c", "a", "d", "b"]
    ids = np.array([10, 30, 20, 5, 1, 2])
    got = best_per_document(scores, docs, k=10, ids=ids)
    # c (id 20) before b (id 30) at 0.9; a's best chunk is index 3 (0.7); d is no candidate
    assert got == [("c", 2), ("b", 1), ("a", 3)]
    assert best_per_document(scores, docs, k=2, ids=ids) == [("c", 2), ("b", 1)]
    # without ids, the position breaks ties; ``key`` maps documents before aggregating
    assert best_per_document(scores, docs, k=10)[:2] == [("b", 1), ("c", 2)]
    assert best_per_document(scores, docs, key=lambda d: "bc" if d in "bc" else d) == [
        ("bc", 1),
        ("a", 3),
    ]

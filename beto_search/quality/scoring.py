"""The one scorer: metrics of ranked runs against graded judgements, by ``ir_measures``.

Evaluation (``score_run``), tuning (``score_many``: every fusion config in one call) and the
training self-check (``score_run``) all score here, and rank documents the one way searches do
(``best_per_document``: a document is its best chunk). Ranks, not scores, decide a run's order:
the evaluator must not re-sort the engine's ties.

Relevance grades are kept: nDCG uses the grade as a linear gain (trec_eval's definition); recall,
reciprocal rank and average precision count every grade >= 1 as relevant. A judged query with no
results scores 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import ir_measures
import numpy as np
from ir_measures import AP, RR, R, nDCG

# JSON key -> (ir_measures measure, name shown in tables)
MEASURES: dict[str, tuple[Any, str]] = {
    "ndcg@10": (nDCG @ 10, "nDCG@10"),
    "mrr@10": (RR @ 10, "MRR@10"),
    "recall@1": (R @ 1, "R@1"),
    "recall@10": (R @ 10, "R@10"),
    "recall@100": (R @ 100, "R@100"),
    "map@100": (AP @ 100, "MAP@100"),
}
NDCG10 = nDCG @ 10

Qrels = Mapping[str, Mapping[str, int]]  # {query id: {doc id: grade}}


class Judged(Protocol):
    """Queries and their graded judgements (``evaluation.EvalSet``)."""

    @property
    def queries(self) -> Mapping[str, object]: ...

    @property
    def qrels(self) -> Qrels: ...


def _qrels(qrels: Qrels, tag: str = "") -> Iterator[Any]:
    return (
        ir_measures.Qrel(tag + q, d, g) for q, judged in qrels.items() for d, g in judged.items()
    )


def _ranked(qid: str, docs: Sequence[str]) -> Iterator[Any]:
    """A query's documents, best first, scored by rank (n, n-1, ...) so the order is kept."""
    return (ir_measures.ScoredDoc(qid, d, float(len(docs) - i)) for i, d in enumerate(docs))


def score_run(
    eval_set: Judged, run: Mapping[str, Sequence[tuple[str, float]]]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean and per-query metrics (``MEASURES``) of a ranked run {qid: [(doc id, score), ...] best
    first}; every query of ``eval_set`` has a per-query row (0 without results)."""
    qrels = list(_qrels(eval_set.qrels))
    scored = [s for q, docs in run.items() for s in _ranked(q, [d for d, _ in docs])]
    measures = [m for m, _ in MEASURES.values()]
    by_measure = {m: key for key, (m, _) in MEASURES.items()}
    evaluator = ir_measures.evaluator(measures, qrels)
    means = evaluator.calc_aggregate(scored)
    per_query: dict[str, dict[str, float]] = {
        q: {key: 0.0 for key in MEASURES} for q in eval_set.queries
    }
    for metric in evaluator.iter_calc(scored):
        if metric.query_id in per_query:
            per_query[metric.query_id][by_measure[metric.measure]] = float(metric.value)
    return {key: float(means.get(m, 0.0)) for key, (m, _) in MEASURES.items()}, per_query


def score_many(
    qrels: Qrels, runs: Sequence[Mapping[str, Sequence[str]]], measure: Any = NDCG10
) -> list[dict[str, float]]:
    """Per-query ``measure`` of each run ({qid: [doc ids, best first]}) with ONE ir_measures call
    (query ids tagged by run): what tuning compares its fusion configs by. Every judged query
    has a value in each run (0 without results)."""
    judged = [j for v in range(len(runs)) for j in _qrels(qrels, f"{v}|")]
    scored = [
        s
        for v, run in enumerate(runs)
        for q, docs in run.items()
        for s in _ranked(f"{v}|{q}", docs)
    ]
    out: list[dict[str, float]] = [{q: 0.0 for q in qrels} for _ in runs]
    for m in ir_measures.evaluator([measure], judged).iter_calc(scored):
        tag, _, qid = m.query_id.partition("|")
        out[int(tag)][qid] = float(m.value)
    return out


def best_per_document(
    scores: np.ndarray,
    docs: Sequence[str],
    k: int = 10,
    ids: np.ndarray | None = None,
    key: Callable[[str], str] | None = None,
) -> list[tuple[str, int]]:
    """The ``k`` best documents of scored chunks, each as its best chunk (``Searcher``'s
    aggregation): (document, index of that chunk in ``scores``), best first; equal scores go to
    the lower id (``ids``, default the position). ``-inf`` scores are not candidates. ``key``
    maps a chunk's document id first (e.g. a sentence id to its source document)."""
    order = np.lexsort((np.arange(len(scores)) if ids is None else ids, -scores))
    out: dict[str, int] = {}
    for n in order:
        if scores[n] == -np.inf:
            break
        doc = key(docs[n]) if key is not None else docs[n]
        if doc not in out:
            out[doc] = int(n)
            if len(out) == k:
                break
    return list(out.items())

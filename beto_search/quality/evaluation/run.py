"""Running an evaluation: every query searched in each mode (document-level hits), the runs
scored by ``scoring.score_run`` (``ir_measures``) over all evaluated queries (a query with no
results scores 0). The run handed to the scorer keeps the engine's ranking exactly (ties in the
engine's scores cannot be re-ordered by the evaluator).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InputError
from ...fusion import resolve
from ...index.candidates import MODES
from ..scoring import score_run
from .formats import EvalSet
from .report import EvalReport, write_per_query, write_runs

if TYPE_CHECKING:
    from ...protocols import EngineLike


def missing_documents(engine: EngineLike, eval_set: EvalSet) -> list[dict[str, Any]]:
    """Evaluated queries whose relevant documents are not in the index, with those documents."""
    wanted = sorted({d for judged in eval_set.qrels.values() for d, g in judged.items() if g > 0})
    with engine.store.snapshot():
        present = set(engine.store.hashes(wanted))
    out = []
    for qid in eval_set.queries:
        gone = [d for d, g in eval_set.qrels[qid].items() if g > 0 and d not in present]
        if gone:
            out.append({"query": qid, "documents": gone})
    return out


def modes_for(mode: str) -> list[str]:
    if mode == "all":
        return list(MODES)
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)} or all, not '{mode}'.")
    return [mode]


def evaluate(
    engine: EngineLike,
    eval_set: EvalSet,
    mode: str = "hybrid",
    k: int = 100,
    fusion: str | None = None,
    alpha: float | None = None,
    rerank: str | None = None,
    rerank_depth: int = 30,
    rerank_precision: str | None = None,
) -> EvalReport:
    """Search every query in each mode (document-level hits) and score the runs; ``rerank``:
    a cross-encoder rescoring each query's top ``rerank_depth`` documents (see ``search``)."""
    modes = modes_for(mode)
    if not isinstance(k, int) or k < 1:
        raise InputError("the number of results (k) must be a whole number of at least 1.")
    shallow = f"k is {k}: recall@100 and map@100 only see the top {k} results"
    if k < 100 and shallow not in eval_set.warnings:
        eval_set.warnings.append(shallow)
    missing = missing_documents(engine, eval_set)
    # None: the index's default (its tuned fusion, else the library's); reported as resolved
    used = resolve(getattr(engine, "manifest", None), fusion, alpha)
    means: dict[str, dict[str, float]] = {}
    per_query: dict[str, dict[str, dict[str, float]]] = {}
    runs: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for m in modes:
        run = {}
        for qid, q in eval_set.queries.items():
            options: dict[str, Any] = (
                {
                    "rerank": rerank,
                    "rerank_depth": rerank_depth,
                    "rerank_precision": rerank_precision,
                }
                if rerank
                else {}
            )
            hits = engine.search(
                q.text, k=k, mode=m, fusion=fusion, alpha=alpha, snippets=False, **options
            )
            # reranked: the order is the cross-encoder's over the top and the fusion's below it,
            # so the run's score column is the rank's (n, n-1, ...), which run readers sort by
            run[qid] = [
                (h.doc_id, float(len(hits) - i) if rerank else float(h.score))
                for i, h in enumerate(hits)
            ]
        runs[m] = run
        means[m], per_query[m] = score_run(eval_set, run)
    report = EvalReport(means, per_query, runs, eval_set, missing, k, used.method, used.alpha)
    if rerank:
        report.rerank, report.rerank_depth = rerank, rerank_depth
    return report


def run_evaluation(
    engine: EngineLike,
    eval_set: EvalSet,
    mode: str = "hybrid",
    k: int = 100,
    fusion: str | None = None,
    alpha: float | None = None,
    per_query: Path | None = None,
    run: Path | None = None,
    rerank: str | None = None,
    rerank_depth: int = 30,
    rerank_precision: str | None = None,
) -> EvalReport:
    """``evaluate`` plus the optional per-query and TREC run files (their paths in ``files``)."""
    report = evaluate(
        engine, eval_set, mode, k, fusion, alpha, rerank, rerank_depth, rerank_precision
    )
    if run is not None:
        report.files += [str(p) for p in write_runs(report, run)]
    if per_query is not None:
        report.files.append(str(write_per_query(report, per_query)))
    return report

"""Retrieval evaluation: BEIR/TREC queries and qrels (``formats``), runs per search mode
(``run``), metrics by the one scorer (``..scoring``, ir_measures), the report and its files
(``report``).

Relevance grades are kept: nDCG uses the grade as a linear gain (trec_eval's definition); recall,
reciprocal rank and average precision count every grade >= 1 as relevant.
"""

from ..scoring import MEASURES, score_run
from .formats import BEIR_QRELS_HEADER, EvalSet, Query, load_eval_set, read_qrels, read_queries
from .report import (
    MAX_WARNINGS_SHOWN,
    EvalReport,
    per_query_rows,
    write_per_query,
    write_runs,
)
from .run import evaluate, missing_documents, modes_for, run_evaluation

__all__ = [
    "BEIR_QRELS_HEADER",
    "MAX_WARNINGS_SHOWN",
    "MEASURES",
    "EvalReport",
    "EvalSet",
    "Query",
    "evaluate",
    "load_eval_set",
    "missing_documents",
    "modes_for",
    "per_query_rows",
    "read_qrels",
    "read_queries",
    "run_evaluation",
    "score_run",
    "write_per_query",
    "write_runs",
]

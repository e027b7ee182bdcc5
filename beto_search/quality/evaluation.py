"""Retrieval evaluation: BEIR/TREC queries and qrels, runs per search mode, metrics via ir_measures.

Formats (detected from the content, the file extension breaking ties):

- queries, BEIR: JSON Lines, one object per line with ``_id`` and ``text`` (other fields are kept as
  the query's metadata, e.g. ``tipo``).
- queries, TREC: ``qid<TAB>text`` per line.
- qrels, BEIR: TSV with the header ``query-id<TAB>corpus-id<TAB>score``.
- qrels, TREC: ``qid 0 docid rel`` per line, whitespace separated.

Relevance grades are kept: nDCG uses the grade as a linear gain (trec_eval's definition); recall,
reciprocal rank and average precision count every grade >= 1 as relevant. Bad lines become warnings
(``file:line: reason``) and are skipped; a file with no valid line is an ``InputError``.

Only queries that appear in both files and have at least one relevant document are evaluated. Every
metric is computed by ``ir_measures`` over all evaluated queries: a query with no results scores 0.
The run handed to ``ir_measures`` keeps the engine's ranking exactly (ties in the engine's scores
cannot be re-ordered by the evaluator).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ir_measures
from ir_measures import AP, RR, R, nDCG

from ..errors import InputError
from ..fusion import resolve
from ..index.searcher import MODES

# JSON key -> (ir_measures measure, name shown in tables)
MEASURES: dict[str, tuple[Any, str]] = {
    "ndcg@10": (nDCG @ 10, "nDCG@10"),
    "mrr@10": (RR @ 10, "MRR@10"),
    "recall@1": (R @ 1, "R@1"),
    "recall@10": (R @ 10, "R@10"),
    "recall@100": (R @ 100, "R@100"),
    "map@100": (AP @ 100, "MAP@100"),
}
MAX_WARNINGS_SHOWN = 20
BEIR_QRELS_HEADER = ("query-id", "corpus-id", "score")


@dataclass
class Query:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalSet:
    """Queries and graded judgements, already crossed: only the queries that can be evaluated."""

    queries: dict[str, Query]
    qrels: dict[str, dict[str, int]]
    warnings: list[str] = field(default_factory=list)
    query_format: str = ""
    qrels_format: str = ""


@dataclass
class EvalReport:
    """Mean metrics per mode, per-query metrics, the runs themselves, and what went wrong."""

    modes: dict[str, dict[str, float]]
    per_query: dict[str, dict[str, dict[str, float]]]
    runs: dict[str, dict[str, list[tuple[str, float]]]]
    eval_set: EvalSet
    missing: list[dict[str, Any]]
    k: int
    fusion: str
    alpha: float
    files: list[str] = field(default_factory=list)
    rerank: str | None = None  # the cross-encoder that reranked every mode's top documents
    rerank_depth: int | None = None

    @property
    def warnings(self) -> list[str]:
        return self.eval_set.warnings

    def warning_lines(self, limit: int = MAX_WARNINGS_SHOWN) -> list[str]:
        """The warnings to print (the first ``limit`` and a count of the rest)."""
        shown = self.warnings[:limit]
        if len(self.warnings) > limit:
            shown.append(f"... and {len(self.warnings) - limit} more warnings (see --json)")
        return shown

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object."""
        return {
            "modes": self.modes,
            "queries": len(self.eval_set.queries),
            "missing": self.missing,
            "warnings": self.warnings,
            "k": self.k,
            "fusion": self.fusion,
            "alpha": self.alpha,
            "rerank": self.rerank,
            "rerank_depth": self.rerank_depth,
        }

    def table(self) -> str:
        """Metrics as rows, modes side by side as columns."""
        heads = [_mode_label(m, self.fusion, self.alpha, self.rerank) for m in self.modes]
        width = max([9] + [len(h) for h in heads])
        lines = ["metric".ljust(9) + "".join(h.rjust(width + 2) for h in heads)]
        for key, (_, name) in MEASURES.items():
            lines.append(
                name.ljust(9)
                + "".join(f"{self.modes[m][key]:.4f}".rjust(width + 2) for m in self.modes)
            )
        lines.append(
            f"queries: {len(self.eval_set.queries)}  k: {self.k}  queries with relevant "
            f"documents missing from the index: {len(self.missing)}"
        )
        for item in self.missing:
            lines.append(f"  missing for {item['query']}: {', '.join(item['documents'])}")
        lines += [f"wrote {f}" for f in self.files]
        return "\n".join(lines)


# ----- reading ---------------------------------------------------------------------------------
def _lines(path: Path, what: str, warnings: list[str]) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; undecodable lines become warnings."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"the {what} file {path} does not exist.") from None
    except IsADirectoryError:
        raise InputError(f"the {what} file {path} is a folder, not a file.") from None
    except OSError as exc:
        raise InputError(f"cannot read the {what} file {path} ({exc.strerror}).") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    out = []
    for n, line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = line.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            warnings.append(f"{path}:{n}: not UTF-8 text; line skipped")
            continue
        if text.strip() and not text.lstrip().startswith("#"):
            out.append((n, text))
    return out


def _detect_queries(path: Path, lines: list[tuple[int, str]]) -> str:
    head = [t.lstrip() for _, t in lines[:20]]
    if head and head[0].startswith("<"):
        raise InputError(
            f"{path} looks like TREC XML topics, which are not supported; write one "
            "'qid<TAB>text' per line instead."
        )
    if path.suffix.lower() in (".jsonl", ".json"):
        return "beir"
    return "beir" if sum(t.startswith("{") for t in head) * 2 > len(head) else "trec"


def read_queries(path: Path, warnings: list[str]) -> tuple[dict[str, Query], str]:
    """Queries by id (file order) and the detected format ("beir" or "trec")."""
    path = Path(path)
    lines = _lines(path, "queries", warnings)
    fmt = _detect_queries(path, lines)
    queries: dict[str, Query] = {}
    for n, line in lines:
        where = f"{path}:{n}"
        if fmt == "beir":
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                warnings.append(f"{where}: not valid JSON ({exc.msg}); line skipped")
                continue
            if not isinstance(obj, dict):
                warnings.append(f"{where}: expected a JSON object with _id and text; line skipped")
                continue
            qid, text = obj.get("_id"), obj.get("text")
            if isinstance(qid, int) and not isinstance(qid, bool):
                qid = str(qid)
            if not isinstance(qid, str) or not qid.strip():
                warnings.append(f"{where}: missing or empty '_id'; line skipped")
                continue
            if not isinstance(text, str) or not text.strip():
                warnings.append(f"{where}: missing or empty 'text' for query {qid}; line skipped")
                continue
            meta = {k: v for k, v in obj.items() if k not in ("_id", "text")}
        else:
            qid, sep, text = line.partition("\t")
            if not sep:
                warnings.append(f"{where}: expected 'qid<TAB>text'; line skipped")
                continue
            if not qid.strip() or not text.strip():
                warnings.append(f"{where}: empty query id or text; line skipped")
                continue
            meta = {}
        qid = qid.strip()
        if qid in queries:
            warnings.append(f"{where}: duplicate query id {qid}; the last one wins")
        queries[qid] = Query(qid, text.strip(), meta)
    if not queries:
        raise InputError(f"the queries file {path} holds no valid query ({_fmt_name(fmt)} format).")
    return queries, fmt


def _detect_qrels(path: Path, lines: list[tuple[int, str]]) -> str:
    if lines and _is_beir_header(lines[0][1]):
        return "beir"
    head = [t for _, t in lines[:20]]
    beir = sum(len(t.split("\t")) == 3 for t in head)
    trec = sum(len(t.split()) == 4 for t in head)
    if beir != trec:
        return "beir" if beir > trec else "trec"
    return "beir" if path.suffix in (".tsv", ".tab") else "trec"


def _is_beir_header(line: str) -> bool:
    parts = [p.strip().lower() for p in line.split("\t")]
    return (
        len(parts) == 3
        and _grade(parts[2]) is None
        and parts[2] in ("score", "rel", "relevance", "label")
    )


def _grade(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() else None


def read_qrels(path: Path, warnings: list[str]) -> tuple[dict[str, dict[str, int]], str]:
    """Graded judgements {query id: {doc id: grade}} and the detected format."""
    path = Path(path)
    lines = _lines(path, "qrels", warnings)
    fmt = _detect_qrels(path, lines)
    qrels: dict[str, dict[str, int]] = {}
    for i, (n, line) in enumerate(lines):
        where = f"{path}:{n}"
        if fmt == "beir":
            if i == 0 and _is_beir_header(line):
                continue
            parts = line.split("\t")
            if len(parts) != 3 and len(line.split()) == 3:
                parts = line.split()
            if len(parts) != 3:
                warnings.append(
                    f"{where}: expected 3 tab-separated columns (query-id, corpus-id, "
                    f"score), got {len(parts)}; line skipped"
                )
                continue
            qid, docid, rel = (p.strip() for p in parts)
        else:
            parts = line.split()
            if len(parts) != 4:
                warnings.append(
                    f"{where}: expected 4 columns (qid 0 docid rel), got {len(parts)}; line skipped"
                )
                continue
            qid, _, docid, rel = parts
        grade = _grade(rel)
        if not qid or not docid:
            warnings.append(f"{where}: empty query or document id; line skipped")
            continue
        if grade is None:
            warnings.append(f"{where}: relevance '{rel}' is not a whole number; line skipped")
            continue
        judged = qrels.setdefault(qid, {})
        if docid in judged:
            warnings.append(f"{where}: duplicate judgement for {qid} / {docid}; the last one wins")
        judged[docid] = grade
    if not qrels:
        raise InputError(
            f"the qrels file {path} holds no valid judgement ({_fmt_name(fmt)} format)."
        )
    return qrels, fmt


def _fmt_name(fmt: str) -> str:
    return "BEIR" if fmt == "beir" else "TREC"


def _ids(ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def load_eval_set(queries_path: Path, qrels_path: Path) -> EvalSet:
    """Read both files and keep the queries that have text and at least one relevant document."""
    warnings: list[str] = []
    queries, qfmt = read_queries(Path(queries_path), warnings)
    qrels, rfmt = read_qrels(Path(qrels_path), warnings)
    unjudged = [q for q in queries if q not in qrels]
    no_text = [q for q in qrels if q not in queries]
    no_relevant = [q for q in queries if q in qrels and not any(g > 0 for g in qrels[q].values())]
    if unjudged:
        warnings.append(
            f"{len(unjudged)} queries have no judgements in {qrels_path} and are not "
            f"evaluated: {_ids(unjudged)}"
        )
    if no_text:
        warnings.append(
            f"{len(no_text)} judged queries are absent from {queries_path} and are not "
            f"evaluated: {_ids(no_text)}"
        )
    if no_relevant:
        warnings.append(
            f"{len(no_relevant)} queries have no relevant document (grade >= 1) and are "
            f"not evaluated: {_ids(no_relevant)}"
        )
    keep = {q: v for q, v in queries.items() if q in qrels and q not in no_relevant}
    if not keep:
        raise InputError(
            f"no query in {queries_path} has a relevant document in {qrels_path}; "
            "check that both files use the same query ids."
        )
    return EvalSet(keep, {q: qrels[q] for q in keep}, warnings, qfmt, rfmt)


# ----- running and scoring ---------------------------------------------------------------------
def missing_documents(engine: Any, eval_set: EvalSet) -> list[dict[str, Any]]:
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


def score_run(
    eval_set: EvalSet, run: dict[str, list[tuple[str, float]]]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean and per-query metrics of a ranked run {qid: [(doc id, score), ...] best first}."""
    qrels = [
        ir_measures.Qrel(q, d, g) for q, judged in eval_set.qrels.items() for d, g in judged.items()
    ]
    # ranks, not scores, decide the order: the evaluator must not re-sort the engine's ties
    scored = [
        ir_measures.ScoredDoc(q, d, float(len(docs) - i))
        for q, docs in run.items()
        for i, (d, _) in enumerate(docs)
    ]
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


def evaluate(
    engine: Any,
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
            options = (
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


# ----- writing ---------------------------------------------------------------------------------
def _mode_label(mode: str, fusion: str, alpha: float, rerank: str | None = None) -> str:
    label = mode
    if mode == "hybrid":
        label = f"hybrid-{fusion}" if fusion == "rrf" else f"hybrid-convex-{alpha:g}"
    return label + "+rerank" if rerank else label


def _mode_path(path: Path, mode: str, several: bool) -> Path:
    return path.with_name(f"{path.stem}.{mode}{path.suffix}") if several else path


def _write(path: Path, what: str, rows: Iterable[str]) -> None:
    try:
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            for row in rows:
                fh.write(row)
    except OSError as exc:
        raise InputError(f"cannot write the {what} file {path} ({exc.strerror}).") from None


def write_runs(report: EvalReport, path: Path) -> list[Path]:
    """TREC run files (``qid Q0 docid rank score tag``); with several modes, one file per mode
    named ``STEM.MODE.SUFFIX``. The score column is the engine's score (n, n-1, ... under a
    rerank, whose order mixes two scales)."""
    several = len(report.runs) > 1
    written = []
    for mode, run in report.runs.items():
        tag = "beto-search-" + _mode_label(mode, report.fusion, report.alpha, report.rerank)
        target = _mode_path(Path(path), mode, several)

        def rows(run: dict[str, list[tuple[str, float]]] = run, tag: str = tag) -> Iterator[str]:
            for qid, docs in run.items():
                for rank, (doc, score) in enumerate(docs, start=1):
                    yield f"{qid} Q0 {doc} {rank} {score:.6f} {tag}\n"

        _write(target, "run", rows())
        written.append(target)
    return written


def per_query_rows(report: EvalReport) -> Iterator[dict[str, Any]]:
    for mode, table in report.per_query.items():
        for qid, values in table.items():
            q = report.eval_set.queries[qid]
            yield {"mode": mode, "query": qid, **values, "text": q.text, "metadata": q.metadata}


def write_per_query(report: EvalReport, path: Path) -> Path:
    """Per-query metrics: JSON Lines, or TSV when the file name ends in .tsv (metadata fields
    become extra columns)."""
    path = Path(path)
    rows = list(per_query_rows(report))
    if path.suffix.lower() in (".tsv", ".tab"):
        meta_keys = sorted({k for r in rows for k in r["metadata"]})
        head = ["mode", "query", *MEASURES, "text", *meta_keys]

        def lines() -> Iterator[str]:
            yield "\t".join(head) + "\n"
            for r in rows:
                cells = [
                    r["mode"],
                    r["query"],
                    *(f"{r[m]:.6f}" for m in MEASURES),
                    r["text"],
                    *(_cell(r["metadata"].get(k)) for k in meta_keys),
                ]
                yield "\t".join(c.replace("\t", " ").replace("\n", " ") for c in cells) + "\n"

        _write(path, "per-query", lines())
    else:
        _write(path, "per-query", (json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def run_evaluation(
    engine: Any,
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

"""Evaluation sets: BEIR/TREC queries and qrels read into an ``EvalSet``.

Formats (detected from the content, the file extension breaking ties):

- queries, BEIR: JSON Lines, one object per line with ``_id`` and ``text`` (other fields are kept as
  the query's metadata, e.g. ``tipo``).
- queries, TREC: ``qid<TAB>text`` per line.
- qrels, BEIR: TSV with the header ``query-id<TAB>corpus-id<TAB>score``.
- qrels, TREC: ``qid 0 docid rel`` per line, whitespace separated.

Bad lines become warnings (``file:line: reason``) and are skipped; a file with no valid line is an
``InputError``. Only queries that appear in both files and have at least one relevant document are
evaluated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InputError

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

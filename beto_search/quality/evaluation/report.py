"""An evaluation's report and its files: the table, per-query metrics (JSON Lines or TSV) and
TREC run files."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InputError
from ..scoring import MEASURES
from .formats import EvalSet

MAX_WARNINGS_SHOWN = 20


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

"""Choose the index's default fusion of dense and lexical results, with or without labels.

``tune`` retrieves the dense and the lexical candidate lists ONCE per query, then re-fuses them
for every config of a small grid (RRF and convex, several normalisations and dense weights),
scores each with nDCG@10 (``scoring.score_many``: the scorer ``evaluation`` uses) and stores the
winner in the manifest (``fusion``), where searches pick it up as the index's default.
Candidates: ``candidates.py``; the label-free choice: ``choose.py``; the pseudo-queries:
``..pseudoqueries``.

Without labels it tunes on cloze pseudo-queries cut from the index's own chunks (``cloze_set``):
a sentence of a chunk asks for its document while the chunk is scored WITHOUT that sentence, and
a one-sentence document asks for the other documents of its title, itself left out; neither side
wins by copying words, and every kind of index (paragraphs of one chunk, sentences) gets them.
Only the convex min-max line is scored on them, and ``choose_pseudo`` turns it into a dense weight,
corrected by which side the pseudo-queries found weaker (they overrate the dense side). How the
choice holds on held-out questions: docs/fusion.md (benchmarks/fusion.py).

Guards against noise: fewer than ``MIN_QUERIES`` usable queries keeps the default. On labels,
configs within ``TOLERANCE`` of the best count as ties and the simplest of them wins (the grid is
ordered simplest first, the library default first of all), and a winner that is not better than
the default by at least one standard error of the per-query difference keeps the default; on
pseudo-queries a line flat within ``TOLERANCE`` keeps the default.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...errors import BetoSearchError, InputError
from ...fusion import DEFAULT_CONFIG, NORMS, FusionConfig, explain, resolve  # explain: re-exported
from ..pseudoqueries import (
    GROUP_MAX,
    PSEUDO_QUERIES,
    PSEUDO_SEED,
    SAMPLE_MIN,
    SAMPLE_PER_QUERY,
    STYLES,
    PseudoSet,
    cloze_set,
    gist,
    harden,
    keywords,
    pseudo_queries,
)
from ..scoring import score_many
from .candidates import DEPTH, _Query, candidate_lists, cloze_candidates
from .choose import STRONG_CAP, TOLERANCE, WEAK_SHRINK, choose_pseudo

if TYPE_CHECKING:
    from ...protocols import EngineLike

__all__ = [  # the names of the module tuning.py was, kept importable from here
    "AUTOTUNE_MIN_CHUNKS",
    "DEPTH",
    "GROUP_MAX",
    "MIN_QUERIES",
    "PSEUDO_QUERIES",
    "PSEUDO_SEED",
    "SAMPLE_MIN",
    "SAMPLE_PER_QUERY",
    "STRONG_CAP",
    "STYLES",
    "TOLERANCE",
    "WEAK_SHRINK",
    "PseudoSet",
    "TuneResult",
    "candidate_lists",
    "choose_pseudo",
    "cloze_candidates",
    "cloze_set",
    "describe",
    "explain",
    "gist",
    "grid",
    "harden",
    "keywords",
    "maybe_autotune",
    "measure",
    "pseudo_grid",
    "pseudo_queries",
    "tune",
]

log = logging.getLogger(__name__)

MIN_QUERIES = 30  # below this, nDCG differences between configs are mostly noise
AUTOTUNE_MIN_CHUNKS = 200  # see maybe_autotune


def grid() -> list[FusionConfig]:
    """Configs to try, simplest first: the library default, plain RRF, convex min-max, the rest."""
    out = [DEFAULT_CONFIG, FusionConfig("rrf", 0.5)]
    alphas = [round(0.1 * i, 1) for i in range(1, 10)]
    out += [FusionConfig("convex", a, "minmax") for a in alphas]
    out += [FusionConfig("rrf", a) for a in (0.3, 0.4, 0.6, 0.7, 0.8)]
    out += [FusionConfig("rrf", 0.5, rrf_k=k) for k in (10, 30)]
    out += [FusionConfig("convex", a, norm) for norm in NORMS if norm != "minmax" for a in alphas]
    out += [FusionConfig("convex", 0.0), FusionConfig("convex", 1.0)]  # one side alone: last resort
    seen: set[FusionConfig] = set()
    return [c for c in out if not (c in seen or seen.add(c))]  # type: ignore[func-returns-value]


def pseudo_grid() -> list[FusionConfig]:
    """The configs tried on pseudo-queries: the default, then convex min-max at every dense weight.

    Pseudo-queries are not the user's queries; on the full grid they picked normalisations that
    suited their task and not real queries (docs/tune-reembed.md), while along this one line the
    dense weight they choose moved the right way for every encoder measured.
    """
    return [DEFAULT_CONFIG] + [
        FusionConfig("convex", a) for a in (round(0.05 * i, 2) for i in range(21)) if a != 0.3
    ]


@dataclass
class TuneResult:
    """What ``tune`` chose, on what, and why."""

    config: FusionConfig
    stored: bool
    reason: str
    tuned_on: str
    queries: int
    ndcg: dict[str, float] = field(default_factory=dict)
    table: list[tuple[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    evidence: dict[str, Any] = field(default_factory=dict)  # what a label-free choice rests on

    def to_dict(self) -> dict[str, Any]:
        return {
            "fusion": self.config.to_dict(),
            "label": self.config.label(),
            "stored": self.stored,
            "reason": self.reason,
            "tuned_on": self.tuned_on,
            "queries": self.queries,
            "ndcg@10": self.ndcg,
            "grid": [{"config": c, "ndcg@10": v} for c, v in self.table],
            "seconds": round(self.seconds, 2),
            "evidence": self.evidence,
        }


# ----- scoring ---------------------------------------------------------------------------------
def _score_all(
    queries: dict[str, _Query],
    qrels: dict[str, dict[str, int]],
    variants: list[FusionConfig | str],
    key: Callable[[str], str],
) -> list[dict[str, float]]:
    """Per-query nDCG@10 of every variant: each query's top documents under it, scored by
    ``scoring.score_many`` (one ir_measures call for them all)."""
    runs = [{q: c.top_docs(c.scores(cfg), key) for q, c in queries.items()} for cfg in variants]
    return score_many(qrels, runs)


def measure(
    dense: dict[str, dict[int, float]],
    lexical: dict[str, dict[int, float]],
    doc_of: dict[int, str],
    qrels: dict[str, dict[str, int]],
    configs: list[FusionConfig],
    doc_key: Callable[[str], str] | None = None,
) -> tuple[dict[FusionConfig, float], float, float]:
    """Mean nDCG@10 of each config on given candidate lists ({qid: {chunk id: score}}, each
    chunk's document), and of each side alone: what ``tune`` compares, without an index."""
    cands = {q: _Query(dense.get(q, {}), lexical.get(q, {}), doc_of) for q in qrels}
    scored = _score_all(cands, qrels, [*configs, "dense", "lexical"], doc_key or (lambda d: d))
    means = {c: _mean(v) for c, v in zip(configs, scored)}
    return means, _mean(scored[-2]), _mean(scored[-1])


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / max(1, len(values))


def _se_of_difference(a: dict[str, float], b: dict[str, float]) -> float:
    diffs = [a[q] - b[q] for q in a]
    n = len(diffs)
    if n < 2:
        return math.inf
    mean = sum(diffs) / n
    return math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n)


# ----- tuning ----------------------------------------------------------------------------------
def tune(
    engine: EngineLike,
    queries: dict[str, str] | None = None,
    qrels: dict[str, dict[str, int]] | None = None,
    *,
    n: int = PSEUDO_QUERIES,
    seed: int = PSEUDO_SEED,
    style: str = "cloze",
    store: bool = True,
    configs: list[FusionConfig] | None = None,
    doc_key: Callable[[str], str] | None = None,
    tuned_on: str | None = None,
) -> TuneResult:
    """Choose the fusion that maximises nDCG@10 and (``store``) make it the index's default.

    ``queries`` {qid: text} and ``qrels`` {qid: {doc id: grade}} tune on labels; without them,
    on ``n`` pseudo-queries of the given ``style``. ``doc_key`` maps document ids before scoring
    (e.g. sentence ids to their source document).
    """
    started = time.perf_counter()
    if (queries is None) != (qrels is None):
        raise InputError("give both queries and qrels to tune on labels, or neither.")
    manifest = engine.refresh()
    if manifest is None:
        raise InputError("the index is empty; ingest documents before tuning its fusion.")
    labelled = queries is not None
    pset: PseudoSet | None = None
    if queries is None or qrels is None:
        if style == "cloze":
            pset = cloze_set(engine, n, seed)
            queries, qrels = pset.queries, pset.qrels
            kinds = ", ".join(f"{v} {k}" for k, v in pset.kinds.items() if v)
            what = tuned_on or f"{len(queries)} cloze pseudo-queries ({kinds}; seed {seed})"
        else:
            queries, qrels, exclude = pseudo_queries(engine, n, seed, style)
            pset = PseudoSet(queries, qrels, exclude)
            what = tuned_on or f"{len(queries)} pseudo-queries ({style}, seed {seed})"
        configs = configs or pseudo_grid()
    else:
        keep = [q for q in queries if any(g > 0 for g in qrels.get(q, {}).values())]
        queries = {q: queries[q] for q in keep}
        qrels = {q: qrels[q] for q in keep}
        what = tuned_on or f"{len(queries)} labelled queries"
    configs = configs or grid()
    if len(queries) < MIN_QUERIES:
        reason = (
            f"only {len(queries)} usable queries (at least {MIN_QUERIES} are needed to tell "
            f"configs apart); kept the default {DEFAULT_CONFIG.label()}"
        )
        return TuneResult(
            DEFAULT_CONFIG, False, reason, what, len(queries), seconds=time.perf_counter() - started
        )
    if pset is not None:
        dense, lexical, doc_of = cloze_candidates(engine, pset, DEPTH)
    else:
        dense, lexical, doc_of = candidate_lists(engine, queries, DEPTH)
    cands = {q: _Query(dense[q], lexical[q], doc_of) for q in queries}
    scored = _score_all(cands, qrels, [*configs, "dense", "lexical"], doc_key or (lambda d: d))
    per = dict(zip(configs, scored))
    dense_only, lexical_only = _mean(scored[-2]), _mean(scored[-1])
    means = {cfg: _mean(v) for cfg, v in per.items()}
    best = max(configs, key=lambda c: means[c])
    chosen = next(c for c in configs if means[c] >= means[best] - TOLERANCE)  # simplest tie
    default = configs[0]
    reason = f"highest nDCG@10 (within {TOLERANCE} of the best, simplest first)"
    evidence: dict[str, Any] = {}
    if not labelled:
        chosen, reason = choose_pseudo(means, dense_only, lexical_only)
        if chosen not in means:  # a weight off the measured line: measure it
            extra = _score_all(cands, qrels, [chosen], doc_key or (lambda d: d))[0]
            per[chosen], means[chosen] = extra, _mean(extra)
        n_q = max(1, len(queries))
        evidence = {
            "pseudo_queries": dict(pset.kinds) if pset is not None else {},
            "dense_better": round(sum(scored[-2][q] > scored[-1][q] for q in queries) / n_q, 3),
            "lexical_better": round(sum(scored[-1][q] > scored[-2][q] for q in queries) / n_q, 3),
            "convex_line": {
                f"{c.alpha:g}": round(means[c], 4)
                for c in sorted(
                    (c for c in configs if c.method == "convex" and c.norm == "minmax"),
                    key=lambda c: c.alpha,
                )
            },
        }
    elif chosen != default:
        gain = means[chosen] - means[default]
        se = _se_of_difference(per[chosen], per[default])
        if gain < se:
            reason = (
                f"{chosen.label()} beat the default by {gain:.4f}, less than one standard "
                f"error ({se:.4f}); kept the default"
            )
            chosen = default
    ndcg = {
        "chosen": round(means[chosen], 4),
        "default": round(means[default], 4),
        "best": round(means[best], 4),
        "dense": round(dense_only, 4),
        "lexical": round(lexical_only, 4),
    }
    result = TuneResult(
        chosen,
        False,
        reason,
        what,
        len(queries),
        ndcg,
        [(c.label(), round(means[c], 4)) for c in configs],
        evidence=evidence,
    )
    if store:
        facts = {
            **chosen.to_dict(),
            "tuned_on": what,
            "labels": "labels" if labelled else "pseudo",
            "queries": len(queries),
            "ndcg@10": ndcg,
            "reason": reason,
            **({"evidence": evidence} if evidence else {}),
            "chunks": engine.store.chunk_count(),
            "generation": manifest.generation,
            "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        engine.set_default_fusion(facts)
        result.stored = True
    result.seconds = time.perf_counter() - started
    return result


def maybe_autotune(engine: EngineLike) -> TuneResult | None:
    """Tune after an ingest/reembed when the index is big enough to tell and the stored choice
    is missing or stale; never replaces a choice made on labels.

    Threshold: ``AUTOTUNE_MIN_CHUNKS`` (200) chunks, so that ``PSEUDO_QUERIES`` pseudo-queries come
    from distinct chunks and each candidate list (``DEPTH`` 100) is a real choice out of the index
    rather than most of it. Stale: tuned under another generation (model), or the index has
    doubled since. ``BETO_SEARCH_AUTOTUNE=0`` turns it off.
    """
    if os.environ.get("BETO_SEARCH_AUTOTUNE", "1").lower() in ("0", "false", "no", "off"):
        return None
    manifest = engine.refresh()  # the facade's view may predate another process's writes
    if manifest is None:
        return None
    m = manifest.to_dict()
    chunks = engine.store.chunk_count()
    if chunks < AUTOTUNE_MIN_CHUNKS:
        return None
    old = m.get("fusion")
    if isinstance(old, dict):
        if old.get("labels") == "labels":
            return None
        fresh = (
            old.get("generation", 0) == m.get("generation", 0) and 2 * old.get("chunks", 0) > chunks
        )
        if fresh:
            return None
    try:
        result = tune(engine)
    except (BetoSearchError, RuntimeError, ValueError, OSError) as exc:
        # tuning is a bonus: never fail the ingest (or re-embed) that triggered it
        log.warning("automatic fusion tuning failed: %s", exc)
        return None
    log.info("fusion tuned: %s (%s)", result.config.label(), result.reason)
    return result


def describe(
    manifest: dict[str, Any] | None, fusion: str | None = None, alpha: float | None = None
) -> dict[str, Any]:
    """What fusion a search with these arguments uses and why (``query --explain``): the config
    (as ``fusion.resolve`` makes it), its label, where it came from ("arguments", "tuned" or
    "default") and the reason (plus the tune's evidence when the index's tuned one is used)."""
    used = resolve(manifest, fusion, alpha)
    f = (manifest or {}).get("fusion")
    out: dict[str, Any] = {**used.to_dict(), "label": used.label()}
    if fusion is not None or alpha is not None:
        given = ", ".join(
            x
            for x in (
                f"--fusion {fusion}" if fusion else "",
                f"--alpha {alpha:g}" if alpha is not None else "",
            )
            if x
        )
        out.update(source="arguments", reason=f"given with the search ({given})")
    elif isinstance(f, dict):
        out.update(source="tuned", reason=explain(manifest))
        if isinstance(f.get("evidence"), dict):
            out["evidence"] = f["evidence"]
    else:
        out.update(source="default", reason=explain(manifest))
    return out

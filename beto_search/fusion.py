"""Fusing dense and lexical rankings: reciprocal rank fusion and a convex combination.

A ``FusionConfig`` names one way to fuse (method, dense weight ``alpha``, score normalisation,
RRF's ``k``). The index's default is the manifest's tuned one (``beto_search.quality.tuning``) when there
is one, else ``DEFAULT_CONFIG``; ``resolve`` turns a search's arguments into the config to use.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .errors import InputError

FUSIONS = ("rrf", "convex")
NORMS = ("minmax", "zscore", "rank", "dbsf")
RRF_K = 60
# Chosen on corpora/es-dev: convex with a low dense weight degrades gracefully when the dense
# ranking is weak (raw BETO is not a trained retriever); RRF gives a weak ranking equal say.
DEFAULT_FUSION = "convex"
DEFAULT_ALPHA = 0.3
DEFAULT_NORM = "minmax"


@dataclass(frozen=True)
class FusionConfig:
    """One fusion: ``alpha`` is the dense side's weight (0 = lexical only, 1 = dense only).

    For RRF, alpha weights the two reciprocal-rank terms (0.5 is plain RRF); ``norm`` only
    matters for convex.
    """

    method: str = DEFAULT_FUSION
    alpha: float = DEFAULT_ALPHA
    norm: str = DEFAULT_NORM
    rrf_k: int = RRF_K

    def __post_init__(self) -> None:
        if self.method not in FUSIONS:
            raise InputError(f"fusion must be one of {', '.join(FUSIONS)}, not '{self.method}'.")
        if self.norm not in NORMS:
            raise InputError(f"normalisation must be one of {', '.join(NORMS)}, not '{self.norm}'.")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise InputError("alpha must be between 0 and 1.")
        if int(self.rrf_k) < 1:
            raise InputError("the RRF constant k must be at least 1.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FusionConfig:
        return cls(
            method=data.get("method", DEFAULT_FUSION),
            alpha=float(data.get("alpha", DEFAULT_ALPHA)),
            norm=data.get("norm", DEFAULT_NORM),
            rrf_k=int(data.get("rrf_k", RRF_K)),
        )

    def label(self) -> str:
        if self.method == "rrf":
            return f"rrf(k={self.rrf_k}, dense weight {self.alpha:g})"
        return f"convex({self.norm}, dense weight {self.alpha:g})"


DEFAULT_CONFIG = FusionConfig()


def resolve(manifest: Any, fusion: str | None = None, alpha: float | None = None) -> FusionConfig:
    """The config a search uses: its own arguments, else the index's tuned default, else ours.
    ``manifest``: a ``Manifest``, its dict, or None. The one resolution path of the package
    (``Searcher.fusion_config`` calls it with the engine's manifest).

    A method given without alpha keeps the tuned alpha/normalisation when the tuned method is
    the same one; a different method falls back to that method's library default.
    """
    tuned = manifest.get("fusion") if manifest is not None else None
    base = FusionConfig.from_dict(tuned) if isinstance(tuned, dict) else DEFAULT_CONFIG
    if fusion is not None and fusion != base.method:
        base = FusionConfig(method=fusion, alpha=0.5 if fusion == "rrf" else DEFAULT_ALPHA)
    if alpha is not None:
        base = FusionConfig(base.method, float(alpha), base.norm, base.rrf_k)
    return base


def rrf(
    rankings: list[list[int]], k: int = RRF_K, weights: list[float] | None = None
) -> dict[int, float]:
    """Reciprocal rank fusion: sum over rankings of weight / (k + rank), ranks from 1."""
    out: dict[int, float] = {}
    for n, ranking in enumerate(rankings):
        w = 1.0 if weights is None else weights[n]
        for rank, item in enumerate(ranking, start=1):
            out[item] = out.get(item, 0.0) + w / (k + rank)
    return out


def min_max(scores: dict[int, float]) -> dict[int, float]:
    """Scale scores to [0, 1]; all-equal scores become 1."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi == lo:
        return {key: 1.0 for key in scores}
    return {key: (v - lo) / (hi - lo) for key, v in scores.items()}


def _z(scores: dict[int, float]) -> dict[int, float]:
    n = len(scores)
    mean = sum(scores.values()) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in scores.values()) / n)
    return {key: (v - mean) / std if std > 0 else 0.0 for key, v in scores.items()}


def _dbsf(scores: dict[int, float]) -> dict[int, float]:
    """Distribution-based score fusion: scale mean +- 3 std to [0, 1] (clipped)."""
    z = _z(scores)
    return {key: min(1.0, max(0.0, (v + 3.0) / 6.0)) for key, v in z.items()}


def _rank(scores: dict[int, float]) -> dict[int, float]:
    """1 for the best, falling linearly to 1/n for the last."""
    order = sorted(scores, key=lambda key: -scores[key])
    n = len(order)
    return {key: (n - i) / n for i, key in enumerate(order)}


def normalise(scores: dict[int, float], norm: str = DEFAULT_NORM) -> dict[int, float]:
    """Put one side's scores on a common scale (see ``NORMS``)."""
    if not scores:
        return {}
    if norm == "minmax":
        return min_max(scores)
    if norm == "zscore":
        return _z(scores)
    if norm == "dbsf":
        return _dbsf(scores)
    if norm == "rank":
        return _rank(scores)
    raise InputError(f"normalisation must be one of {', '.join(NORMS)}, not '{norm}'.")


def convex(
    dense: dict[int, float], lexical: dict[int, float], alpha: float, norm: str = DEFAULT_NORM
) -> dict[int, float]:
    """alpha * normalised dense + (1 - alpha) * normalised lexical.

    A candidate missing from one side gets that side's lowest normalised score (0 for minmax).
    """
    nd, nl = normalise(dense, norm), normalise(lexical, norm)
    floor_d = min(nd.values(), default=0.0) if norm != "minmax" else 0.0
    floor_l = min(nl.values(), default=0.0) if norm != "minmax" else 0.0
    return {
        key: alpha * nd.get(key, floor_d) + (1 - alpha) * nl.get(key, floor_l)
        for key in nd.keys() | nl.keys()
    }


def fuse(
    config: FusionConfig, dense: dict[int, float], lexical: dict[int, float]
) -> dict[int, float]:
    """Fused scores (higher is better) of the union of both candidate lists."""
    if config.method == "convex":
        return convex(dense, lexical, config.alpha, config.norm)

    def ranking(d: dict[int, float]) -> list[int]:
        return sorted(d, key=lambda i: -d[i])

    # weights 2a and 2(1-a): alpha 0.5 is exactly plain RRF
    weights = [2.0 * config.alpha, 2.0 * (1.0 - config.alpha)]
    return rrf([ranking(dense), ranking(lexical)], config.rrf_k, weights)


def explain(manifest: dict[str, Any] | None) -> str:
    """One line for ``info``: the default fusion and why."""
    f = (manifest or {}).get("fusion")
    if not isinstance(f, dict):
        return (
            f"{DEFAULT_CONFIG.label()}: the library default (not tuned; 'beto-search tune' "
            f"chooses one for this index)"
        )
    cfg = FusionConfig.from_dict(f)
    s = f.get("ndcg@10", {})
    return (
        f"{cfg.label()}: tuned on {f.get('tuned_on')} at generation {f.get('generation', 0)}; "
        f"nDCG@10 {s.get('chosen')} vs dense only {s.get('dense')}, lexical only "
        f"{s.get('lexical')}, default {s.get('default')}; {f.get('reason')}"
    )

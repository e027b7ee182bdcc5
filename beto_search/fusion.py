"""Fusing dense and lexical rankings: reciprocal rank fusion and a convex combination."""
from __future__ import annotations

FUSIONS = ("rrf", "convex")
RRF_K = 60
# Chosen on corpora/es-dev: convex with a low dense weight degrades gracefully when the dense
# ranking is weak (raw BETO is not a trained retriever); RRF gives a weak ranking equal say.
DEFAULT_FUSION = "convex"
DEFAULT_ALPHA = 0.3


def rrf(rankings: list[list[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion: sum over rankings of 1 / (k + rank), ranks from 1."""
    out: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            out[item] = out.get(item, 0.0) + 1.0 / (k + rank)
    return out


def min_max(scores: dict[int, float]) -> dict[int, float]:
    """Scale scores to [0, 1]; all-equal scores become 1."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi == lo:
        return {key: 1.0 for key in scores}
    return {key: (v - lo) / (hi - lo) for key, v in scores.items()}


def convex(dense: dict[int, float], lexical: dict[int, float], alpha: float) -> dict[int, float]:
    """alpha * normalised dense + (1 - alpha) * normalised lexical; a missing score counts 0."""
    nd, nl = min_max(dense), min_max(lexical)
    return {key: alpha * nd.get(key, 0.0) + (1 - alpha) * nl.get(key, 0.0) for key in nd.keys() | nl.keys()}

"""The fusion chosen on pseudo-queries (``tune`` without labels): the dense weight they prefer
along the convex min-max line, corrected by the side they found weaker."""

from __future__ import annotations

import math

from ...fusion import DEFAULT_CONFIG, FusionConfig

TOLERANCE = 0.002  # nDCG@10 differences below this are ties


# pseudo-queries overrate the dense side: on held-out questions (docs/fusion.md) the dense weight
# they prefer was right or too high for a strong encoder (0.9 where 0.7-0.8 was best) and twice
# too high for a weak one (0.3 where 0.1-0.15 was best, 0.3 falling below lexical alone)
STRONG_CAP = 0.8  # dense side the stronger one: its weight at most this
WEAK_SHRINK = 0.5  # dense side the weaker one: the weight pseudo-queries prefer, times this


def choose_pseudo(
    means: dict[FusionConfig, float], dense: float, lexical: float
) -> tuple[FusionConfig, str]:
    """The fusion chosen on pseudo-queries, and why (``tune`` without labels).

    ``means``: pseudo nDCG@10 of configs including the convex min-max line; ``dense`` and
    ``lexical``: each side alone. The dense weight the line prefers (the middle of those within
    ``TOLERANCE`` of its best) is corrected by which side the pseudo-queries found weaker: a
    weaker dense side gets ``WEAK_SHRINK`` of it, a stronger one at most ``STRONG_CAP``. A flat
    line (every weight within ``TOLERANCE``) is no evidence: the default stays.
    """
    line = sorted(
        (c for c in means if c.method == "convex" and c.norm == "minmax"), key=lambda c: c.alpha
    )
    values = [means[c] for c in line]
    if not line or max(values) - min(values) <= TOLERANCE:
        return DEFAULT_CONFIG, (
            f"the pseudo-queries rated every dense weight alike (within {TOLERANCE}): no "
            f"evidence, kept the default {DEFAULT_CONFIG.label()}"
        )
    tied = [c.alpha for c in line if means[c] >= max(values) - TOLERANCE]
    preferred = tied[len(tied) // 2]
    side = f"dense only {dense:.3f}, lexical only {lexical:.3f}"
    if dense < lexical:
        alpha = round(math.floor(preferred * WEAK_SHRINK * 20 + 1e-9) / 20, 2)  # 0.05 steps, down
        why = (
            f"the dense side is the weaker one on the pseudo-queries ({side}): the dense weight "
            f"they prefer, {preferred:g}, halved (they overrate the dense side)"
        )
    else:
        alpha = min(preferred, STRONG_CAP)
        why = (
            f"the dense side is the stronger one on the pseudo-queries ({side}): the dense "
            f"weight they prefer, {preferred:g}"
            + (f", capped at {STRONG_CAP:g}" if preferred > STRONG_CAP else "")
        )
    return FusionConfig("convex", alpha), why

"""Fit a training run's step schedule to its time budget, and keep it fitted while it runs.

The learning rate decays linearly to zero at the planned last step, so the plan has to say how many
steps the budget allows. The first timed steps give a first estimate; on a shared machine the
speed then drifts (a step can cost 2-5x more or less a minute later), so the plan is fitted again
every ``REPLAN_EVERY`` steps from the recent steps' median, and a run whose planned steps are done
while minutes remain goes on (more epochs of the same examples) until the budget or a step cap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

REPLAN_EVERY = 10  # steps between two fits of the plan (and how many recent steps it reads)


def replan_due(timed_steps: int) -> bool:
    """Whether the plan is fitted after this many timed steps (1, 3, then every REPLAN_EVERY)."""
    return timed_steps in (1, 3) or (timed_steps > 0 and timed_steps % REPLAN_EVERY == 0)


def seconds_per_step(step_times: Sequence[float]) -> float:
    """The median of the last ``REPLAN_EVERY`` step times (robust to one slow step)."""
    recent = sorted(step_times[-REPLAN_EVERY:])
    return recent[len(recent) // 2]


def fit_plan(
    step: int,
    elapsed: float,
    budget: float,
    step_times: Sequence[float],
    planned: int,
    n_batches: int,
    max_steps: int | None,
) -> int:
    """The step the run should end at, seen from ``step`` after ``elapsed`` seconds.

    Without a time budget (``budget`` infinite) it is the plan capped by the batches and
    ``max_steps``. With one, it is as many steps as the remaining seconds allow at the recent
    speed, capped the same way (never below ``step + 1``: the caller stops on the budget itself).
    """
    cap = min(n_batches, max_steps or n_batches)
    if not math.isfinite(budget) or not step_times:
        return max(step + 1, min(planned, cap))
    fits = step + int(max(0.0, budget - elapsed) / seconds_per_step(step_times))
    return max(step + 1, min(cap, fits))


def time_left_for_a_step(elapsed: float, budget: float, step_times: Sequence[float]) -> bool:
    """True when a budget is set and another step (at the recent speed) still fits in it."""
    if not math.isfinite(budget) or not step_times:
        return False
    return elapsed + seconds_per_step(step_times) <= budget

"""``adapt`` uses the time budget it is given: the plan is fitted again as the speed drifts and
extended when the planned steps end early. Uses the tiny BETO-shaped model and a fake clock."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

import beto_search.quality.training.loop as loop_module
from beto_search import SearchEngine
from beto_search.quality.training.budget import fit_plan, replan_due
from tests.paths import CORPUS

SMALL = [CORPUS / "historia", CORPUS / "ciencia", CORPUS / "cocina", CORPUS / "geografia"]


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory, tiny_encoder) -> Path:
    folder = tmp_path_factory.mktemp("adapt-budget-index") / "idx"
    with SearchEngine.open(folder, encoder=tiny_encoder) as engine:
        engine.ingest(SMALL)
    return folder


@pytest.fixture
def index(small_index: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "idx"
    shutil.copytree(small_index, dest)
    return dest


class FakeClock:
    """``time`` as ``adapt`` sees it, with a ``perf_counter`` that only moves when a training step
    encodes a batch: the first ``slow`` steps cost ``first`` seconds, the others ``then`` (a
    machine that was busy when the plan was first fitted, then got faster). Deterministic on any
    machine, however loaded."""

    def __init__(self, slow: int, first: float, then: float) -> None:
        self.now, self.calls = 1000.0, 0
        self.slow, self.first, self.then = slow, first, then

    def perf_counter(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = loop_module.features

        def features(model: Any, texts: Any, max_length: int) -> Any:
            if model.training:  # two columns (queries, positives) per step: half a step each
                self.calls += 1
                self.now += (self.first if self.calls <= 2 * self.slow else self.then) / 2
            return original(model, texts, max_length)

        monkeypatch.setattr(loop_module, "features", features)
        monkeypatch.setattr(loop_module, "time", self)


def log_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]


# ----- the budget ------------------------------------------------------------------------------
def test_adapt_trains_until_the_budget_when_its_first_plan_ends_early(
    index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FakeClock(3, 0.5, 0.25).install(monkeypatch)  # a 3-second budget
    out = tmp_path / "budget"
    with SearchEngine.open(index, create=False) as engine:
        report = engine.adapt(out, max_minutes=0.05, batch_size=4, force=True)
    plans = [r["planned"] for r in log_rows(out) if r.get("event") == "plan"]
    # fitted after steps 1 and 3 (0.5 s each): 3 + 1.5 / 0.5 = 6 steps, where it used to end
    assert plans[:2] == [6, 6]
    assert report.stopped.startswith("time budget"), report.stopped
    assert report.steps >= 8  # the faster steps used the rest of the budget
    assert report.seconds >= 0.8 * 3
    assert any(r.get("event") == "extend" for r in log_rows(out))
    assert report.written


def test_adapt_with_a_step_cap_stops_there_even_with_minutes_left(
    index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FakeClock(3, 0.5, 0.1).install(monkeypatch)
    out = tmp_path / "capped"
    with SearchEngine.open(index, create=False) as engine:
        report = engine.adapt(out, max_minutes=1, max_steps=5, batch_size=4, force=True)
    assert report.steps == 5 and report.stopped == "all steps done"
    assert report.seconds < 60


def test_fit_plan_follows_the_speed_and_respects_the_caps() -> None:
    assert [n for n in range(1, 31) if replan_due(n)] == [1, 3, 10, 20, 30]
    # 10 steps of 1 s, 50 s left of 60: 50 more steps fit
    assert fit_plan(10, 10.0, 60.0, [1.0] * 10, 12, 1000, None) == 60
    # the machine got 5x faster: the recent steps decide
    assert fit_plan(20, 30.0, 60.0, [5.0] * 10 + [1.0] * 10, 30, 1000, None) == 50
    assert fit_plan(20, 30.0, 60.0, [1.0] * 20, 30, 40, None) == 40  # batches run out
    assert fit_plan(20, 30.0, 60.0, [1.0] * 20, 30, 1000, 25) == 25  # --max-steps
    assert fit_plan(20, 59.9, 60.0, [1.0] * 20, 30, 1000, None) == 21  # never below step + 1
    assert fit_plan(3, 3.0, math.inf, [1.0] * 3, 7, 1000, 5) == 5  # no budget: the plan, capped

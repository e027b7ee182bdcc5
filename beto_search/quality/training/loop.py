"""The training loop ``adapt`` and ``train`` share: batches whose in-batch negatives are never
from the same document, a time budget that fixes the schedule once steps are timed, atomic
checkpoints (a killed run re-run with the same settings resumes), early stopping on a dev score."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .model_io import features, load_checkpoint, restore, save_checkpoint
from .options import LOG_NAME, TrainOptions


# ----- batches ---------------------------------------------------------------------------------
def doc_distinct_batches(
    docs: Sequence[str], order: Sequence[int], size: int, open_max: int = 64
) -> list[list[int]]:
    """Cut ``order`` into full batches of ``size`` where no document appears twice (in-batch
    negatives from the same document, e.g. overlapping chunks, would be false negatives).

    An example that fits none of the ``open_max`` open batches belongs to a document that is over-
    represented at that point of the stream: it is skipped (pass several epochs as one ``order`` and
    it comes back later), so that long documents do not turn into many small batches.
    """
    size = max(2, min(size, len(set(docs))))
    out: list[list[int]] = []
    open_: list[tuple[list[int], set[str]]] = []
    for i in order:
        for batch, seen in open_:
            if docs[i] not in seen:
                batch.append(i)
                seen.add(docs[i])
                if len(batch) == size:
                    out.append(batch)
                    open_.remove((batch, seen))
                break
        else:
            if len(open_) < open_max:
                open_.append(([i], {docs[i]}))
    out += [b for b, _ in open_ if len(b) >= 2]
    return out


# ----- the training loop -----------------------------------------------------------------------
BatchFn = Callable[[int, list[int]], list[list[str]]]


@dataclass
class LoopResult:
    steps: int
    planned: int
    seconds: float
    stopped: str
    resumed_from: int
    best: dict[str, Any] | None
    evals: list[dict[str, Any]]


def _lr_factor(step: int, planned: int, warmup: float) -> float:
    """Linear warmup then linear decay to zero at ``planned`` steps."""
    warm = max(1, round(planned * warmup))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (planned - step) / max(1, planned - warm))


def run_training(
    out: Path,
    model: Any,
    loss: Any,
    batches: list[list[int]],
    make_batch: BatchFn,
    opts: TrainOptions,
    fingerprint: str,
    lengths: Sequence[int],
    evaluate: Callable[[], float] | None = None,
    eval_every: int = 0,
    patience: int = 2,
) -> LoopResult:
    """Train ``loss`` over ``batches`` (example indices) within the budget, resuming from and
    writing checkpoints in ``out``; ``make_batch(step, indices)`` gives the text columns and
    ``lengths`` the token budget of each column. ``evaluate`` (higher is better) runs every
    ``eval_every`` steps for early stopping; the best weights are returned in ``best``."""
    run = _Loop(out, model, loss, batches, make_batch, opts, fingerprint, lengths)
    run.evaluate, run.eval_every, run.patience = evaluate, eval_every, patience
    return run.run()


class _Loop:
    """``run_training``'s state and its steps: set up, resume, one optimizer step, the schedule
    fixed to the budget, evaluations, checkpoints, the reason to stop."""

    def __init__(
        self,
        out: Path,
        model: Any,
        loss: Any,
        batches: list[list[int]],
        make_batch: BatchFn,
        opts: TrainOptions,
        fingerprint: str,
        lengths: Sequence[int],
    ) -> None:
        self.out, self.model, self.loss, self.batches = out, model, loss, batches
        self.make_batch, self.opts, self.lengths = make_batch, opts, lengths
        self.fingerprint = fingerprint
        self.evaluate: Callable[[], float] | None = None
        self.eval_every, self.patience = 0, 2
        self.budget = opts.max_minutes * 60 if opts.max_minutes else math.inf
        self.step, self.elapsed, self.resumed_from = 0, 0.0, 0
        self.planned = min(len(batches), opts.max_steps or len(batches))
        if opts.max_minutes:  # provisional: the warmup is short until a step is timed
            self.planned = min(self.planned, 20)
        self.best: dict[str, Any] | None = None
        self.best_score, self.since_best = -math.inf, 0
        self.evals: list[dict[str, Any]] = []
        self.step_times: list[float] = []
        self._logf: Any = None  # the training log, open while the loop runs

    def run(self) -> LoopResult:
        from tqdm import tqdm

        self._setup_optimizer()
        done = self._resume()
        if done is not None:
            return done
        self._logf = logf = open(self.out / LOG_NAME, "a", encoding="utf-8")  # noqa: SIM115
        if self.resumed_from:
            self._log({"event": "resume", "step": self.step, "elapsed": round(self.elapsed, 1)})
        else:
            self._log({"event": "start", "planned": self.planned, "options": asdict(self.opts)})
        bar = tqdm(
            total=self.planned,
            initial=self.step,
            desc=f"{self.opts.method}",
            unit="step",
            disable=not self.opts.progress,
            dynamic_ncols=True,
        )
        stopped = "all steps done"
        last_ckpt = self.elapsed
        try:
            self.model.train()
            while True:
                reason = self._stop_reason()
                if reason is not None:
                    stopped = reason
                    break
                loss_value = self._step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}")
                if self._replan():
                    bar.total = self.planned
                    bar.refresh()
                if self._evaluate_now():
                    stopped = f"early stopping: no dev improvement in {self.patience} evaluations"
                    break
                if self.elapsed - last_ckpt >= self.opts.checkpoint_minutes * 60:
                    self._checkpoint(False)
                    last_ckpt = self.elapsed
            self._last_evaluation(stopped)
            self._checkpoint(True, stopped)
            self._log(
                {
                    "event": "end",
                    "step": self.step,
                    "elapsed": round(self.elapsed, 1),
                    "stopped": stopped,
                }
            )
        finally:
            bar.close()
            logf.close()
        return LoopResult(
            self.step,
            self.planned,
            self.elapsed,
            stopped,
            self.resumed_from,
            self.best,
            self.evals,
        )

    def _setup_optimizer(self) -> None:
        """Seeds, mixed precision on a GPU, AdamW over the loss's trainable parameters."""
        import torch

        self.out.mkdir(parents=True, exist_ok=True)
        random.seed(self.opts.seed)
        np.random.seed(self.opts.seed % 2**32)
        torch.manual_seed(self.opts.seed)
        cuda = self.model.device.type == "cuda"
        self.amp_dtype: Any = None
        self.scaler: Any = None
        if cuda:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            if self.amp_dtype == torch.float16:
                self.scaler = torch.amp.GradScaler("cuda")
        self.params = [p for p in dict.fromkeys(self.loss.parameters()) if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=self.opts.lr, weight_decay=0.01)

    def _resume(self) -> LoopResult | None:
        """Continue from this run's checkpoint, if any; a finished run's result as it was."""
        folder = load_checkpoint(self.out, self.fingerprint)
        if folder is None:
            return None
        meta, self.best = restore(folder, self.loss, self.optimizer, self.scaler)
        self.step, self.elapsed, self.planned = meta["step"], meta["elapsed"], meta["planned"]
        self.best_score = meta.get("best_score", -math.inf)
        self.since_best = meta.get("since_best", 0)
        self.evals = meta.get("evals", [])
        self.resumed_from = self.step
        if meta.get("done"):
            return LoopResult(
                self.step,
                self.planned,
                self.elapsed,
                meta.get("stopped", "done"),
                self.step,
                self.best,
                self.evals,
            )
        return None

    def _log(self, row: dict[str, Any]) -> None:
        self._logf.write(json.dumps(row) + "\n")
        self._logf.flush()

    def _stop_reason(self) -> str | None:
        """Why the loop stops before the next step (every step done, or the budget would be
        passed: half a typical step is left), or None."""
        opts = self.opts
        if self.step >= min(self.planned, len(self.batches)) or (
            opts.max_steps and self.step >= opts.max_steps
        ):
            return "all steps done"
        times = self.step_times
        if times and self.elapsed + 0.5 * sorted(times)[len(times) // 2] >= self.budget:
            return f"time budget of {opts.max_minutes:g} minutes reached"
        return None

    def _step(self) -> float:
        """One optimizer step on the next batch; its loss."""
        import torch

        t0 = time.perf_counter()
        optimizer, scaler, step = self.optimizer, self.scaler, self.step
        for group in optimizer.param_groups:
            group["lr"] = self.opts.lr * _lr_factor(step, self.planned, self.opts.warmup)
        columns = self.make_batch(step, self.batches[step])
        lengths = self.lengths
        feats = [
            features(self.model, col, lengths[min(i, len(lengths) - 1)])
            for i, col in enumerate(columns)
        ]
        optimizer.zero_grad(set_to_none=True)
        if self.amp_dtype is not None:
            with torch.autocast("cuda", dtype=self.amp_dtype):
                value = self.loss(feats, None)
        else:
            value = self.loss(feats, None)
        if scaler is not None:
            scaler.scale(value).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            scaler.step(optimizer)
            scaler.update()
        else:
            value.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            optimizer.step()
        self.step += 1
        dt = time.perf_counter() - t0
        self.elapsed += dt
        self.step_times.append(dt)
        loss_value = float(value.detach())
        self._log(
            {
                "step": self.step,
                "loss": round(loss_value, 5),
                "lr": optimizer.param_groups[0]["lr"],
                "elapsed": round(self.elapsed, 2),
                "examples": len(self.batches[self.step - 1]),
            }
        )
        return loss_value

    def _replan(self) -> bool:
        """After the first and the third timed step, fix the schedule to the steps the budget
        allows (the lr decays to zero there); True when it did."""
        opts, budget, times = self.opts, self.budget, self.step_times
        if not (len(times) in (1, 3) and (math.isfinite(budget) or opts.max_steps)):
            return False
        per_step = sorted(times)[len(times) // 2]
        fits = (
            self.step + int((budget - self.elapsed) / per_step)
            if math.isfinite(budget)
            else self.planned
        )
        n = len(self.batches)
        self.planned = max(self.step + 1, min(n, fits, opts.max_steps or n))
        self._log(
            {"event": "plan", "planned": self.planned, "seconds_per_step": round(per_step, 2)}
        )
        return True

    def _score(self) -> float:
        """The dev score of the weights now, logged."""
        assert self.evaluate is not None
        score = self.evaluate()
        self.evals.append({"step": self.step, "score": score})
        self._log({"event": "eval", "step": self.step, "score": score})
        return score

    def _keep_best(self) -> None:
        self.best = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def _evaluate_now(self) -> bool:
        """The periodic dev evaluation (every ``eval_every`` steps); True to stop early."""
        if self.evaluate is None or not self.eval_every or self.step % self.eval_every:
            return False
        score = self._score()
        self.model.train()
        if score > self.best_score:
            self.best_score, self.since_best = score, 0
            self._keep_best()
            return False
        self.since_best += 1
        return self.since_best >= self.patience

    def _last_evaluation(self, stopped: str) -> None:
        """The final weights evaluated too, unless they just were (or the run stopped early)."""
        if (
            self.evaluate is not None
            and (not self.evals or self.evals[-1]["step"] != self.step)
            and not stopped.startswith("early")
        ):
            score = self._score()
            if score > self.best_score:
                self.best_score = score
                self._keep_best()

    def _checkpoint(self, done: bool, stopped: str = "") -> None:
        save_checkpoint(
            self.out,
            self.loss,
            self.optimizer,
            self.scaler,
            {
                "fingerprint": self.fingerprint,
                "step": self.step,
                "elapsed": self.elapsed,
                "planned": self.planned,
                "done": done,
                "stopped": stopped,
                "best_score": self.best_score,
                "since_best": self.since_best,
                "evals": self.evals,
            },
            self.best,
        )

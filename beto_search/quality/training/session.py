"""The skeleton ``adapt`` and ``train`` share, step by step: the options checked, the index's
chunks read, the output folder checked, the start model loaded, the epochs ordered into
batches, the run's fingerprint (what resuming a checkpoint requires to match), the self-check
before and after the shared loop, and the report and the written folder.

Each command keeps only what is its own: ``adapt`` its examples (pseudo-queries) and held-out
check, ``train`` its labelled pairs, mined negatives and dev split.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InputError
from .checks import RetrievalCheck
from .loop import BatchFn, LoopResult, doc_distinct_batches, run_training
from .model_io import check_out, finish, load_start_model
from .options import TrainOptions, TrainReport
from .sampling import ChunkSample, index_chunks

if TYPE_CHECKING:
    import os

    from ...index.manifest import Manifest
    from ...index.store import StoredChunk
    from ...protocols import EngineLike

log = logging.getLogger(__name__)


def check_batch_size(opts: TrainOptions) -> None:
    """In-batch negatives need at least one other example per batch."""
    if opts.batch_size < 2:
        raise InputError(
            "the batch size must be at least 2 (the other examples are the negatives)."
        )


def every_chunk(engine: EngineLike) -> ChunkSample:
    """All of the index's chunks (``train``: its positives may be anywhere) as a ``ChunkSample``."""
    manifest, chunks = index_chunks(engine)
    return ChunkSample(manifest, chunks, len(chunks), max(c.chunk_id for c in chunks))


@dataclass
class Session:
    """One run of ``adapt`` or ``train``: where it writes, its options, the chunks it read, and
    (after ``start_model``) the model and its lengths."""

    out: Path
    opts: TrainOptions
    sample: ChunkSample
    model: Any = None
    base_len: int = 0  # the index's max length: the self-checks and the written model use it
    max_len: int = 0  # training positives' token budget (at most base_len)
    steps_per_epoch: int = 1
    started: float = 0.0

    @classmethod
    def begin(cls, out: str | os.PathLike[str], opts: TrainOptions, sample: ChunkSample) -> Session:
        """After the chunks are read: the output folder must be new, a run to resume, or forced."""
        folder = Path(out)
        check_out(folder, opts.force)
        return cls(folder, opts, sample)

    @property
    def manifest(self) -> Manifest:
        return self.sample.manifest

    @property
    def chunks(self) -> list[StoredChunk]:
        return self.sample.chunks

    def start_model(self) -> Any:
        """The index's model as a private fp32 copy to train, seeded (TSDAE's decoder is
        initialised with random weights), at the index's max length."""
        import torch

        torch.manual_seed(self.opts.seed)
        self.model = load_start_model(self.manifest, self.opts.device)
        self.base_len = int(self.manifest.max_length or self.model.max_seq_length)
        self.max_len = min(self.opts.max_length, self.base_len)
        self.model.max_seq_length = self.base_len
        return self.model

    def plan(self, docs: Sequence[str], default_epochs: int) -> list[list[int]]:
        """The batches of the whole run: each epoch a seeded order of the examples (``docs``:
        each one's document or positive), cut so no batch holds one document twice. With a
        budget, as many epochs as fit (the schedule is precomputed: keep it bounded)."""
        opts = self.opts
        per_epoch = max(1, len(docs) // opts.batch_size)
        epochs = opts.epochs or (
            default_epochs if not opts.max_minutes else max(1, min(100, 20000 // per_epoch))
        )
        order: list[int] = []
        for epoch in range(epochs):
            part = list(range(len(docs)))
            random.Random(f"{opts.seed}-{epoch}").shuffle(part)
            order += part
        batches = doc_distinct_batches(docs, order, opts.batch_size)
        self.steps_per_epoch = max(1, len(batches) // epochs)
        return batches

    def fingerprint(self, command: str, **extra: Any) -> str:
        """What a checkpoint must match to be resumed: the settings, the model and the index."""
        return self.opts.fingerprint(
            {
                "command": command,
                "encoder": self.manifest.encoder,
                "chunks": self.sample.total,
                "last_chunk": self.sample.last_id,
                **extra,
            }
        )

    def train(
        self,
        check: RetrievalCheck,
        loss: Any,
        batches: list[list[int]],
        make_batch: BatchFn,
        fingerprint: str,
        lengths: Sequence[int],
        evaluate: Callable[[], float] | None = None,
        eval_every: int = 0,
    ) -> tuple[dict[str, float], LoopResult, dict[str, float]]:
        """The self-check, the shared loop (the best weights kept when ``evaluate`` picked
        them), the self-check again: (before, the loop's result, after)."""
        self.started = time.perf_counter()
        before = check.score(self.model, self.base_len)
        if self.opts.progress:
            log.info("before: %s", before)
        result = run_training(
            self.out,
            self.model,
            loss,
            batches,
            make_batch,
            self.opts,
            fingerprint,
            lengths,
            evaluate=evaluate,
            eval_every=eval_every,
        )
        if result.best is not None:
            self.model.load_state_dict(result.best)
        return before, result, check.score(self.model, self.base_len)

    def report(
        self,
        command: str,
        examples: int,
        result: LoopResult,
        before: dict[str, float],
        after: dict[str, float],
        check: str,
        check_queries: int,
        **options: Any,
    ) -> TrainReport:
        """The run's report (not yet written); ``options``: facts added to its options."""
        return TrainReport(
            out=str(self.out),
            command=command,
            method=self.opts.method,
            base_model=self.manifest.encoder,
            examples=examples,
            steps=result.steps,
            planned_steps=result.planned,
            epochs_done=result.steps / self.steps_per_epoch,
            seconds=result.seconds,
            stopped=result.stopped,
            before=before,
            after=after,
            check=check,
            check_queries=check_queries,
            written=False,
            resumed_from=result.resumed_from,
            options={**asdict(self.opts), "wall_seconds": self.wall_seconds(), **options},
            index_chunks=self.sample.total,
            chunks_sampled=len(self.sample.chunks),
        )

    def wall_seconds(self) -> float:
        return round(time.perf_counter() - self.started, 1)

    def finish(self, report: TrainReport, model: Any, extra: str = "") -> TrainReport:
        """Refuse a worse model (unless forced), else write it with its card (``finish``)."""
        return finish(report, model, self.out, self.manifest, self.sample.total, extra)

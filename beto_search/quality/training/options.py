"""The settings and the report of ``adapt`` and ``train``, and the names the CLI shows.

Nothing here imports torch or numpy: ``beto_search.cli`` imports this module for its options
(``METHODS``, ``DEFAULT_METHOD``, ``ADAPT_CHUNKS_MAX``) without loading the training loop.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ...errors import BetoSearchError, InputError

METHODS = ("ict", "ict-hard", "crop", "tsdae")
DEFAULT_METHOD = "ict"
METHOD_NAMES = {
    "ict": "inverse cloze (sentence -> rest of its chunk), in-batch negatives, "
    "MultipleNegativesRankingLoss",
    "ict-hard": "inverse cloze plus one hard negative per query from the index's lexical side, "
    "MultipleNegativesRankingLoss",
    "crop": "independent cropping (two random spans of a chunk), in-batch negatives, "
    "MultipleNegativesRankingLoss",
    "mnrl-hard": "labelled pairs with one mined hard negative each, in-batch negatives, "
    "MultipleNegativesRankingLoss, early stopping on a dev split",
    "tsdae": "TSDAE denoising auto-encoder on the chunks' sentences (DenoisingAutoEncoderLoss)",
}
CHECKPOINT = "checkpoint"
LOG_NAME = "training_log.jsonl"
CHECK_CORPUS_MAX = 5000  # chunks scored by the self-check; more are sampled
# Chunks ``adapt`` holds in memory at most: a larger index is read as a stream and a uniform
# sample of this many kept (reservoir sampling, as ``tune`` does). What a kept chunk costs is
# mostly its inverse-cloze examples: one per sentence (~18 in a 510-token BETO chunk), each with
# the chunk minus that sentence as its positive. Measured: ~50 KB per 2,300-character chunk, so
# ~250 MB for 5,000 chunks, whatever the size of the index. 5,000 such chunks give ~90,000
# examples, ~2,800 batches of 32 per epoch: days on a CPU, about an hour on a GPU.
ADAPT_CHUNKS_MAX = 5_000
CROPS_PER_CHUNK = 4


class WorseModelError(BetoSearchError):
    """The trained model scored worse than the starting one on held-out queries."""


@dataclass
class TrainOptions:
    """Settings shared by ``adapt`` and ``train`` (those in the fingerprint decide resuming)."""

    method: str = DEFAULT_METHOD
    max_minutes: float | None = None
    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    lr: float = 1e-4
    max_length: int = 256  # tokens of positives during training (queries: query_length)
    query_length: int = 64
    warmup: float = 0.1
    checkpoint_minutes: float = 3.0
    force: bool = False
    progress: bool = False
    layers: int | None = None  # adapt: distil a student keeping this many transformer layers
    distil_minutes: float = 2.0  # adapt --layers: the distillation's own time budget
    distil_steps: int | None = None  # adapt --layers: stop the distillation after N steps
    max_chunks: int = ADAPT_CHUNKS_MAX  # adapt: chunks held in memory (a sample of larger indexes)

    def fingerprint(self, extra: dict[str, Any]) -> str:
        keep = {
            k: v
            for k, v in asdict(self).items()
            if k
            not in (
                "max_minutes",
                "max_steps",
                "device",
                "checkpoint_minutes",
                "force",
                "progress",
                # the teacher's training does not depend on the student: a run with --layers
                # resumes (or reuses) the teacher's checkpoint
                "layers",
                "distil_minutes",
                "distil_steps",
                # in the fingerprint only when it samples (adapt adds it): a run on an index
                # below the cap resumes the checkpoints written before the cap existed
                "max_chunks",
            )
        }
        blob = json.dumps({**keep, **extra}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class TrainReport:
    """What a run of ``adapt`` or ``train`` did, and where it wrote."""

    out: str
    command: str
    method: str
    base_model: str
    examples: int
    steps: int
    planned_steps: int
    epochs_done: float
    seconds: float
    stopped: str
    before: dict[str, float]
    after: dict[str, float]
    check: str
    check_queries: int
    written: bool
    resumed_from: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    distillation: dict[str, Any] | None = None  # adapt --layers: teacher, student, steps, checks
    index_chunks: int = 0  # chunks in the index
    chunks_sampled: int = 0  # adapt: chunks read into memory (all, or a sample of max_chunks)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_options(**options: Any) -> TrainOptions:
    """``TrainOptions`` from keyword arguments; an unknown one is a one-sentence error."""
    known = {f.name for f in fields(TrainOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(
            f"unknown training option {unknown[0]!r}; known: {', '.join(sorted(known))}."
        )
    return TrainOptions(**{k: v for k, v in options.items() if v is not None})

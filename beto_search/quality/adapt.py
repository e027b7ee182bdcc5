"""The path ``beto_search.quality.adapt`` of the module ``adapt.py`` was: its names, now in
``beto_search.quality.training`` (``adapt`` in ``training.adapt``, the options in
``training.options``, the loop in ``training.loop``, ...), imported from there on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .training.adapt import adapt
    from .training.checks import RetrievalCheck, cloze_check
    from .training.distil import check_layers, distil, distillation_card, kept_layers, make_student
    from .training.loop import BatchFn, LoopResult, doc_distinct_batches, run_training
    from .training.model_io import (
        check_out,
        embed,
        features,
        finish,
        load_checkpoint,
        load_start_model,
        model_card,
        restore,
        save_checkpoint,
        write_model,
    )
    from .training.options import (
        ADAPT_CHUNKS_MAX,
        CHECK_CORPUS_MAX,
        CHECKPOINT,
        CROPS_PER_CHUNK,
        DEFAULT_METHOD,
        LOG_NAME,
        METHOD_NAMES,
        METHODS,
        TrainOptions,
        TrainReport,
        WorseModelError,
        train_options,
    )
    from .training.sampling import ChunkSample, index_chunks, sample_index_chunks

# name -> the module that defines it (imported on first use)
_WHERE = {
    "ADAPT_CHUNKS_MAX": ".training.options",
    "CHECK_CORPUS_MAX": ".training.options",
    "CHECKPOINT": ".training.options",
    "CROPS_PER_CHUNK": ".training.options",
    "DEFAULT_METHOD": ".training.options",
    "LOG_NAME": ".training.options",
    "METHOD_NAMES": ".training.options",
    "METHODS": ".training.options",
    "TrainOptions": ".training.options",
    "TrainReport": ".training.options",
    "WorseModelError": ".training.options",
    "train_options": ".training.options",
    "check_out": ".training.model_io",
    "embed": ".training.model_io",
    "features": ".training.model_io",
    "finish": ".training.model_io",
    "load_checkpoint": ".training.model_io",
    "load_start_model": ".training.model_io",
    "model_card": ".training.model_io",
    "restore": ".training.model_io",
    "save_checkpoint": ".training.model_io",
    "write_model": ".training.model_io",
    "BatchFn": ".training.loop",
    "LoopResult": ".training.loop",
    "doc_distinct_batches": ".training.loop",
    "run_training": ".training.loop",
    "RetrievalCheck": ".training.checks",
    "cloze_check": ".training.checks",
    "ChunkSample": ".training.sampling",
    "index_chunks": ".training.sampling",
    "sample_index_chunks": ".training.sampling",
    "check_layers": ".training.distil",
    "distil": ".training.distil",
    "distillation_card": ".training.distil",
    "kept_layers": ".training.distil",
    "make_student": ".training.distil",
    "adapt": ".training.adapt",
    "_examples": ".training.adapt",
    "_tsdae_noise": ".training.adapt",
}
__all__ = [
    "ADAPT_CHUNKS_MAX",
    "CHECKPOINT",
    "CHECK_CORPUS_MAX",
    "CROPS_PER_CHUNK",
    "DEFAULT_METHOD",
    "LOG_NAME",
    "METHODS",
    "METHOD_NAMES",
    "BatchFn",
    "ChunkSample",
    "LoopResult",
    "RetrievalCheck",
    "TrainOptions",
    "TrainReport",
    "WorseModelError",
    "adapt",
    "check_layers",
    "check_out",
    "cloze_check",
    "distil",
    "distillation_card",
    "doc_distinct_batches",
    "embed",
    "features",
    "finish",
    "index_chunks",
    "kept_layers",
    "load_checkpoint",
    "load_start_model",
    "make_student",
    "model_card",
    "restore",
    "run_training",
    "sample_index_chunks",
    "save_checkpoint",
    "train_options",
    "write_model",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __package__), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])

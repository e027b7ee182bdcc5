"""Training the index's model: ``adapt`` (no labels: pseudo-queries from its own chunks) and
``train`` (labelled queries and qrels, or pairs), on one skeleton and one loop.

| module | owns |
| --- | --- |
| ``options`` | ``TrainOptions``, ``TrainReport``, the method names; no torch (the CLI imports it) |
| ``session`` | the steps both commands take: options, chunks, output folder, start model, epochs, fingerprint, report |
| ``loop`` | the shared training loop (budget, checkpoints, resume, early stopping) and doc-distinct batches |
| ``model_io`` | the start model, features and embeddings, checkpoints on disk, the written folder and its card |
| ``checks`` | the held-out self-checks, scored by ``..scoring`` |
| ``sampling`` | the chunks a run reads (all, or a uniform sample streamed from the index) |
| ``distil`` | ``adapt --layers``: a shallower student |
| ``adapt`` | ``adapt`` |
| ``labelled`` | ``train`` |

The names are imported from their module on first use, so importing ``training.options`` (or
this package) loads neither torch nor the loop. ``adapt`` and ``distil`` are also module names
here: import those two functions from ``training.adapt`` and ``training.distil`` (or
``quality.adapt``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checks import RetrievalCheck, cap_corpus, cloze_check
    from .distil import check_layers, distillation_card, kept_layers, make_student
    from .labelled import (
        MINE_DEPTH,
        MINE_PICK,
        NEAR_DUPLICATE,
        Example,
        mine_negative,
        near_duplicate,
        qrels_examples,
        read_pairs,
        train,
    )
    from .loop import BatchFn, LoopResult, doc_distinct_batches, run_training
    from .model_io import (
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
    from .options import (
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
    from .sampling import ChunkSample, index_chunks, sample_index_chunks
    from .session import Session

# name -> the module that defines it (imported on first use)
_WHERE = {
    "ADAPT_CHUNKS_MAX": ".options",
    "CHECK_CORPUS_MAX": ".options",
    "CHECKPOINT": ".options",
    "CROPS_PER_CHUNK": ".options",
    "DEFAULT_METHOD": ".options",
    "LOG_NAME": ".options",
    "METHOD_NAMES": ".options",
    "METHODS": ".options",
    "TrainOptions": ".options",
    "TrainReport": ".options",
    "WorseModelError": ".options",
    "train_options": ".options",
    "check_out": ".model_io",
    "embed": ".model_io",
    "features": ".model_io",
    "finish": ".model_io",
    "load_checkpoint": ".model_io",
    "load_start_model": ".model_io",
    "model_card": ".model_io",
    "restore": ".model_io",
    "save_checkpoint": ".model_io",
    "write_model": ".model_io",
    "BatchFn": ".loop",
    "LoopResult": ".loop",
    "doc_distinct_batches": ".loop",
    "run_training": ".loop",
    "RetrievalCheck": ".checks",
    "cap_corpus": ".checks",
    "cloze_check": ".checks",
    "ChunkSample": ".sampling",
    "index_chunks": ".sampling",
    "sample_index_chunks": ".sampling",
    "check_layers": ".distil",
    "distillation_card": ".distil",
    "kept_layers": ".distil",
    "make_student": ".distil",
    "Session": ".session",
    "MINE_DEPTH": ".labelled",
    "MINE_PICK": ".labelled",
    "NEAR_DUPLICATE": ".labelled",
    "Example": ".labelled",
    "mine_negative": ".labelled",
    "near_duplicate": ".labelled",
    "qrels_examples": ".labelled",
    "read_pairs": ".labelled",
    "train": ".labelled",
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
    "MINE_DEPTH",
    "MINE_PICK",
    "NEAR_DUPLICATE",
    "BatchFn",
    "ChunkSample",
    "Example",
    "LoopResult",
    "RetrievalCheck",
    "Session",
    "TrainOptions",
    "TrainReport",
    "WorseModelError",
    "cap_corpus",
    "check_layers",
    "check_out",
    "cloze_check",
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
    "mine_negative",
    "model_card",
    "near_duplicate",
    "qrels_examples",
    "read_pairs",
    "restore",
    "run_training",
    "sample_index_chunks",
    "save_checkpoint",
    "train",
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

"""The rerank stage: a cross-encoder rescoring (query, passage) pairs, at several precisions.

``open_reranker(model, precision)`` loads a sentence-transformers ``CrossEncoder`` (a hub id or
a local folder; the Hugging Face cache and ``HF_HUB_OFFLINE`` apply; ``trust_remote_code`` stays
off) with one relevance score per pair, the same way ``backends.open_encoder`` loads an encoder:

    fp32, bf16, fp16      torch (``CrossEncoder.predict``; bf16/fp16 under autocast)
    onnx-fp32, onnx-int8  ONNX Runtime over the cross-encoder's body, exported and quantized by
                          ``backends/onnx.py`` (``export_onnx``, ``quantize``, ``optimise``)
    ov-int8               OpenVINO static int8 (``backends/openvino.py``: ``convert``,
                          ``quantize``), calibrated on pairs from the shipped Spanish texts
    auto                  what ``backends/auto.py`` picks for the encoder on this machine

The compiled graphs are the model's BERT body (last hidden state, the graph the encoder
backends build); the classification head (BERT's pooler + classifier, or RoBERTa's dense +
out_proj) is a few small matrices applied in numpy to the first token, so the body goes through
exactly the encoder's export and quantization code. A compiled reranker is built once per
model, precision and library versions into ``$BETO_SEARCH_CACHE/rerank/<key>/``; at build time
its scores are checked against the torch fp32 scores of the same model on Spanish pairs (the
quality check of the compiled encoders: agreement with fp32), recorded in the folder's
``reranker.json`` and logged as a warning when the ranking moves (``MIN_AGREEMENT``).

The package: ``torch.py`` (``TorchReranker``, ``load_cross_encoder``), ``compiled.py``
(``build``, ``agreement``, ``CompiledReranker``), and here the ``Reranker`` protocol, the choice
of precision and ``open_reranker``. ``Searcher.search(..., rerank=...)`` applies a reranker to the
best passage of each of the top ``rerank_depth`` documents after fusion; ``SearchEngine.reranker``
keeps loaded rerankers.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..encoder import DEVICES
from ..errors import InputError
from .compiled import (
    CHECK_PAIRS,
    COMPILED_PRECISIONS,
    HEAD_FILE,
    META_FILE,
    MIN_AGREEMENT,
    TOKENIZER_FILE,
    CompiledReranker,
    agreement,
    build,
    cache_folder,
    check_pairs,
    is_built,
    settings,
)
from .torch import TORCH_PRECISIONS, TorchReranker, load_cross_encoder

log = logging.getLogger(__name__)

RERANK_PRECISIONS = (*TORCH_PRECISIONS, *COMPILED_PRECISIONS)
PRECISIONS = ("auto", *RERANK_PRECISIONS)
DEFAULT_DEPTH = 30
ENV_MODEL = "BETO_SEARCH_RERANKER"  # the model ``--rerank`` without a value uses


@runtime_checkable
class Reranker(Protocol):
    """Anything that scores (query, passage) pairs: higher means more relevant."""

    name: str
    precision: str

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        """One float per passage (float64 array), for ``query``."""
        ...


def choose_precision(device: str = "auto") -> tuple[str, str]:
    """(rerank precision, reason): the encoder's ``auto`` choice (backends/auto.py), kept when
    the rerank stage runs it and fp32 otherwise."""
    from ..backends.auto import choose_precision as encoder_choice

    chosen, why = encoder_choice(device)
    if chosen in RERANK_PRECISIONS:
        return chosen, why
    return "fp32", f"{why}; the rerank stage has no {chosen}, so fp32"


def open_reranker(
    model: str | os.PathLike[str],
    precision: str = "auto",
    device: str = "auto",
    batch_size: int = 16,
    revision: str | None = None,
) -> Reranker:
    """The reranker of ``model`` (a CrossEncoder hub id or folder) at ``precision``."""
    if precision not in PRECISIONS:
        raise InputError(
            f"rerank precision must be one of {', '.join(PRECISIONS)}, not '{precision}'."
        )
    if device not in DEVICES:
        raise InputError(f"device must be one of {', '.join(DEVICES)}, not '{device}'.")
    if batch_size < 1:
        raise InputError("batch size must be at least 1.")
    name = str(model)
    if not name.strip():
        raise InputError(
            f"no reranker was named; pass --rerank MODEL or set {ENV_MODEL} to a cross-encoder."
        )
    note = None
    if precision == "auto":
        precision, note = choose_precision(device)
        log.info("rerank precision %s (%s)", precision, note)
    reranker: Any
    if precision in TORCH_PRECISIONS:
        reranker = TorchReranker(name, precision, device, batch_size, revision)
    else:
        if device == "cuda":
            raise InputError(
                f"rerank precision {precision} runs on the CPU only; use fp32 or bf16 on a GPU."
            )
        if precision == "ov-int8":
            from ..backends.openvino import require_openvino

            require_openvino(precision)
        else:
            from ..backends.onnx import require_onnxruntime

            require_onnxruntime(precision)
        path = Path(name).expanduser()
        if path.is_dir():
            name = str(path.resolve())
        folder = cache_folder(name, revision, precision)
        if not is_built(folder, precision):
            build(name, revision, precision, folder)
        reranker = CompiledReranker(folder, precision, batch_size=batch_size, name=str(model))
    reranker.precision_note = note
    return reranker


def rerank_model(model: str | None) -> str:
    """The reranker a bare ``--rerank`` means: ``model``, else ``$BETO_SEARCH_RERANKER``."""
    chosen = model or os.environ.get(ENV_MODEL) or ""
    if not chosen.strip():
        raise InputError(
            f"--rerank needs a model: pass --rerank MODEL (a cross-encoder folder or hub id) or "
            f"set {ENV_MODEL}."
        )
    return chosen


__all__ = [
    "CHECK_PAIRS",
    "COMPILED_PRECISIONS",
    "DEFAULT_DEPTH",
    "ENV_MODEL",
    "HEAD_FILE",
    "META_FILE",
    "MIN_AGREEMENT",
    "PRECISIONS",
    "RERANK_PRECISIONS",
    "TOKENIZER_FILE",
    "TORCH_PRECISIONS",
    "CompiledReranker",
    "Reranker",
    "TorchReranker",
    "agreement",
    "build",
    "cache_folder",
    "check_pairs",
    "choose_precision",
    "is_built",
    "load_cross_encoder",
    "open_reranker",
    "rerank_model",
    "settings",
]

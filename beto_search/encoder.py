"""The encoder protocols, the choice lists, and helpers shared by every backend.

``Encoder`` is what a custom encoder implements (texts in, normalised float32 vectors out).
``TokenEncoder`` adds what the engine needs from a model-backed encoder: the tokenizer the
chunker counts with, the model window, embedding of token ids, and the facts the manifest
records. The backends (torch, ONNX Runtime, OpenVINO) live in ``beto_search.backends``;
``backends.open_encoder`` builds one per precision and ``BetoEncoder`` (the torch backend) is
``beto_search.BetoEncoder``. This module is a leaf: it imports nothing of the package, so the
backends, the index and the light query path all import it without importing a backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

DEFAULT_MODEL = "dccuchile/bert-base-spanish-wwm-uncased"
POOLINGS = ("mean", "max", "cls")
# concrete precisions, by backend: torch, ONNX Runtime, OpenVINO (see backends/factory.py)
CONCRETE_PRECISIONS = (
    "fp32",
    "bf16",
    "fp16",
    "int8",
    "onnx-fp32",
    "onnx-int8",
    "ov-int8",
    "ov-bf16",
)
PRECISIONS = ("auto", *CONCRETE_PRECISIONS)  # "auto": chosen for the hardware (backends/auto.py)
DEVICES = ("auto", "cpu", "cuda")


@runtime_checkable
class Encoder(Protocol):
    """Anything that turns texts into normalised float32 vectors of a fixed dimension."""

    name: str
    dimension: int

    def encode_documents(self, texts: list[str]) -> np.ndarray: ...

    def encode_queries(self, texts: list[str]) -> np.ndarray: ...


@runtime_checkable
class TokenEncoder(Encoder, Protocol):
    """A model-backed encoder: chunks are cut with its tokenizer and embedded from token ids."""

    max_length: int  # the model window, special tokens included

    @property
    def tokenizer(self) -> Any:
        """A Hugging Face tokenizer (the chunker asks it for offsets)."""
        ...

    def encode_token_ids(self, token_ids: list[list[int]]) -> np.ndarray:
        """Embeddings of token-id lists given WITHOUT special tokens."""
        ...

    def describe(self) -> dict[str, Any]:
        """encoder, revision, pooling, dimension, max_length, precision, precision_note,
        normalized: the facts an index's manifest records."""
        ...


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise rows as float32 (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags

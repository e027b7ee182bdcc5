"""The one test encoder: a hashed bag of words (not BETO), importable by tests and by the scripts
that tests run in subprocesses (``sys.path.insert(0, TESTS_DIR); from encoders import ...``)."""

from __future__ import annotations

import re
import zlib

import numpy as np


class HashEncoder:
    """A custom encoder: hashed bag of words, fast and deterministic (no tokenizer: the chunker
    counts words). ``calls`` counts the encode calls."""

    name = "test-hash-encoder"
    dimension = 64
    pooling = None

    def __init__(self) -> None:
        self.calls = 0

    def _encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[i, zlib.crc32(word.encode("utf-8", "replace")) % self.dimension] += 1.0
            out[i, 0] += 1e-3
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)


class SmallHashEncoder(HashEncoder):
    """The same encoder in 32 dimensions, named 'hash-encoder' (the crash and bad-input tests)."""

    name = "hash-encoder"
    dimension = 32

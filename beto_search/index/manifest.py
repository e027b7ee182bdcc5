"""The manifest: the settings an index is created with, typed, and the checks made against them.

Written once when the first document is stored (``Manifest.for_encoder``), read on every open
(``Manifest.from_store``) and checked against the options and the encoder (``check_options``,
``check_encoder``); a mismatch is a one-sentence ``ManifestMismatchError``, never a silent mix.
Only ``fusion`` (the tuned default) and ``generation`` (+1 at each re-embedding) change later.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._version import __version__
from ..chunking import Chunker, check_chunk_size
from ..errors import ManifestMismatchError
from ..vector_index import IndexSpec

if TYPE_CHECKING:
    from ..encoder import Encoder
    from .store import Store

FORMAT_VERSION = 1  # unchanged by the redesign: same tables and columns, new keys are optional
WORD_BUDGET = 200  # chunk size in words for encoders without a tokenizer
DEFAULT_OVERLAP = 64


@dataclass
class IndexOptions:
    """Settings asked for when opening an index (None: the index's own, or the default)."""

    model: str | None = None
    pooling: str | None = None
    index_type: str | None = None
    chunk_tokens: int | None = None
    overlap: int | None = None


@dataclass
class Manifest:
    """Settings fixed when the index was created (plus its tuned fusion and its generation)."""

    encoder: str
    dimension: int
    revision: str | None = None
    pooling: str | None = None
    normalized: bool = True
    max_length: int | None = None
    precision: str = "fp32"
    precision_note: str | None = None  # why `auto` chose this precision
    tokenizer: str = "words"  # "model": chunks are token windows of the model's tokenizer
    chunk_tokens: int = WORD_BUDGET
    overlap: int = 0
    index: dict[str, Any] = field(default_factory=lambda: IndexSpec().to_dict())
    fusion: dict[str, Any] | None = (
        None  # the tuned default, e.g. {"method": "convex", "alpha": .5}
    )
    generation: int = 0
    format_version: int = FORMAT_VERSION
    package_version: str = __version__
    created_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # keys of a newer version, kept as they are

    # ----- reading and writing -------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        out = cls(**{k: v for k, v in data.items() if k in known})
        out.extra = {k: v for k, v in data.items() if k not in known}
        return out

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **out}

    @classmethod
    def from_store(cls, store: Store) -> Manifest | None:
        data = store.manifest()
        return cls.from_dict(data) if data else None

    def save(self, store: Store) -> None:
        """Write every key (caller's transaction)."""
        store.write_manifest(self.to_dict())

    # read-only mapping access for code written against the old dict (``manifest["pooling"]``)
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    @property
    def spec(self) -> IndexSpec:
        return IndexSpec.from_dict(self.index)

    # ----- creation ------------------------------------------------------------------------
    @classmethod
    def for_encoder(cls, enc: Encoder, options: IndexOptions) -> Manifest:
        """Probe the encoder's real output and record the index's settings (first write)."""
        probe = np.asarray(enc.encode_documents(["prueba de dimensión"]))
        if probe.ndim != 2 or probe.shape[1] != int(enc.dimension):
            raise ManifestMismatchError(
                f"the encoder '{enc.name}' says dimension {enc.dimension} but produced vectors of "
                f"shape {probe.shape}; nothing was written."
            )
        tokenizer = getattr(enc, "tokenizer", None)
        max_length = int(getattr(enc, "max_length", 0) or getattr(enc, "max_seq_length", 0) or 0)
        chunk_tokens = options.chunk_tokens or (
            max_length - 2 if tokenizer is not None and max_length else WORD_BUDGET
        )
        overlap = (
            options.overlap
            if options.overlap is not None
            else min(DEFAULT_OVERLAP, chunk_tokens // 4)
        )
        if tokenizer is not None:
            check_chunk_size(chunk_tokens, max_length)
        Chunker(None, chunk_tokens, overlap)  # validates the sizes
        describe = getattr(enc, "describe", None)
        facts = describe() if callable(describe) else {}
        spec = IndexSpec(type=options.index_type) if options.index_type else IndexSpec()
        return cls(
            encoder=enc.name,
            dimension=int(enc.dimension),
            revision=facts.get("revision", getattr(enc, "revision", None)),
            pooling=getattr(enc, "pooling", None),
            max_length=max_length or None,
            precision=getattr(enc, "precision", "fp32"),
            precision_note=facts.get("precision_note", getattr(enc, "precision_note", None)),
            tokenizer="model" if tokenizer is not None else "words",
            chunk_tokens=chunk_tokens,
            overlap=overlap,
            index=spec.to_dict(),
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )

    # ----- checks --------------------------------------------------------------------------
    def check_options(self, folder: Path, options: IndexOptions) -> None:
        """Refuse a newer format, and options that disagree with the index's settings."""
        if self.format_version > FORMAT_VERSION:
            raise ManifestMismatchError(
                f"the index at {folder} was written by a newer beto-search (format "
                f"{self.format_version}); upgrade beto-search."
            )
        checks = [
            ("model", options.model, self.encoder),
            ("pooling", options.pooling, self.pooling),
            ("index type", options.index_type, self.index.get("type")),
            ("chunk size", options.chunk_tokens, self.chunk_tokens),
            ("overlap", options.overlap, self.overlap),
        ]
        for what, asked, have in checks:
            if asked is not None and have is not None and asked != have:
                raise ManifestMismatchError(
                    f"the index at {folder} was created with {what} '{have}', not '{asked}'; "
                    f"use another --index for a different {what}."
                )

    def check_encoder(self, folder: Path, encoder: Encoder) -> None:
        """Refuse an encoder other than the index's (name, pooling, dimension)."""
        pooling = getattr(encoder, "pooling", None)
        if encoder.name != self.encoder or (pooling and self.pooling and pooling != self.pooling):
            raise ManifestMismatchError(
                f"the index at {folder} was built with encoder '{self.encoder}' "
                f"(pooling {self.pooling}), not '{encoder.name}' (pooling {pooling}); "
                f"query it with its own encoder or use another --index."
            )
        if int(encoder.dimension) != int(self.dimension):
            raise ManifestMismatchError(
                f"the encoder '{encoder.name}' gives {encoder.dimension}-dimensional vectors but the "
                f"index holds {self.dimension}-dimensional ones."
            )

"""What the layers above the engine may use of it: structural types (``typing.Protocol``) of the
public methods of ``SearchEngine`` and ``ShardedEngine``.

``quality/`` (evaluation, tuning, pseudo-queries, adapt, train), ``server/`` and
``distributed.py`` type the engine they are given by these, never by ``engine.py`` or
``shards``, so the import graph keeps no cycle (ARCHITECTURE.md) while both engines fit
unchanged: ``tests/test_protocols.py`` assigns each engine to each protocol and mypy checks it.
Each protocol names exactly the methods its callers use today; a caller that needs another one
adds it here (and both engines must have it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from .analyzer import SpanishAnalyzer
    from .encoder import Encoder
    from .index.indexer import Embedder
    from .index.manifest import Manifest
    from .index.store import StoredChunk
    from .ingest import IngestSummary
    from .rerank import Reranker
    from .types import Document, Hit, SearchResults


class StoreView(Protocol):
    """The read-only store facts quality/ reads (``Store``, and ``ShardedStore`` over shards)."""

    def snapshot(self) -> AbstractContextManager[None]: ...

    def hashes(self, ids: Iterable[str]) -> dict[str, str]: ...

    def ids_by_title(self, titles: list[str]) -> list[tuple[str, str]]: ...

    def chunk_count(self) -> int: ...


class EncoderSource(Protocol):
    """An engine's encoder and manifest (``distributed.RayEmbedder.for_engine``)."""

    @property
    def encoder(self) -> Encoder: ...

    @property
    def manifest(self) -> Manifest | None: ...


class Reads(Protocol):
    """Reads every engine has (the local ones and the Ray Serve ingress)."""

    @property
    def manifest(self) -> Manifest | None: ...

    @property
    def query_encoder(self) -> Encoder: ...

    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "hybrid",
        fusion: str | None = None,
        alpha: float | None = None,
        where: dict[str, str] | None = None,
        source: str | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
        snippets: bool = True,
        query_vector: np.ndarray | None = None,
        rerank: str | os.PathLike[str] | Reranker | bool | None = None,
        rerank_depth: int = ...,
        rerank_precision: str | None = None,
    ) -> SearchResults: ...

    def similar(self, doc_id: str, k: int = 10) -> list[Hit]: ...

    def get_document(self, doc_id: str) -> dict[str, Any] | None: ...

    def info(self) -> dict[str, Any]: ...

    def reranker(self, model: str | os.PathLike[str], precision: str | None = None) -> Reranker: ...

    def close(self) -> None: ...


class Searchable(Reads, Protocol):
    """Reads: evaluation, training's mining of hard negatives, the facets of chosen fields."""

    def facets(
        self, fields: list[str] | None = None, limit: int = 20
    ) -> dict[str, list[tuple[Any, int]]]: ...


class Writable(Protocol):
    """Writes: the server's upsert and delete."""

    def add(
        self,
        records: Iterable[Document | dict[str, Any]],
        progress: bool = False,
        embedder: Embedder | None = None,
    ) -> IngestSummary: ...

    def delete(self, ids: Iterable[str]) -> list[str]: ...


class Served(Reads, EncoderSource, Protocol):
    """What the server uses: reads, the encoder and its two writes, called with the lists its
    routes parse (``SearchEngine``, ``ShardedEngine`` and the Ray Serve ingress's ``RayEngine``
    satisfy it)."""

    def facets(self, *, limit: int = 20) -> dict[str, list[tuple[Any, int]]]: ...
    def add(self, records: list[dict[str, Any]]) -> IngestSummary: ...
    def delete(self, ids: list[str]) -> list[str]: ...


class EngineLike(Searchable, Writable, EncoderSource, Protocol):
    """What quality/ needs on top of reads and writes: the folder, the store's facts, the
    analyzer, the raw candidates that tuning re-fuses, every chunk, and the default fusion."""

    @property
    def folder(self) -> Path: ...

    @property
    def store(self) -> StoreView: ...

    @property
    def analyzer(self) -> SpanishAnalyzer: ...

    def refresh(self, encoder: Encoder | None = None) -> Manifest | None: ...

    def candidates(
        self, queries: list[str], depth: int, query_vectors: np.ndarray | None = None
    ) -> tuple[list[dict[int, float]], list[dict[int, float]], dict[int, str]]: ...

    def iter_chunks(self, batch_size: int = 1024) -> Iterator[list[StoredChunk]]: ...

    def set_default_fusion(self, fusion: dict[str, Any] | None) -> None: ...

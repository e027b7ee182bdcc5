"""The shard-caller seam: how the merge (``merge.py``) asks shards for their candidates, wherever
they are. ``LocalShardCaller`` asks the shard folders this process opened (threads over them:
``ShardedEngine``); ``server.ray_serve.ServeShardCaller`` asks Ray Serve deployments. Either way
each shard runs the one shard-side function, ``answer``; the requests and answers are plain
dataclasses that cross a process boundary as they are.

``LocalShard`` is what a shard must offer here and in ``ShardedEngine`` (``SearchEngine``'s
methods; ``shards/`` never imports ``engine.py``: ``ShardedEngine.open`` is handed the opener)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..index.candidates import Candidates, make_filter
from ..index.searcher import Searcher
from .bm25 import TermStats

if TYPE_CHECKING:
    from ..analyzer import SpanishAnalyzer
    from ..encoder import Encoder
    from ..index.context import IndexContext
    from ..index.indexer import Embedder
    from ..index.manifest import Manifest
    from ..index.reembed import ReembedResult
    from ..index.store import Store, StoredChunk
    from ..ingest import IngestSummary
    from ..rerank import Reranker
    from ..types import Document, Hit
    from ..vector_index import IndexSpec


class LocalShard(Protocol):
    """One shard opened in this process: an ordinary index (``SearchEngine.open_folder``)."""

    @property
    def ctx(self) -> IndexContext: ...
    @property
    def folder(self) -> Path: ...
    @property
    def store(self) -> Store: ...
    @property
    def manifest(self) -> Manifest | None: ...
    @property
    def spec(self) -> IndexSpec: ...
    @property
    def options(self) -> Any: ...
    @property
    def index_options(self) -> Any: ...
    @property
    def analyzer(self) -> SpanishAnalyzer: ...
    @property
    def encoder(self) -> Encoder: ...
    @property
    def query_encoder(self) -> Encoder: ...
    def reload_manifest(self) -> Manifest | None: ...
    def refresh(self, encoder: Encoder | None = None) -> Manifest | None: ...
    def share_encoder(self, encoder: Encoder) -> None: ...
    def prepare_query_graph(self) -> bool: ...
    def set_default_fusion(self, fusion: dict[str, Any] | None) -> None: ...
    def add(
        self,
        records: Iterable[Document | dict[str, Any]],
        progress: bool | str = False,
        embedder: Embedder | None = None,
    ) -> IngestSummary: ...
    def add_embeddings(
        self,
        records: Iterable[Document | dict[str, Any]],
        vectors: np.ndarray,
        chunk_size: int | None = None,
    ) -> IngestSummary: ...
    def delete(self, ids: Iterable[str]) -> list[str]: ...
    def get_document(self, doc_id: str) -> dict[str, Any] | None: ...
    def counts(self) -> dict[str, int]: ...
    def iter_chunks(self, batch_size: int = 1024) -> Iterator[list[StoredChunk]]: ...
    def facets(
        self, fields: list[str] | None = None, limit: int = 20
    ) -> dict[str, list[tuple[Any, int]]]: ...
    def info(self) -> dict[str, Any]: ...
    def verify(self) -> list[str]: ...
    def repair(self) -> dict[str, Any]: ...
    def compact(self) -> dict[str, Any]: ...
    def reranker(self, model: str | os.PathLike[str], precision: str | None = None) -> Reranker: ...
    def open_model(self, model: str, precision: str | None = None) -> Encoder: ...
    def open_target(
        self, model: str | os.PathLike[str], precision: str | None = None
    ) -> Encoder: ...
    def reembed(
        self,
        model: str | os.PathLike[str] | Encoder,
        precision: str | None = None,
        progress: bool = False,
        embedder: Embedder | None = None,
        **options: Any,
    ) -> ReembedResult: ...
    def close(self) -> None: ...


def searcher(shard: LocalShard) -> Searcher:
    """THE place shards build a ``Searcher``: on the shard's index context."""
    return Searcher(shard.ctx)


@dataclass(frozen=True, eq=False)
class CandidateRequest:
    """One shard's part of a search (plain data: it crosses Ray as it is)."""

    query: str
    mode: str
    depth: int  # this shard's depth for this round
    query_vector: np.ndarray | None = None  # normalised, shape (1, dim); None for lexical
    where: dict[str, str] | None = None
    source: str | None = None
    ef_search: int | None = None
    nprobe: int | None = None
    exclude: frozenset[int] | None = None  # chunk ids never returned (similar's own)
    terms: tuple[str, ...] = ()  # the query's analyzed terms: send their stored terms back
    with_stats: bool = False  # send the term statistics (the first dfs round)
    with_fields: bool = False  # send the filter's missing fields and the metadata fields
    with_locations: bool = False  # send where pages start in the candidates' documents


@dataclass
class ShardAnswer:
    """One shard's answer: candidates under its own chunk ids and what the request asked for."""

    candidates: Candidates
    stats: TermStats | None = None
    terms: dict[int, str] = field(default_factory=dict)  # lexical candidates' stored terms
    missing: list[str] | None = None  # the filter's metadata fields no document here has
    fields: list[str] = field(default_factory=list)  # metadata fields here
    locations: dict[str, Any] = field(default_factory=dict)


def answer(shard: LocalShard, r: CandidateRequest) -> ShardAnswer:
    """THE shard side of a search: the shard's raw candidates (``Searcher.search_candidates``)
    and, as asked, its term statistics, the stored terms of its lexical candidates, its filter
    fields and its candidates' locations."""
    store = shard.store
    stats = None
    if r.with_stats:  # before the candidates, as bm25 would have read them
        rows, tokens = store.lexical_totals()
        stats = TermStats(rows, tokens, store.doc_frequencies(list(r.terms)))
    found = searcher(shard).search_candidates(
        r.query,
        r.depth,
        r.mode,
        r.where,
        r.source,
        r.ef_search,
        r.nprobe,
        r.query_vector,
        set(r.exclude) if r.exclude else None,
    )
    out = ShardAnswer(found, stats)
    if r.terms:
        out.terms = store.lexical_terms(list(found.lexical))
    if r.with_fields:
        out.missing = store.missing_fields(make_filter(r.where, r.source))
        # the existing fields are named only when a field is missing (a scan of the documents)
        out.fields = store.metadata_fields() if out.missing else []
    if r.with_locations:
        out.locations = store.locations(sorted({row.doc_id for row in found.rows.values()}))
    return out


class ShardCaller(Protocol):
    """Shards asked at once; the merge's only way to reach them."""

    @property
    def count(self) -> int:
        """How many shards the index has (failed ones included)."""
        ...

    def candidates(
        self, requests: Mapping[int, CandidateRequest]
    ) -> tuple[dict[int, ShardAnswer], list[int]]:
        """Ask these shards at once: (answers by shard, shards that failed)."""
        ...

    def dense_scores(
        self, shard: int, ids: list[int], query_vector: np.ndarray
    ) -> dict[int, float] | None:
        """Exact cosines of the shard's chunks ``ids``, or None when the shard failed."""
        ...

    def locate(self, shard: int, hits: list[Hit], known: dict[str, Any]) -> bool:
        """Each hit's page or section (its chunk ids the shard's own; ``known``: the locations
        the answers brought); False when the shard failed."""
        ...


class LocalShardCaller:
    """The shards this process opened, asked in parallel threads (SQLite and FAISS release the
    GIL). A shard that raises raises here: a local shard is never left out."""

    def __init__(self, shards: Sequence[LocalShard]) -> None:
        self.shards = shards
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return len(self.shards)

    def candidates(
        self, requests: Mapping[int, CandidateRequest]
    ) -> tuple[dict[int, ShardAnswer], list[int]]:
        if len(requests) == 1:
            ((i, r),) = requests.items()
            return {i: answer(self.shards[i], r)}, []
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.count, thread_name_prefix="beto-search-shard")
            pool = self._pool
        futures = {i: pool.submit(answer, self.shards[i], r) for i, r in sorted(requests.items())}
        return {i: f.result() for i, f in futures.items()}, []

    def dense_scores(
        self, shard: int, ids: list[int], query_vector: np.ndarray
    ) -> dict[int, float] | None:
        return searcher(self.shards[shard]).dense_scores(ids, query_vector)

    def locate(self, shard: int, hits: list[Hit], known: dict[str, Any]) -> bool:
        searcher(self.shards[shard]).locate(hits)
        return True

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

"""``SearchEngine``: the facade. It opens an index folder (one ``IndexContext``: store, manifest,
encoders, vector cache) and delegates every call to the collaborator that owns it: ``Indexer``
(writes), ``Searcher`` (reads), ``Maintenance`` (checks and upkeep), ``reembed``; after a write it
runs the one after-write step (the fusion autotune and the query graph export)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import numpy as np

from .analyzer import SpanishAnalyzer
from .encoder import Encoder
from .index.candidates import MODES  # noqa: F401  (re-exported)
from .index.context import DB_NAME, EncoderOptions, IndexContext, default_model  # noqa: F401
from .index.indexer import Embedder, Indexer
from .index.maintenance import Maintenance
from .index.manifest import FORMAT_VERSION, IndexOptions, Manifest  # noqa: F401  (re-exported)
from .index.searcher import Searcher
from .index.store import Store, StoredChunk
from .index.vector_cache import VectorCache
from .ingest import IngestSummary
from .readers import ReaderOptions
from .rerank import DEFAULT_DEPTH, Reranker
from .types import Document, Hit, SearchResults
from .vector_index import IndexSpec, VectorIndex

if TYPE_CHECKING:
    from .index.reembed import ReembedResult
    from .quality.adapt import TrainReport
    from .quality.tuning import TuneResult
    from .shards import ShardedEngine

log = logging.getLogger(__name__)
T = TypeVar("T")


def default_index_path() -> Path:
    return Path(os.environ.get("BETO_SEARCH_INDEX") or "indexes/default")


class _FromContext(Generic[T]):
    """An attribute of the engine's ``IndexContext``, read through (``engine.store`` is
    ``engine.ctx.store``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, engine: ContextView | None, owner: type | None = None) -> T:
        if engine is None:
            return self  # type: ignore[return-value]  # the class's own attribute
        return cast(T, getattr(engine.ctx, self.name))


class ContextView:
    """What ``SearchEngine`` shows of its ``IndexContext`` (``ctx``): the folder, store, vector
    cache, options, manifest and encoders, read through to the one context."""

    def __init__(self, ctx: IndexContext) -> None:
        self._ctx = ctx

    @property
    def ctx(self) -> IndexContext:
        """The index's shared state (``index/context.py``): build collaborators on it."""
        return self._ctx

    folder: _FromContext[Path] = _FromContext()
    store: _FromContext[Store] = _FromContext()
    cache: _FromContext[VectorCache] = _FromContext()
    wait: _FromContext[float] = _FromContext()
    options: _FromContext[EncoderOptions] = _FromContext()
    index_options: _FromContext[IndexOptions] = _FromContext()
    spec: _FromContext[IndexSpec] = _FromContext()
    analyzer: _FromContext[SpanishAnalyzer] = _FromContext()

    @property
    def manifest(self) -> Manifest | None:
        """Settings fixed when the index was created (None while it is empty and new; an index
        another process fills is seen at the next call)."""
        return self.ctx.manifest

    def reload_manifest(self) -> Manifest | None:
        return self.ctx.reload_manifest()

    def refresh(self, encoder: Encoder | None = None) -> Manifest | None:
        """Re-read the manifest if it changed (a search does, so a reader follows another
        process's re-embed or re-tune at its next query). When the generation moved, the
        encoders built for the old model are dropped and a passed-in encoder must fit the new
        model (``IndexContext.refresh``); ``encoder``: the new generation's (the caller has it)."""
        return self.ctx.refresh(encoder)

    @property
    def encoder(self) -> Encoder:
        """The full encoder (built from the manifest or the options on first use)."""
        return self.ctx.encoder

    @property
    def query_encoder(self) -> Encoder:
        """The encoder for searches: the given or loaded encoder if any, else a light one (a
        cached graph under ONNX Runtime, no torch; see backends/query.py)."""
        return self.ctx.query_encoder

    def share_encoder(self, encoder: Encoder) -> None:
        """Use ``encoder``, already built for this index's model by another engine (the shards
        of one index share one model), instead of building another; checked like a given one."""
        self.ctx.share_encoder(encoder)

    def open_model(self, model: str, precision: str | None = None) -> Encoder:
        """An encoder for another model (``reembed``'s target), built like this engine's own
        (``backends.open_encoder``) with its device and batch size; precision: the given one,
        else the index's."""
        return self.ctx.open_model(model, precision)

    def reranker(self, model: str | os.PathLike[str], precision: str | None = None) -> Reranker:
        """The cross-encoder ``model`` at ``precision`` (default auto), loaded once per engine
        and kept (a server reranks every query with the one it loaded at start-up)."""
        return self.ctx.reranker(model, precision)

    def vectors(self) -> VectorIndex:
        """The vector cache caught up with SQLite (loaded, healed or rebuilt as needed)."""
        return self.cache.current()


class SearchEngine(ContextView):
    """A Spanish semantic + lexical search index stored in one folder."""

    def __init__(self, ctx: IndexContext) -> None:
        super().__init__(ctx)
        self._searcher = Searcher(ctx)  # stateless but for ctx: built once
        self._maintenance = Maintenance(ctx)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        encoder: Encoder | None = None,
        *,
        model: str | None = None,
        pooling: str | None = None,
        precision: str | None = None,
        device: str = "auto",
        batch_size: int = 16,
        index_type: str | None = None,
        chunk_tokens: int | None = None,
        overlap: int | None = None,
        create: bool = True,
        wait: float = 0.0,
        shards: int | None = None,
    ) -> SearchEngine | ShardedEngine:
        """Open the index at ``path`` (default ``indexes/default``), creating it if allowed.

        A sharded index (a folder with ``shards.json``; ``shards=N`` creates one) opens as a
        ``ShardedEngine``: the same methods over N ordinary index folders."""
        # the keyword options above, passed on as given (to ShardedEngine or open_folder)
        kw = {k: v for k, v in locals().items() if k not in ("cls", "path", "encoder", "shards")}
        folder = Path(path) if path is not None else default_index_path()
        from .shards import MANIFEST_NAME, ShardedEngine

        if shards is not None or (folder / MANIFEST_NAME).exists():
            return ShardedEngine.open(
                folder, encoder, open_shard=cls.open_folder, shards=shards, **kw
            )  # shards/ never imports this module
        return cls.open_folder(folder, encoder, **kw)

    @classmethod
    def open_folder(
        cls,
        folder: Path,
        encoder: Encoder | None = None,
        *,
        model: str | None = None,
        pooling: str | None = None,
        precision: str | None = None,
        device: str = "auto",
        batch_size: int = 16,
        index_type: str | None = None,
        chunk_tokens: int | None = None,
        overlap: int | None = None,
        create: bool = True,
        wait: float = 0.0,
    ) -> SearchEngine:
        """Open the one index folder ``folder`` (never a sharded one: one shard of it, say)."""
        options = EncoderOptions(model, pooling, precision, device, batch_size)
        index_options = IndexOptions(model, pooling, index_type, chunk_tokens, overlap)
        return cls(IndexContext.open(folder, encoder, create, wait, options, index_options))

    def close(self) -> None:
        self.ctx.close()

    def __enter__(self) -> SearchEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_default_fusion(self, fusion: dict[str, Any] | None) -> None:
        """Record the index's default fusion (e.g. the one ``tune`` chose) in the manifest."""
        self._maintenance.set_default_fusion(fusion)

    # ----- writing (indexer.py) ------------------------------------------------------------
    def ingest(
        self,
        paths: Iterable[str | os.PathLike[str]],
        reader: ReaderOptions | None = None,
        prune: bool = False,
        progress: bool | str = False,
        embedder: Embedder | None = None,
        progress_every: float = 5.0,
    ) -> IngestSummary:
        """Read files and folders and add their documents. ``progress``: False, True / "auto"
        (a bar on a terminal, else a line every ``progress_every`` seconds), "bar", "log",
        "json" or "none" (on stderr; ``progress.Progress``)."""
        summary = Indexer(self.ctx).ingest(paths, reader, prune, progress, embedder, progress_every)
        self._after_write(new_model=True)
        return summary

    def _after_write(self, new_model: bool) -> None:
        """THE step after a write (ingest, add, reembed): choose the fusion once the index is
        big enough to tell, or again when it doubled or changed model (``maybe_autotune``: cheap
        below its threshold); ``new_model``: export the light query graph too."""
        from .quality.tuning import maybe_autotune

        maybe_autotune(self)
        if new_model:
            self.prepare_query_graph()

    def prepare_query_graph(self) -> bool:
        """Export the index's light query graph now if it is not cached yet (seconds for BETO),
        so that the first query after an ingest does not pay for it. False when it does not
        apply (a custom encoder, CUDA, an empty index) or failed (the first query tries again)."""
        return self._maintenance.prepare_query_graph()

    def add(
        self,
        records: Iterable[Document | dict[str, Any]],
        progress: bool | str = False,
        embedder: Embedder | None = None,
    ) -> IngestSummary:
        """Insert or replace documents (dicts with id, text, title, metadata, or Documents)."""
        created = self.manifest is None
        summary = Indexer(self.ctx).add(records, progress, embedder)
        self._after_write(new_model=created)
        return summary

    def add_embeddings(
        self,
        records: Iterable[Document | dict[str, Any]],
        vectors: np.ndarray,
        chunk_size: int | None = None,
    ) -> IngestSummary:
        return Indexer(self.ctx).add_embeddings(records, vectors, chunk_size)

    def delete(self, ids: Iterable[str]) -> list[str]:
        return Indexer(self.ctx).delete(ids)

    # ----- reading (searcher.py, store.py) -------------------------------------------------
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
        rerank_depth: int = DEFAULT_DEPTH,
        rerank_precision: str | None = None,
    ) -> SearchResults:
        args = (query, k, mode, fusion, alpha, where, source, ef_search, nprobe, snippets)
        return self._searcher.search(*args, query_vector, rerank, rerank_depth, rerank_precision)

    def similar(self, doc_id: str, k: int = 10) -> list[Hit]:
        return self._searcher.similar(doc_id, k)

    def candidates(
        self, queries: list[str], depth: int, query_vectors: np.ndarray | None = None
    ) -> tuple[list[dict[int, float]], list[dict[int, float]], dict[int, str]]:
        """Each query's dense and lexical chunk candidates and their documents (what tuning
        re-fuses; ``Searcher.candidates``); ``query_vectors``: the queries already encoded."""
        return self._searcher.candidates(queries, depth, query_vectors)

    def get_document(self, doc_id: str) -> dict[str, Any] | None:
        """{id, title, text, source, metadata, chunks: [{chunk_id, start, end}]} or None."""
        return self.store.document_with_chunks(doc_id)

    def counts(self) -> dict[str, int]:
        """{"documents", "chunks", "embeddings"}."""
        return self.store.counts()

    def iter_chunks(self, batch_size: int = 1024) -> Iterator[list[StoredChunk]]:
        return self.store.iter_chunks(batch_size)

    def facets(
        self, fields: list[str] | None = None, limit: int = 20
    ) -> dict[str, list[tuple[Any, int]]]:
        return self.store.facets(fields, limit)

    # ----- checks and upkeep (maintenance.py) ----------------------------------------------
    def info(self) -> dict[str, Any]:
        return self._maintenance.info()

    def verify(self) -> list[str]:
        return self._maintenance.verify()

    def repair(self) -> dict[str, Any]:
        return self._maintenance.repair()

    def compact(self) -> dict[str, Any]:
        return self._maintenance.compact()

    # ----- fusion tuning and re-embedding (tuning.py, reembed.py) --------------------------
    def open_target(self, model: str | os.PathLike[str], precision: str | None = None) -> Encoder:
        """The encoder ``reembed(model, precision)`` would build (a folder resolved to an absolute
        path, so readers elsewhere find it): to hand to a distributed embedder first."""
        from .index.reembed import open_target

        return open_target(self.ctx, model, precision)

    def tune(
        self,
        queries: dict[str, str] | None = None,
        qrels: dict[str, dict[str, int]] | None = None,
        **options: Any,
    ) -> TuneResult:
        """Choose and store the index's default fusion (pseudo-queries, or labels if given)."""
        from .quality.tuning import tune

        return tune(self, queries, qrels, **options)

    def reembed(
        self,
        model: str | os.PathLike[str] | Encoder,
        precision: str | None = None,
        progress: bool = False,
        embedder: Embedder | None = None,
        **options: Any,
    ) -> ReembedResult:
        """Re-encode every stored chunk with another model and switch to it atomically."""
        from .index.reembed import reembed

        result = reembed(self.ctx, model, precision, progress, embedder, **options)
        # the tuned fusion belonged to the old model; an Encoder object: no graph to export
        self._after_write(new_model=isinstance(model, str | os.PathLike))
        return result

    # ----- training the index's model (adapt.py, training.py) ------------------------------
    def adapt(self, out: str | os.PathLike[str], **options: Any) -> TrainReport:
        """Adapt the index's model to its own chunks without labels; writes a sentence-
        transformers folder to ``out`` (options: ``adapt.TrainOptions``'s fields)."""
        from .quality.adapt import adapt

        return adapt(self, out, **options)

    def train(
        self,
        out: str | os.PathLike[str],
        queries: str | os.PathLike[str] | None = None,
        qrels: str | os.PathLike[str] | None = None,
        pairs: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> TrainReport:
        """Fine-tune the index's model on labelled queries + qrels (BEIR/TREC files) or pairs
        (JSONL/TSV); writes a sentence-transformers folder to ``out``."""
        from .quality.training import train

        return train(self, out, queries, qrels, pairs, **options)

"""``SearchEngine``: the facade. It opens an index folder and delegates every call to the
collaborator that owns it: ``Indexer`` (writes), ``Searcher`` (reads), ``Maintenance`` (checks and
upkeep), ``VectorCache`` (FAISS consistency), ``Manifest`` (settings), ``Store`` (SQLite)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .analyzer import SpanishAnalyzer
from .backends import open_encoder as _open_encoder  # THE one place encoders are built
from .encoder import DEFAULT_MODEL, Encoder
from .errors import BetoSearchError, IndexNotFoundError, InputError, ManifestMismatchError
from .index.indexer import Embedder, Indexer
from .index.locking import WriteLock
from .index.maintenance import Maintenance
from .index.manifest import FORMAT_VERSION, IndexOptions, Manifest  # noqa: F401  (re-exported)
from .index.searcher import MODES, Searcher  # noqa: F401  (re-exported)
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

DB_NAME = "index.db"

log = logging.getLogger(__name__)


def default_index_path() -> Path:
    return Path(os.environ.get("BETO_SEARCH_INDEX") or "indexes/default")


def default_model() -> str:
    return os.environ.get("BETO_SEARCH_MODEL") or DEFAULT_MODEL


@dataclass
class EncoderOptions:
    """How to build the default encoder when none is passed."""

    model: str | None = None
    pooling: str | None = None
    precision: str | None = None
    device: str = "auto"
    batch_size: int = 16


class SearchEngine:
    """A Spanish semantic + lexical search index stored in one folder."""

    def __init__(
        self,
        folder: Path,
        store: Store,
        encoder: Encoder | None,
        options: EncoderOptions,
        index_options: IndexOptions,
        wait: float,
    ) -> None:
        self.folder, self.store, self.options, self.wait = folder, store, options, wait
        self.index_options = index_options
        self._encoder = encoder
        self._encoder_given = encoder is not None  # else built from the manifest (may change)
        self._query_encoder: Encoder | None = None
        self._encoder_lock = threading.Lock()
        self._local = threading.local()  # per-thread analyzer (PyStemmer is not thread-safe)
        self._manifest: Manifest | None = None
        self._stamp: tuple[str | None, str | None] | None = None  # see refresh
        self._encoder_generation: int | None = None  # the generation the encoders fit
        self._rerankers: dict[tuple[str, str], Reranker] = {}  # (model, precision) -> loaded
        self._rerank_lock = threading.Lock()
        self.cache = VectorCache(
            folder, store, lambda reload: self.reload_manifest() if reload else self.manifest
        )
        m = self.manifest
        if m is not None:
            self._encoder_generation = m.generation
            m.check_options(folder, index_options)
            if encoder is not None:
                m.check_encoder(folder, encoder)

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
        folder = Path(path) if path is not None else default_index_path()
        from .shards import MANIFEST_NAME, ShardedEngine

        if shards is not None or (folder / MANIFEST_NAME).exists():
            return ShardedEngine.open(
                folder,
                encoder,
                open_shard=cls.open_folder,  # shards/ never imports this module
                shards=shards,
                model=model,
                pooling=pooling,
                precision=precision,
                device=device,
                batch_size=batch_size,
                index_type=index_type,
                chunk_tokens=chunk_tokens,
                overlap=overlap,
                create=create,
                wait=wait,
            )
        return cls.open_folder(
            folder,
            encoder,
            model=model,
            pooling=pooling,
            precision=precision,
            device=device,
            batch_size=batch_size,
            index_type=index_type,
            chunk_tokens=chunk_tokens,
            overlap=overlap,
            create=create,
            wait=wait,
        )

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
        db = folder / DB_NAME
        if not db.exists():
            if not create:
                raise IndexNotFoundError(
                    f"there is no index at {folder}; create one with 'beto-search ingest FOLDER "
                    f"--index {folder}'."
                )
            if folder.exists() and not folder.is_dir():
                raise InputError(f"{folder} is a file, not an index folder.")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(
                    f"cannot create the index folder {folder} ({exc.strerror})."
                ) from None
        if index_type:
            IndexSpec(type=index_type)  # validates it
        options = EncoderOptions(model, pooling, precision, device, batch_size)
        index_options = IndexOptions(model, pooling, index_type, chunk_tokens, overlap)
        return cls(folder, Store(db, create=create), encoder, options, index_options, wait)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> SearchEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- manifest and encoders -----------------------------------------------------------
    @property
    def manifest(self) -> Manifest | None:
        """Settings fixed when the index was created (None while it is empty and new; an index
        another process fills is seen at the next call)."""
        return self._manifest if self._manifest is not None else self.reload_manifest()

    def reload_manifest(self) -> Manifest | None:
        self._manifest = Manifest.from_store(self.store)
        return self._manifest

    def refresh(self, encoder: Encoder | None = None) -> Manifest | None:
        """Re-read the manifest if it changed (a search does, so a reader follows another
        process's re-embed or re-tune at its next query). When the generation moved, the
        encoders built for the old model are dropped (rebuilt from the new manifest on next use)
        and a passed-in encoder must fit the new model, else every call is refused as opening
        the index with it would be; ``encoder``: the new generation's, when the caller has it."""
        stamp = self.store.manifest_stamp()
        if self._manifest is not None and stamp == self._stamp:
            return self._manifest
        m = self.reload_manifest()
        self._stamp = stamp
        if m is None or self._encoder_generation in (None, m.generation):
            if m is not None:
                self._encoder_generation = m.generation
            return m
        with self._encoder_lock:
            self._query_encoder = None
            if encoder is not None:
                self._encoder, self._encoder_given = encoder, True
            elif self._encoder_given:
                assert self._encoder is not None
                try:
                    m.check_encoder(self.folder, self._encoder)
                except ManifestMismatchError:
                    self._stamp = None  # checked again at every later call
                    raise
            else:
                self._encoder = None
            self._encoder_generation = m.generation
        self.cache.invalidate()  # the old generation's vectors are never used again
        return m

    def set_default_fusion(self, fusion: dict[str, Any] | None) -> None:
        """Record the index's default fusion (e.g. the one ``tune`` chose) in the manifest."""
        with WriteLock(self.folder, self.wait):
            m = self.reload_manifest()
            if m is None:
                raise InputError("the index is empty; ingest documents before setting its fusion.")
            m.fusion = dict(fusion) if fusion is not None else None
            with self.store.write():
                self.store.write_manifest({"fusion": m.fusion})

    @property
    def spec(self) -> IndexSpec:
        m = self.manifest
        return m.spec if m is not None else IndexSpec(type=self.index_options.index_type or "auto")

    @property
    def analyzer(self) -> SpanishAnalyzer:
        analyzer = getattr(self._local, "analyzer", None)
        if analyzer is None:
            analyzer = self._local.analyzer = SpanishAnalyzer()
        return analyzer

    def _build_encoder(self, queries_only: bool) -> Encoder:
        """The index's encoder (from the manifest or the options), checked against the index."""
        m = self.manifest
        env_model = os.environ.get("BETO_SEARCH_MODEL")
        if m and not self.options.model and env_model and env_model != m.encoder:
            raise ManifestMismatchError(
                f"BETO_SEARCH_MODEL is '{env_model}' but the index at {self.folder} was "
                f"built with '{m.encoder}'; unset it or use another --index."
            )
        enc: Encoder = _open_encoder(
            self.options.model or (m.encoder if m else None) or default_model(),
            pooling=self.options.pooling or (m.pooling if m else None),
            # a new index takes the fastest precision that keeps quality here (backends/auto.py)
            precision=self.options.precision or (m.precision if m else None) or "auto",
            device=self.options.device,
            batch_size=self.options.batch_size,
            queries_only=queries_only,
        )
        if m is not None:
            m.check_encoder(self.folder, enc)
        return enc

    def share_encoder(self, encoder: Encoder) -> None:
        """Use ``encoder``, already built for this index's model by another engine (the shards
        of one index share one model), instead of building another; checked like a given one."""
        m = self.manifest
        if m is not None:
            m.check_encoder(self.folder, encoder)
        with self._encoder_lock:
            self._encoder = encoder

    @property
    def encoder(self) -> Encoder:
        """The full encoder (built from the manifest or the options on first use)."""
        with self._encoder_lock:
            if self._encoder is None:
                self._encoder = self._build_encoder(queries_only=False)
            return self._encoder

    @property
    def query_encoder(self) -> Encoder:
        """The encoder for searches: the given or loaded encoder if any, else a light one (a
        cached graph under ONNX Runtime, no torch; see backends/query.py)."""
        with self._encoder_lock:
            if self._encoder is not None:
                return self._encoder
            if self._query_encoder is None:
                self._query_encoder = self._build_encoder(queries_only=True)
            return self._query_encoder

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
        summary = Indexer(self).ingest(paths, reader, prune, progress, embedder, progress_every)
        from .quality.tuning import maybe_autotune

        maybe_autotune(self)  # choose the fusion once the index is big enough to tell
        self.prepare_query_graph()
        return summary

    def prepare_query_graph(self) -> bool:
        """Export the index's light query graph now if it is not cached yet (seconds for BETO),
        so that the first query after an ingest does not pay for it. False when it does not
        apply (a custom encoder, CUDA, an empty index) or failed (the first query tries again)."""
        m = self.manifest
        if m is None or self._encoder_given or self.options.device == "cuda":
            return False
        from .backends.query import prepare_query_graph

        try:
            prepare_query_graph(m.encoder, m.precision, m.revision)
        except (BetoSearchError, ImportError, RuntimeError, OSError, ValueError) as exc:
            log.warning("the query graph was not prepared (the first query will): %s", exc)
            return False
        return True

    def add(
        self,
        records: Iterable[Document | dict[str, Any]],
        progress: bool | str = False,
        embedder: Embedder | None = None,
    ) -> IngestSummary:
        return Indexer(self).add(records, progress, embedder)

    def add_embeddings(
        self,
        records: Iterable[Document | dict[str, Any]],
        vectors: np.ndarray,
        chunk_size: int | None = None,
    ) -> IngestSummary:
        return Indexer(self).add_embeddings(records, vectors, chunk_size)

    def delete(self, ids: Iterable[str]) -> list[str]:
        return Indexer(self).delete(ids)

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
        return Searcher(self).search(
            query,
            k,
            mode,
            fusion,
            alpha,
            where,
            source,
            ef_search,
            nprobe,
            snippets,
            query_vector,
            rerank,
            rerank_depth,
            rerank_precision,
        )

    def reranker(self, model: str | os.PathLike[str], precision: str | None = None) -> Reranker:
        """The cross-encoder ``model`` at ``precision`` (default auto), loaded once per engine
        and kept (a server reranks every query with the one it loaded at start-up)."""
        from .rerank import open_reranker

        key = (os.fspath(model), precision or "auto")
        with self._rerank_lock:  # one load per key even when many threads ask at once
            if key not in self._rerankers:
                self._rerankers[key] = open_reranker(
                    key[0],
                    key[1],
                    device=self.options.device,
                    batch_size=self.options.batch_size,
                )
            return self._rerankers[key]

    def similar(self, doc_id: str, k: int = 10) -> list[Hit]:
        return Searcher(self).similar(doc_id, k)

    def candidates(
        self, queries: list[str], depth: int, query_vectors: np.ndarray | None = None
    ) -> tuple[list[dict[int, float]], list[dict[int, float]], dict[int, str]]:
        """Each query's dense and lexical chunk candidates and their documents (what tuning
        re-fuses; ``Searcher.candidates``); ``query_vectors``: the queries already encoded."""
        return Searcher(self).candidates(queries, depth, query_vectors)

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

    def vectors(self) -> VectorIndex:
        """The vector cache caught up with SQLite (loaded, healed or rebuilt as needed)."""
        return self.cache.current()

    # ----- checks and upkeep (maintenance.py) ----------------------------------------------
    def info(self) -> dict[str, Any]:
        return Maintenance(self).info()

    def verify(self) -> list[str]:
        return Maintenance(self).verify()

    def repair(self) -> dict[str, Any]:
        return Maintenance(self).repair()

    def compact(self) -> dict[str, Any]:
        return Maintenance(self).compact()

    # ----- fusion tuning and re-embedding (tuning.py, reembed.py) --------------------------
    def open_model(self, model: str, precision: str | None = None) -> Encoder:
        """An encoder for another model (``reembed``'s target), built like this engine's own
        (``backends.open_encoder``) with its device and batch size; precision: the given one,
        else the index's."""
        m = self.manifest
        return _open_encoder(
            model,
            precision=precision or (m.precision if m is not None else None) or "auto",
            device=self.options.device,
            batch_size=self.options.batch_size,
        )

    def open_target(self, model: str | os.PathLike[str], precision: str | None = None) -> Encoder:
        """The encoder ``reembed(model, precision)`` would build (a folder resolved to an absolute
        path, so readers elsewhere find it): to hand to a distributed embedder first."""
        from .index.reembed import open_target

        return open_target(self, model, precision)

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

        result = reembed(self, model, precision, progress, embedder, **options)
        if isinstance(model, str | os.PathLike):  # an Encoder object: nothing to export from
            self.prepare_query_graph()
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

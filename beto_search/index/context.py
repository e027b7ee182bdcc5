"""``IndexContext``: what the collaborators of one index folder share (``Indexer``, ``Searcher``,
``Maintenance``, ``reembed``): the folder, its ``Store``, the write-lock wait, the index options,
the manifest as last read (and its generation stamp), the encoders (built lazily from the manifest
or the options), the vector cache, the loaded rerankers and a per-thread analyzer.

``SearchEngine`` holds one and forwards to it; a sharded index holds one per shard. Encoders are
built by ``Encoders.factory`` (default ``backends.open_encoder``), a documented class attribute so
that tests swap it with ``beto_search.testing.encoder_factory`` instead of patching a private name.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..analyzer import SpanishAnalyzer
from ..backends import open_encoder
from ..encoder import DEFAULT_MODEL, Encoder
from ..errors import IndexNotFoundError, InputError, ManifestMismatchError
from ..vector_index import IndexSpec
from .manifest import IndexOptions, Manifest
from .store import Store
from .vector_cache import VectorCache

if TYPE_CHECKING:
    from ..rerank import Reranker

DB_NAME = "index.db"


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


class Encoders:
    """The index's encoders: the full one (given, or built on first use) and the light query one,
    both for the manifest's generation (``IndexContext.refresh`` drops them when it moves)."""

    # THE one place encoders are built: (model, *, pooling, precision, device, batch_size,
    # queries_only) -> Encoder. Tests swap it with ``beto_search.testing.encoder_factory``.
    factory: ClassVar[Callable[..., Any]] = open_encoder

    def __init__(self, options: EncoderOptions, encoder: Encoder | None) -> None:
        self.options = options
        self.full = encoder
        self.given = encoder is not None  # else built from the manifest (may change)
        self.query: Encoder | None = None
        self.generation: int | None = None  # the generation the encoders fit
        self.lock = threading.Lock()

    @staticmethod
    def build(model: str, **options: Any) -> Encoder:
        enc: Encoder = Encoders.factory(model, **options)
        return enc


class IndexContext:
    """One index folder's shared state; see the module docstring."""

    def __init__(
        self,
        folder: Path,
        store: Store,
        encoder: Encoder | None = None,
        options: EncoderOptions | None = None,
        index_options: IndexOptions | None = None,
        wait: float = 0.0,
    ) -> None:
        self.folder, self.store, self.wait = folder, store, wait
        self.options = options or EncoderOptions()
        self.index_options = index_options or IndexOptions()
        self.encoders = Encoders(self.options, encoder)
        self._local = threading.local()  # per-thread analyzer (PyStemmer is not thread-safe)
        self._manifest: Manifest | None = None
        self._stamp: tuple[str | None, str | None] | None = None  # see refresh
        self._rerankers: dict[tuple[str, str], Reranker] = {}  # (model, precision) -> loaded
        self._rerank_lock = threading.Lock()
        self.cache = VectorCache(
            folder, store, lambda reload: self.reload_manifest() if reload else self.manifest
        )
        m = self.manifest
        if m is not None:
            self.encoders.generation = m.generation
            m.check_options(folder, self.index_options)
            if encoder is not None:
                m.check_encoder(folder, encoder)

    @classmethod
    def open(
        cls,
        folder: Path,
        encoder: Encoder | None = None,
        create: bool = True,
        wait: float = 0.0,
        options: EncoderOptions | None = None,
        index_options: IndexOptions | None = None,
    ) -> IndexContext:
        """Open the index folder ``folder`` (created when allowed and missing)."""
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
        if index_options is not None and index_options.index_type:
            IndexSpec(type=index_options.index_type)  # validates it
        return cls(folder, Store(db, create=create), encoder, options, index_options, wait)

    def close(self) -> None:
        self.store.close()

    # ----- the manifest --------------------------------------------------------------------
    @property
    def manifest(self) -> Manifest | None:
        """Settings fixed when the index was created (None while it is empty and new)."""
        return self._manifest if self._manifest is not None else self.reload_manifest()

    def reload_manifest(self) -> Manifest | None:
        self._manifest = Manifest.from_store(self.store)
        return self._manifest

    def refresh(self, encoder: Encoder | None = None) -> Manifest | None:
        """Re-read the manifest if it changed (cheap when it did not: one stamp read). When the
        generation moved, the encoders built for the old model are dropped (rebuilt from the new
        manifest on next use), the vector cache is invalidated, and a given encoder must fit the
        new model, else every call is refused as opening the index with it would be;
        ``encoder``: the new generation's, when the caller has it (``reembed``)."""
        stamp = self.store.manifest_stamp()
        if self._manifest is not None and stamp == self._stamp:
            return self._manifest
        m = self.reload_manifest()
        self._stamp = stamp
        encoders = self.encoders
        if m is None or encoders.generation in (None, m.generation):
            if m is not None:
                encoders.generation = m.generation
            return m
        with encoders.lock:
            encoders.query = None
            if encoder is not None:
                encoders.full, encoders.given = encoder, True
            elif encoders.given:
                assert encoders.full is not None
                try:
                    m.check_encoder(self.folder, encoders.full)
                except ManifestMismatchError:
                    self._stamp = None  # checked again at every later call
                    raise
            else:
                encoders.full = None
            encoders.generation = m.generation
        self.cache.invalidate()  # the old generation's vectors are never used again
        return m

    @property
    def spec(self) -> IndexSpec:
        m = self.manifest
        return m.spec if m is not None else IndexSpec(type=self.index_options.index_type or "auto")

    @property
    def analyzer(self) -> SpanishAnalyzer:
        """This thread's analyzer."""
        analyzer = getattr(self._local, "analyzer", None)
        if analyzer is None:
            analyzer = self._local.analyzer = SpanishAnalyzer()
        return analyzer

    # ----- encoders ------------------------------------------------------------------------
    def _build_encoder(self, queries_only: bool) -> Encoder:
        """The index's encoder (from the manifest or the options), checked against the index."""
        m, options = self.manifest, self.options
        env_model = os.environ.get("BETO_SEARCH_MODEL")
        if m and not options.model and env_model and env_model != m.encoder:
            raise ManifestMismatchError(
                f"BETO_SEARCH_MODEL is '{env_model}' but the index at {self.folder} was "
                f"built with '{m.encoder}'; unset it or use another --index."
            )
        enc = Encoders.build(
            options.model or (m.encoder if m else None) or default_model(),
            pooling=options.pooling or (m.pooling if m else None),
            # a new index takes the fastest precision that keeps quality here (backends/auto.py)
            precision=options.precision or (m.precision if m else None) or "auto",
            device=options.device,
            batch_size=options.batch_size,
            queries_only=queries_only,
        )
        if m is not None:
            m.check_encoder(self.folder, enc)
        return enc

    @property
    def encoder(self) -> Encoder:
        """The full encoder (built from the manifest or the options on first use)."""
        encoders = self.encoders
        with encoders.lock:
            if encoders.full is None:
                encoders.full = self._build_encoder(queries_only=False)
            return encoders.full

    @property
    def query_encoder(self) -> Encoder:
        """The encoder for searches: the given or loaded encoder if any, else a light one."""
        encoders = self.encoders
        with encoders.lock:
            if encoders.full is not None:
                return encoders.full
            if encoders.query is None:
                encoders.query = self._build_encoder(queries_only=True)
            return encoders.query

    def share_encoder(self, encoder: Encoder) -> None:
        """Use ``encoder`` (built for this index's model elsewhere), checked like a given one."""
        m = self.manifest
        if m is not None:
            m.check_encoder(self.folder, encoder)
        with self.encoders.lock:
            self.encoders.full = encoder

    def open_model(self, model: str, precision: str | None = None) -> Encoder:
        """An encoder for another model, built like the index's own with its device and batch
        size; precision: the given one, else the index's."""
        m = self.manifest
        return Encoders.build(
            model,
            precision=precision or (m.precision if m is not None else None) or "auto",
            device=self.options.device,
            batch_size=self.options.batch_size,
        )

    def reranker(self, model: str | os.PathLike[str], precision: str | None = None) -> Reranker:
        """The cross-encoder ``model`` at ``precision`` (default auto), loaded once and kept."""
        from ..rerank import open_reranker

        key = (os.fspath(model), precision or "auto")
        with self._rerank_lock:  # one load per key even when many threads ask at once
            if key not in self._rerankers:
                self._rerankers[key] = open_reranker(
                    key[0], key[1], device=self.options.device, batch_size=self.options.batch_size
                )
            return self._rerankers[key]

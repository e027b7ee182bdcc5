"""``ShardedEngine``: N ordinary index folders behind one engine with ``SearchEngine``'s methods.

Each shard keeps the index's invariants by itself (its own write lock, transactions, change log,
cache); this module only routes writes (``writers.py``) and merges reads (``merge.py`` over a
``LocalShardCaller``), through the shards' public methods. The shards are opened by the opener
``ShardedEngine.open`` is given (``SearchEngine.open_folder``): nothing here imports
``engine.py``. The quality entry points (tune, adapt, train, the autotune after a write) are
lazy imports of ``quality``, as in ``SearchEngine``."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..encoder import Encoder, normalize_rows
from ..errors import IndexNotFoundError, InputError, ManifestMismatchError
from ..fusion import FusionConfig, resolve
from ..index.candidates import check_search
from ..ingest import IngestSummary, as_document
from ..readers import ReaderOptions, clean_text
from ..rerank import DEFAULT_DEPTH, Reranker
from ..types import Document, Hit, SearchResults
from . import layout, merge
from .callers import CandidateRequest, LocalShard, LocalShardCaller, searcher
from .layout import MANIFEST_NAME, ROUTING, global_id, shard_of
from .store_view import ShardedStore
from .writers import Opener, ShardWriter, locked_embedder

if TYPE_CHECKING:
    from ..analyzer import SpanishAnalyzer
    from ..index.indexer import Embedder
    from ..index.manifest import Manifest
    from ..index.reembed import ReembedResult
    from ..index.store import StoredChunk
    from ..quality.adapt import TrainReport
    from ..quality.tuning import TuneResult
    from ..vector_index import IndexSpec


class ShardedEngine:
    """A sharded index: ``SearchEngine``'s methods over N shard folders (``SearchEngine.open``
    returns one for a folder with ``shards.json``)."""

    def __init__(
        self,
        folder: Path,
        shards: list[LocalShard],
        wait: float,
        open_shard: Opener,
        opened: tuple[Encoder | None, dict[str, Any]] = (None, {}),
    ) -> None:
        self.folder, self.shards, self.wait = folder, shards, wait
        self.count = len(shards)
        self.store = ShardedStore(self)
        self._caller = LocalShardCaller(shards)
        self._model_lock = threading.Lock()  # one encoder call at a time: it uses every core
        self._shared: Encoder | None = None
        # for writer processes: how each opens its shard as this engine did
        self._writer = ShardWriter(
            shards,
            lambda: locked_embedder(self.encoder, self._model_lock),
            open_shard,
            opened,
            wait,
        )

    @classmethod
    def open(
        cls,
        folder: Path,
        encoder: Encoder | None = None,
        *,
        open_shard: Opener,
        shards: int | None = None,
        create: bool = True,
        wait: float = 0.0,
        **options: Any,
    ) -> ShardedEngine:
        """Open the sharded index at ``folder``; ``shards=N`` creates one (if ``create``).
        ``open_shard(folder, encoder, create=, wait=, **options)`` opens one shard folder."""
        folders, new = layout.folders_to_open(folder, shards, create)
        engines: list[LocalShard] = []
        try:
            for name in folders:
                try:
                    engines.append(
                        open_shard(folder / name, encoder, create=new, wait=wait, **options)
                    )
                except IndexNotFoundError:
                    raise IndexNotFoundError(
                        f"shard {name} of the index at {folder} is missing; restore the folder "
                        f"{folder / name} (the other shards alone would answer without its "
                        f"documents)."
                    ) from None
        except BaseException:
            for e in engines:
                e.close()
            raise
        if new:  # last: a crash before this leaves shard folders but no sharded index
            layout.write_layout(folder, len(folders))
        return cls(folder, engines, wait, open_shard, (encoder, dict(options)))

    def close(self) -> None:
        self._caller.close()
        for s in self.shards:
            s.close()

    def __enter__(self) -> ShardedEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- routing ---------------------------------------------------------------------------
    def route_one(self, doc_id: str) -> int:
        return shard_of(doc_id, self.count)

    def route(self, ids: Iterable[str]) -> dict[int, list[str]]:
        """Ids grouped by their shard."""
        out: dict[int, list[str]] = {}
        for doc_id in ids:
            out.setdefault(self.route_one(doc_id), []).append(doc_id)
        return out

    def global_id(self, shard: int, chunk_id: int) -> int:
        """A chunk's id across the index (each shard numbers its own chunks)."""
        return global_id(shard, chunk_id, self.count)

    # ----- manifest and encoders -------------------------------------------------------------
    @property
    def primary(self) -> LocalShard:
        """The shard whose manifest speaks for the index: the first one written to."""
        for s in self.shards:
            if s.manifest is not None:
                return s
        return self.shards[0]

    @property
    def manifest(self) -> Manifest | None:
        return self.primary.manifest

    def reload_manifest(self) -> Manifest | None:
        for s in self.shards:
            s.reload_manifest()
        return self.manifest

    def refresh(self, encoder: Encoder | None = None) -> Manifest | None:
        """Every shard's manifest re-read if it changed; the shards must share one model."""
        models = {}
        for s in self.shards:
            m = s.refresh(encoder)
            if m is not None:
                models[(m.encoder, m.dimension)] = s.folder.name
        if len(models) > 1:
            which = ", ".join(f"{name}: {enc}" for (enc, _), name in models.items())
            raise ManifestMismatchError(
                f"the shards of {self.folder} hold vectors of different models ({which}); "
                f"finish the re-embedding with 'beto-search reembed --index {self.folder}'."
            )
        return self.manifest

    @property
    def spec(self) -> IndexSpec:
        return self.primary.spec

    @property
    def options(self) -> Any:
        return self.primary.options

    @property
    def index_options(self) -> Any:
        return self.primary.index_options

    @property
    def analyzer(self) -> SpanishAnalyzer:
        return self.shards[0].analyzer

    @property
    def encoder(self) -> Encoder:
        """The full encoder, built once and shared by every shard (one model in memory)."""
        enc = self.primary.encoder
        if enc is not self._shared:
            for s in self.shards:
                if s is not self.primary:
                    s.share_encoder(enc)
            self._shared = enc
        return enc

    @property
    def query_encoder(self) -> Encoder:
        return self.primary.query_encoder

    def prepare_query_graph(self) -> bool:
        return self.primary.prepare_query_graph()

    def set_default_fusion(self, fusion: dict[str, Any] | None) -> None:
        """The index's default fusion, recorded in every shard's manifest."""
        written = [s for s in self.shards if s.reload_manifest() is not None]
        if not written:
            raise InputError("the index is empty; ingest documents before setting its fusion.")
        for s in written:
            s.set_default_fusion(fusion)

    def fusion_config(self, fusion: str | None = None, alpha: float | None = None) -> FusionConfig:
        m = self.manifest
        return resolve(m.to_dict() if m is not None else None, fusion, alpha)

    # ----- writing ---------------------------------------------------------------------------
    def add(
        self,
        records: Iterable[Document | dict[str, Any]],
        progress: bool = False,
        embedder: Embedder | None = None,
        writers: str = "threads",
    ) -> IngestSummary:
        """Insert or replace documents (each in its shard); ``writers``: "threads" (one shared
        model) or "processes" (one writer process per shard, N models in memory)."""
        return self._writer.write((as_document(r) for r in records), embedder, writers)

    def ingest(
        self,
        paths: Iterable[str | os.PathLike[str]],
        reader: ReaderOptions | None = None,
        prune: bool = False,
        progress: bool | str = False,
        embedder: Embedder | None = None,
        progress_every: float = 5.0,
        writers: str = "threads",
    ) -> IngestSummary:
        """Read files and folders once, routing each document to its shard's writer
        (``progress``: a bar of files read unless False or "none"; ``progress_every`` is accepted
        for ``SearchEngine.ingest``'s signature: the shards' writers report no chunk lines)."""
        summary = self._writer.ingest(paths, reader, prune, progress, embedder, writers)
        from ..quality.tuning import maybe_autotune  # the after-write step, as SearchEngine's

        maybe_autotune(self)  # the same public methods
        self.prepare_query_graph()
        return summary

    def add_embeddings(
        self,
        records: Iterable[Document | dict[str, Any]],
        vectors: np.ndarray,
        chunk_size: int | None = None,
    ) -> IngestSummary:
        """Documents with precomputed vectors (one per document), each to its shard."""
        docs = [as_document(r) for r in records]
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(docs):
            raise InputError(
                f"expected one vector per document ({len(docs)}), got {vectors.shape}."
            )
        rows: dict[int, list[int]] = {}
        for n, d in enumerate(docs):
            rows.setdefault(self.route_one(d.id), []).append(n)
        summaries = [
            self.shards[i].add_embeddings([docs[n] for n in ns], vectors[ns], chunk_size)
            for i, ns in sorted(rows.items())
        ]
        return merge.merge_summaries(summaries)

    def delete(self, ids: Iterable[str]) -> list[str]:
        """Delete documents by id (each from its shard); returns the ids that existed."""
        found: list[str] = []
        for i, part in sorted(self.route(ids).items()):
            found += self.shards[i].delete(part)
        return found

    # ----- reading ---------------------------------------------------------------------------
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
        """The k best documents across the shards: candidates merged, then fused once (and
        reranked once, as ``SearchEngine.search``); ``.warnings`` names filter fields that no
        shard's documents have."""
        check_search(query, k, mode, fusion, alpha)
        reranker = merge.reranker_for(rerank, rerank_depth, rerank_precision, self.reranker)
        manifest = self.refresh()
        config = self.fusion_config(fusion, alpha)
        if manifest is None:
            return SearchResults()
        query = clean_text(query)
        qvec = None
        if mode != "lexical":
            qvec = merge.query_vector(
                query, query_vector, manifest.dimension, lambda: self.query_encoder
            )
        request = CandidateRequest(query, mode, 0, qvec, where, source, ef_search, nprobe)
        out = merge.search_merged(
            self._caller, request, k, config, self.analyzer, snippets, reranker, rerank_depth
        )
        return SearchResults(out.hits, out.warnings)

    def reranker(self, model: str | os.PathLike[str], precision: str | None = None) -> Reranker:
        """The cross-encoder, loaded once (kept by the first shard's engine: one per index)."""
        return self.shards[0].reranker(model, precision)

    def similar(self, doc_id: str, k: int = 10) -> list[Hit]:
        """Documents closest to a stored one, from its stored vectors, across the shards."""
        if not isinstance(k, int) or k < 1:
            raise InputError("the number of results (k) must be a whole number of at least 1.")
        home = self.route_one(doc_id)
        found = searcher(self.shards[home]).document_vector(doc_id)
        if found is None:
            raise InputError(f"there is no document '{doc_id}' in the index.")
        qvec, own = found
        hits, _ = merge.similar_merged(self._caller, qvec, own, home, k)
        return hits

    def candidates(
        self, queries: list[str], depth: int, query_vectors: np.ndarray | None = None
    ) -> tuple[list[dict[int, float]], list[dict[int, float]], dict[int, str]]:
        """Each query's merged dense and lexical candidates and their documents (tuning);
        ``query_vectors``: the queries already encoded."""
        manifest = self.refresh()
        if manifest is None:
            raise InputError("the index is empty; ingest documents first.")
        texts = [clean_text(q) for q in queries]
        if query_vectors is None:
            query_vectors = self.query_encoder.encode_queries(texts)
        qvecs = normalize_rows(np.asarray(query_vectors, dtype=np.float32))
        dense: list[dict[int, float]] = []
        lexical: list[dict[int, float]] = []
        doc_of: dict[int, str] = {}
        for text, qvec in zip(texts, qvecs, strict=True):
            request = CandidateRequest(text, "hybrid", depth, qvec[None, :])
            terms = list(dict.fromkeys(self.analyzer.terms(text)))
            merged = merge.gather(self._caller, request, depth, terms).candidates
            dense.append(merged.dense)
            lexical.append(merged.lexical)
            doc_of.update((g, r.doc_id) for g, r in merged.rows.items())
        return dense, lexical, doc_of

    def get_document(self, doc_id: str) -> dict[str, Any] | None:
        """{id, title, text, source, metadata, chunks: [{chunk_id, start, end}]} or None."""
        i = self.route_one(doc_id)
        doc = self.shards[i].get_document(doc_id)
        if doc is not None:
            for c in doc.get("chunks", []):
                c["chunk_id"] = self.global_id(i, int(c["chunk_id"]))
        return doc

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.shards:
            for key, n in s.counts().items():
                out[key] = out.get(key, 0) + n
        return out

    def iter_chunks(self, batch_size: int = 1024) -> Iterator[list[StoredChunk]]:
        """Every chunk of every shard (shard by shard), with global chunk ids."""
        for i, s in enumerate(self.shards):
            for batch in s.iter_chunks(batch_size):
                yield [replace(c, chunk_id=self.global_id(i, c.chunk_id)) for c in batch]

    def facets(
        self, fields: list[str] | None = None, limit: int = 20
    ) -> dict[str, list[tuple[Any, int]]]:
        """Document counts per metadata value, summed over the shards (exact: each shard gives
        all its values), most common first."""
        return merge.merge_facets([s.facets(fields, sys.maxsize) for s in self.shards], limit)

    # ----- checks and upkeep -----------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The index's facts (totals), and each shard's counts."""
        per = {s.folder.name: s.info() for s in self.shards}
        files = {f"{MANIFEST_NAME}": (self.folder / MANIFEST_NAME).stat().st_size}
        for name, facts in per.items():
            files.update({f"{name}/{n}": size for n, size in facts["files"].items()})
        counts = self.counts()
        return {
            **merge.merge_info(per, self.primary.folder.name),
            "index": str(self.folder),
            "documents": counts["documents"],
            "chunks": counts["chunks"],
            "bytes_on_disk": sum(files.values()),
            "shards": self.count,
            "routing": ROUTING,
            "files": files,
        }

    def verify(self) -> list[str]:
        """Every shard's problems (named by shard), models that differ, documents in a shard
        their id does not route to."""
        problems = []
        try:
            self.refresh()
        except ManifestMismatchError as exc:
            problems.append(str(exc))
        for i, s in enumerate(self.shards):
            name = s.folder.name
            problems += [f"{name}: {p}" for p in s.verify()]
            wrong = sorted(d for d in _doc_ids(s) if self.route_one(d) != i)
            if wrong:
                problems.append(
                    f"{name}: {len(wrong)} documents belong to another shard by their id (first: "
                    f"'{wrong[0]}'); searches find them, but an upsert or delete by id would not"
                )
        return problems

    def repair(self) -> dict[str, Any]:
        zero = {"vectors": 0, "reencoded": 0, "seconds": 0.0}
        return merge.sum_facts([s.repair() for s in self.shards], zero)

    def compact(self) -> dict[str, Any]:
        zero = {"bytes_before": 0, "bytes_after": 0, "staged_chunks_dropped": 0}
        return merge.sum_facts([s.compact() for s in self.shards], zero)

    # ----- tuning, re-embedding, training (lazy imports of quality: named exceptions) --------
    def tune(
        self,
        queries: dict[str, str] | None = None,
        qrels: dict[str, dict[str, int]] | None = None,
        **options: Any,
    ) -> TuneResult:
        """Choose the fusion on the merged candidates (as searches fuse them); every shard
        records it."""
        from ..quality.tuning import tune

        return tune(self, queries, qrels, **options)

    def open_model(self, model: str, precision: str | None = None) -> Encoder:
        return self.primary.open_model(model, precision)

    def open_target(self, model: str | os.PathLike[str], precision: str | None = None) -> Encoder:
        return self.primary.open_target(model, precision)

    def reembed(
        self,
        model: str | os.PathLike[str] | Encoder,
        precision: str | None = None,
        progress: bool = False,
        embedder: Embedder | None = None,
        **options: Any,
    ) -> ReembedResult:
        """Re-embed every shard with one model (loaded once), shard after shard; each shard
        switches atomically, and searches refuse to mix models until the last one has."""
        from ..quality.tuning import maybe_autotune

        if embedder is not None:
            raise InputError(
                "re-embedding a sharded index on Ray is not available yet; leave out --ray."
            )
        if self.refresh() is None:
            raise InputError("the index is empty; there is nothing to re-embed.")
        target = (
            self.open_target(model, precision) if isinstance(model, str | os.PathLike) else model
        )
        done = [
            s.reembed(target, precision, progress, None, **options)
            for s in self.shards
            if s.manifest is not None
        ]
        self._shared = None
        maybe_autotune(self)  # on the merged candidates, not per shard
        return merge.merge_reembeds(done)

    def adapt(self, out: str | os.PathLike[str], **options: Any) -> TrainReport:
        """Adapt the index's model on every shard's chunks (one model for the index)."""
        from ..quality.adapt import adapt

        return adapt(self, out, **options)

    def train(
        self,
        out: str | os.PathLike[str],
        queries: str | os.PathLike[str] | None = None,
        qrels: str | os.PathLike[str] | None = None,
        pairs: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> TrainReport:
        from ..quality.training import train

        return train(self, out, queries, qrels, pairs, **options)


def _doc_ids(shard: LocalShard) -> set[str]:
    return {c.doc_id for batch in shard.iter_chunks() for c in batch}

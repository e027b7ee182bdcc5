"""Sharded indexes: N ordinary index folders behind one engine with ``SearchEngine``'s methods.

Layout::

    PATH/shards.json     {"format": 1, "shards": N, "routing": "blake2b-64 mod N", "folders": [...]}
    PATH/shard-000/      an ordinary index folder (index.db, FAISS cache, locks)
    ...

A document lives in shard ``shard_of(id, N)`` (blake2b of its id, never Python's ``hash``), so a
re-ingest, an upsert and a delete of one id all reach the same shard. Each shard keeps the
index's invariants by itself (its own write lock, transactions, change log, cache); this module
only routes writes and merges reads, through ``SearchEngine``'s public methods and
``Searcher.search_candidates``.

Searches merge BEFORE fusion: every shard returns its dense (cosine: comparable across shards)
and lexical candidates with raw scores, the lexical ones re-scored with bm25 under the GLOBAL
term statistics (the shards' summed row counts, lengths and document frequencies:
Elasticsearch's dfs_query_then_fetch, see ``ShardedEngine._gather``), so both sides score as one
index would; the merged top ``depth`` of each side is then fused, aggregated per document and
snippeted once. The query is encoded once, not once per shard.
Chunk ids seen from outside are global: ``local id * N + shard``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np

from .encoder import Encoder, normalize_rows
from .errors import IndexNotFoundError, InputError, ManifestMismatchError
from .fusion import FusionConfig, resolve
from .index.indexer import Indexer
from .index.searcher import (
    Candidates,
    Searcher,
    add_snippets,
    check_search,
    field_warnings,
    fuse_mode,
    hits_from_rows,
    make_filter,
    plain_snippets,
    rerank_hits,
)
from .ingest import IngestSummary, as_document
from .readers import ReaderOptions, ReadReport, clean_text, iter_files, read_file
from .rerank import DEFAULT_DEPTH, Reranker
from .types import Document, Hit, SearchResults

if TYPE_CHECKING:
    from .analyzer import SpanishAnalyzer
    from .engine import SearchEngine
    from .index.indexer import Embedder
    from .index.manifest import Manifest
    from .index.reembed import ReembedResult
    from .index.store import StoredChunk
    from .quality.adapt import TrainReport
    from .quality.tuning import TuneResult
    from .vector_index import IndexSpec

MANIFEST_NAME = "shards.json"
FORMAT = 1
ROUTING = "blake2b-64 mod N"
MAX_SHARDS = 256
WRITERS = ("threads", "processes")
QUEUE_DOCS = 256  # documents waiting per shard writer (bounds memory while routing)

T = TypeVar("T")


def shard_of(doc_id: str, count: int) -> int:
    """The shard of a document id: stable across processes, machines and Python versions."""
    digest = hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def shard_name(i: int) -> str:
    return f"shard-{i:03d}"


def read_layout(folder: Path) -> list[str]:
    """The shard folders named by ``folder/shards.json`` (checked)."""
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        count, folders = int(data["shards"]), [str(f) for f in data["folders"]]
        routing = data.get("routing")
    except (OSError, ValueError, KeyError, TypeError):
        raise IndexNotFoundError(f"{path} is not a readable shard manifest.") from None
    if routing != ROUTING or count != len(folders) or not 1 <= count <= MAX_SHARDS:
        raise IndexNotFoundError(
            f"{path} names {len(folders)} shard folders for {count} shards with routing "
            f"'{routing}'; this version reads '{ROUTING}' with one folder per shard."
        )
    if any(Path(f).name != f or f in ("", ".", "..") for f in folders):
        raise IndexNotFoundError(f"{path} names shard folders outside the index folder.")
    return folders


def write_layout(folder: Path, count: int) -> list[str]:
    """Write ``shards.json`` for ``count`` new shards (atomically: a crash leaves none)."""
    folders = [shard_name(i) for i in range(count)]
    data = {"format": FORMAT, "shards": count, "routing": ROUTING, "folders": folders}
    tmp = folder / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST_NAME)
    return folders


class ShardedStore:
    """The read-only part of ``Store`` that tuning and evaluation use, over every shard (chunk
    ids global)."""

    def __init__(self, engine: ShardedEngine) -> None:
        self.engine = engine

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction on every shard (each shard's state is one snapshot)."""
        with ExitStack() as stack:
            for s in self.engine.shards:
                stack.enter_context(s.store.snapshot())
            yield

    def hashes(self, ids: Iterable[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i, part in self.engine.route(ids).items():
            out.update(self.engine.shards[i].store.hashes(part))
        return out

    def doc_chunk_ids(self, doc_id: str) -> list[int]:
        i = self.engine.route_one(doc_id)
        return [
            self.engine.global_id(i, c) for c in self.engine.shards[i].store.doc_chunk_ids(doc_id)
        ]

    def ids_by_title(self, titles: list[str]) -> list[tuple[str, str]]:
        rows = [r for s in self.engine.shards for r in s.store.ids_by_title(titles)]
        return sorted(rows, key=lambda r: r[1])

    def chunk_count(self) -> int:
        return sum(s.store.chunk_count() for s in self.engine.shards)

    def counts(self) -> dict[str, int]:
        return self.engine.counts()


class ShardedEngine:
    """A sharded index: ``SearchEngine``'s methods over N shard folders (``SearchEngine.open``
    returns one for a folder with ``shards.json``)."""

    def __init__(self, folder: Path, shards: list[SearchEngine], wait: float) -> None:
        self.folder, self.shards, self.wait = folder, shards, wait
        self.count = len(shards)
        self.store = ShardedStore(self)
        self._model_lock = threading.Lock()  # one encoder call at a time: it uses every core
        self._shared: Encoder | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._opened: tuple[Encoder | None, dict[str, Any]] = (None, {})  # for writer processes

    @classmethod
    def open(
        cls,
        folder: Path,
        encoder: Encoder | None = None,
        *,
        shards: int | None = None,
        create: bool = True,
        wait: float = 0.0,
        **options: Any,
    ) -> ShardedEngine:
        """Open the sharded index at ``folder``; ``shards=N`` creates one (if ``create``)."""
        from .engine import DB_NAME, SearchEngine

        if (folder / MANIFEST_NAME).exists():
            folders = read_layout(folder)
            if shards is not None and shards != len(folders):
                raise InputError(
                    f"the index at {folder} has {len(folders)} shards, not {shards}; leave out "
                    f"--shards to write to it, or give another --index."
                )
            new = False
        else:
            assert shards is not None
            if (folder / DB_NAME).exists():
                raise InputError(
                    f"the index at {folder} is not sharded; leave out --shards to write to it, "
                    f"or give another --index for a sharded one."
                )
            if not create:
                raise IndexNotFoundError(
                    f"there is no index at {folder}; create one with 'beto-search ingest FOLDER "
                    f"--index {folder} --shards {shards}'."
                )
            if not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
                raise InputError(f"the number of shards must be between 1 and {MAX_SHARDS}.")
            if folder.exists() and not folder.is_dir():
                raise InputError(f"{folder} is a file, not an index folder.")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(
                    f"cannot create the index folder {folder} ({exc.strerror})."
                ) from None
            folders, new = [shard_name(i) for i in range(shards)], True
        engines: list[SearchEngine] = []
        try:
            for name in folders:
                try:
                    engines.append(
                        SearchEngine.open_folder(
                            folder / name, encoder, create=new, wait=wait, **options
                        )
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
            write_layout(folder, len(folders))
        out = cls(folder, engines, wait)
        out._opened = (encoder, dict(options))
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
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
        return chunk_id * self.count + shard

    def _map(self, fn: Callable[[int, SearchEngine], T]) -> list[T]:
        """``fn(i, shard)`` on every shard, in parallel threads (SQLite and FAISS release the
        GIL), results in shard order."""
        if self.count == 1:
            return [fn(0, self.shards[0])]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.count, thread_name_prefix="beto-search-shard")
            pool = self._pool
        futures = [pool.submit(fn, i, s) for i, s in enumerate(self.shards)]
        return [f.result() for f in futures]

    # ----- manifest and encoders -------------------------------------------------------------
    @property
    def primary(self) -> SearchEngine:
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
    def _embedder(self) -> Embedder:
        """The shards' embedder: the one shared encoder, one call at a time (the model uses every
        core already), so that N writers overlap only what is not encoding: chunking, analysis,
        SQLite and FAISS writes."""
        enc = self.encoder
        lock = self._model_lock

        def embed(batches: Iterable[Any]) -> Iterator[np.ndarray]:
            for batch in batches:
                with lock:
                    if batch and not isinstance(batch[0], str):
                        vecs = enc.encode_token_ids(batch)  # type: ignore[attr-defined]
                    else:
                        vecs = enc.encode_documents(batch)
                yield np.asarray(vecs, dtype=np.float32)

        return embed

    def _write_routed(
        self, docs: Iterable[Document], embedder: Embedder | None, writers: str = "threads"
    ) -> IngestSummary:
        """Route a stream of documents to the shards, N writers at once (one thread per shard,
        each under its shard's write lock, fed through a bounded queue; or one process per
        shard, see ``_write_processes``)."""
        if embedder is not None:
            raise InputError(
                "encoding on Ray is not available for sharded indexes yet; leave out --ray."
            )
        if writers not in WRITERS:
            raise InputError(f"writers must be one of {', '.join(WRITERS)}, not '{writers}'.")
        if writers == "processes":
            return self._write_processes(docs)
        embed = self._embedder()
        end = object()
        queues: list[queue.Queue[Any]] = [queue.Queue(QUEUE_DOCS) for _ in self.shards]
        failed = threading.Event()

        def feed(q: queue.Queue[Any]) -> Iterator[Document]:
            while (item := q.get()) is not end:
                yield item

        def write(i: int) -> IngestSummary:
            try:
                # the index layer's add: the after-write step runs once, on the merged index
                return Indexer(self.shards[i].ctx).add(feed(queues[i]), False, embed)
            except BaseException:
                failed.set()
                raise

        def put(i: int, item: Any) -> None:
            while True:
                try:
                    queues[i].put(item, timeout=0.1)
                    return
                except queue.Full:
                    if failed.is_set():  # its writer is gone: stop routing, report its error
                        raise _WriterFailed() from None

        with ThreadPoolExecutor(self.count, thread_name_prefix="beto-search-writer") as pool:
            futures = [pool.submit(write, i) for i in range(self.count)]
            try:
                for doc in docs:
                    put(self.route_one(doc.id), doc)
                    if failed.is_set():
                        break
            except _WriterFailed:
                pass
            finally:
                for i in range(self.count):
                    if not futures[i].done():
                        with suppress(_WriterFailed):
                            put(i, end)
            summaries = [f.result() for f in futures]  # raises the first writer's error
        return _merge_summaries(summaries)

    def _write_processes(self, docs: Iterable[Document]) -> IngestSummary:
        """One writer PROCESS per shard: chunking, the Spanish analysis and the encoder's Python
        run in parallel too (threads share one interpreter lock). Each process opens its shard
        as this engine did: with a copy of the given encoder (it must pickle), else its own
        model from the options or the manifest (N models in memory)."""
        import multiprocessing as mp
        import pickle

        encoder, options = self._opened
        if encoder is not None:
            try:
                pickle.dumps(encoder)
            except Exception:
                raise InputError(
                    "this encoder cannot be copied to writer processes; use writers='threads'."
                ) from None
        ctx = mp.get_context("spawn")  # never fork a process that runs threads (torch, SQLite)
        inboxes = [ctx.Queue(8) for _ in self.shards]
        results = ctx.Queue()
        procs = [
            ctx.Process(
                target=_process_writer,
                args=(str(s.folder), encoder, options, self.wait, inboxes[i], results, i),
                daemon=True,
            )
            for i, s in enumerate(self.shards)
        ]
        for proc in procs:
            proc.start()
        done: dict[int, Any] = {}

        def check() -> None:
            while not results.empty():
                i, outcome = results.get()
                done[i] = outcome
            for i, proc in enumerate(procs):
                if i not in done and not proc.is_alive() and proc.exitcode not in (None, 0):
                    done[i] = InputError(f"the writer of shard {i} died (exit {proc.exitcode}).")
            errors = [o for o in done.values() if isinstance(o, BaseException)]
            if errors:
                raise errors[0]

        def put(i: int, item: Any) -> None:
            while True:
                try:
                    inboxes[i].put(item, timeout=0.2)
                    return
                except queue.Full:
                    check()

        batches: list[list[Document]] = [[] for _ in self.shards]
        ok = False
        try:
            for doc in docs:
                i = self.route_one(doc.id)
                batches[i].append(doc)
                if len(batches[i]) >= 64:
                    put(i, batches[i])
                    batches[i] = []
            for i, batch in enumerate(batches):
                if batch:
                    put(i, batch)
                put(i, None)
            while len(done) < len(procs):
                try:
                    i, outcome = results.get(timeout=0.2)
                    done[i] = outcome
                except queue.Empty:
                    check()
            check()
            ok = True
        finally:
            for proc in procs:
                if not ok and proc.is_alive():
                    # a writer failed (or the input did): the others stop where they are; what
                    # they committed is whole documents, as after a crash
                    proc.terminate()
                proc.join(timeout=30)
        return _merge_summaries([done[i] for i in range(len(procs))])

    def add(
        self,
        records: Iterable[Document | dict[str, Any]],
        progress: bool = False,
        embedder: Embedder | None = None,
        writers: str = "threads",
    ) -> IngestSummary:
        """Insert or replace documents (each in its shard); ``writers``: "threads" (one shared
        model) or "processes" (see ``_write_processes``)."""
        return self._write_routed((as_document(r) for r in records), embedder, writers)

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
        import time

        from tqdm import tqdm

        roots = [Path(p) for p in paths]
        if not roots:
            raise InputError("give at least one file or folder to ingest.")
        reader = reader or ReaderOptions()
        report = ReadReport()
        files = list(iter_files(roots, report))
        seen: set[str] = set()
        read_whole: set[str] = set()  # files read without any skip: their absent ids are gone

        def documents() -> Iterator[Document]:
            for path, root in tqdm(
                files, desc="files", unit="file", disable=progress in (False, "none"), leave=False
            ):
                source, skips = _resolved(path), len(report.skips)
                for doc in read_file(path, root, reader, report):
                    doc.source = source
                    seen.add(clean_text(doc.id))
                    yield as_document(doc)
                if len(report.skips) == skips:
                    read_whole.add(source)

        started = time.perf_counter()
        summary = self._write_routed(documents(), embedder, writers)
        if prune:
            summary.pruned = self._prune(roots, seen, read_whole)
        summary.files = report.files
        summary.skipped = report.skips + summary.skipped
        summary.seconds = time.perf_counter() - started
        from .quality.tuning import maybe_autotune

        maybe_autotune(cast("SearchEngine", self))  # duck-typed: the same methods
        self.prepare_query_graph()
        return summary

    def _prune(self, roots: list[Path], seen: set[str], read_whole: set[str]) -> int:
        """Documents whose file is gone, or was read whole without them (as one index)."""
        gone = 0
        for s in self.shards:
            ids = [
                doc_id
                for root in roots
                if root.is_dir()
                for doc_id, source in s.store.sources_under(str(root.resolve()))
                if doc_id not in seen and (source in read_whole or not os.path.exists(source))
            ]
            if ids:
                gone += len(s.delete(ids))
        return gone

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
        return _merge_summaries(summaries)

    def delete(self, ids: Iterable[str]) -> list[str]:
        """Delete documents by id (each from its shard); returns the ids that existed."""
        found: list[str] = []
        for i, part in sorted(self.route(ids).items()):
            found += self.shards[i].delete(part)
        return found

    # ----- reading ---------------------------------------------------------------------------
    def _query_vector(self, query: str, given: np.ndarray | None, dim: int) -> np.ndarray:
        """The query's vector, encoded ONCE for every shard (or the given one, checked)."""
        if given is None:
            return normalize_rows(
                np.asarray(self.query_encoder.encode_queries([query]), dtype=np.float32)
            )
        vec = np.asarray(given, dtype=np.float32)
        if vec.ndim == 1:
            vec = vec[None, :]
        if vec.shape != (1, dim):
            raise InputError(
                f"the query vector must have shape ({dim},) or (1, {dim}), not {tuple(vec.shape)}."
            )
        return normalize_rows(vec)

    def _merge(self, parts: list[Candidates], depth: int) -> Candidates:
        """The shards' candidates under global ids, each side cut to the best ``depth`` (what one
        index would have returned from the same scores)."""
        dense: dict[int, float] = {}
        lexical: dict[int, float] = {}
        rows: dict[int, StoredChunk] = {}
        for i, c in enumerate(parts):
            dense.update((self.global_id(i, k), v) for k, v in c.dense.items())
            lexical.update((self.global_id(i, k), v) for k, v in c.lexical.items())
            rows.update((self.global_id(i, k), r) for k, r in c.rows.items())
        return Candidates(
            _best(dense, depth), _best(lexical, depth), rows, sum(c.reach for c in parts)
        )

    def _gather(
        self,
        query: str,
        mode: str,
        depth: int,
        call: Callable[[int, SearchEngine, int], Candidates],
    ) -> Candidates:
        """Every shard's candidates (``call(i, shard, depth)``), merged and cut to ``depth``, with
        the lexical side scored under the GLOBAL term statistics (Elasticsearch's
        dfs_query_then_fetch): each shard also reports its rows, their total length in terms and
        its document frequency of each query term; their sums give the idf and average length
        that one index of all the shards' rows would use, and each shard's lexical candidates
        are re-scored with FTS5's bm25 formula under them (``bm25``: one index's own figures give
        its own scores, so the sharded scores equal one index's).

        A shard returns its best rows by ITS bm25, which may rank differently: a shard whose
        list was cut is asked again for 4x as many until no row it left out can reach the
        merged top ``depth`` (``_unseen_bound``), so the merged lexical list is the one index's
        top ``depth``, at worst at the cost of reading the shard's matches whole."""
        terms = list(dict.fromkeys(self.analyzer.terms(query))) if mode != "semantic" else []
        if not terms:
            return self._merge(self._map(lambda i, s: call(i, s, depth)), depth)
        want = [depth] * self.count
        parts: list[Candidates | None] = [None] * self.count
        local: list[TermStats | None] = [None] * self.count
        floor = [0.0] * self.count
        todo = set(range(self.count))
        while True:

            def one(
                i: int, s: SearchEngine, todo: set[int] = todo
            ) -> tuple[TermStats | None, Candidates, dict[int, str]] | None:
                if i not in todo:
                    return None
                stats = None
                if local[i] is None:  # the statistics once, with the first candidates
                    rows, tokens = s.store.lexical_totals()
                    stats = TermStats(rows, tokens, s.store.doc_frequencies(terms))
                c = call(i, s, want[i])
                return stats, c, s.store.lexical_terms(list(c.lexical))

            fetched = self._map(one)
            for i, got in enumerate(fetched):
                if got is not None:
                    local[i] = got[0] or local[i]
            glob = TermStats.total([cast(TermStats, st) for st in local])
            for i, got in enumerate(fetched):
                if got is None:
                    continue
                _, c, stored = got
                floor[i] = min(c.lexical.values(), default=0.0)
                rescored = {cid: bm25(terms, stored.get(cid, ""), glob) for cid in c.lexical}
                parts[i] = replace(c, lexical=rescored)
            scores = sorted((v for p in parts if p for v in p.lexical.values()), reverse=True)
            kth = scores[depth - 1] if len(scores) >= depth else -math.inf
            todo = {
                i
                for i, p in enumerate(parts)
                if p is not None
                and len(p.lexical) >= want[i]
                and _unseen_bound(terms, cast(TermStats, local[i]), glob, floor[i]) > kth
            }
            if not todo:
                break
            for i in todo:
                want[i] *= 4
        return self._merge([cast(Candidates, p) for p in parts], depth)

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
        reranker = Searcher(self.shards[0].ctx).reranker_for(rerank, rerank_depth, rerank_precision)
        want = max(k, rerank_depth) if reranker is not None else k
        manifest = self.refresh()
        config = self.fusion_config(fusion, alpha)
        if manifest is None:
            return SearchResults()
        query = clean_text(query)
        flt = make_filter(where, source)
        missing = set.intersection(*(set(s.store.missing_fields(flt)) for s in self.shards))
        fields = sorted({f for s in self.shards for f in s.store.metadata_fields()})
        warnings = field_warnings([f for f in flt.metadata_paths() if f in missing], fields)
        qvec = None
        if mode != "lexical":
            qvec = self._query_vector(query, query_vector, manifest.dimension)
        depth = max(4 * want, 50)
        while True:

            def one(i: int, s: SearchEngine, depth: int) -> Candidates:
                return Searcher(s.ctx).search_candidates(
                    query, depth, mode, where, source, ef_search, nprobe, qvec
                )

            merged = self._gather(query, mode, depth, one)
            fused = fuse_mode(mode, config, merged.dense, merged.lexical)
            hits = hits_from_rows(fused, merged.dense, merged.lexical, merged.rows, want)
            if len(hits) >= want or depth >= merged.reach:
                break
            depth *= 4
        if reranker is not None:
            hits = rerank_hits(reranker, query, hits, rerank_depth)[:k]
        if qvec is not None:  # exact dense scores for the explanation of lexical-only hits
            for i, cids in self._by_shard([h.chunk_id for h in hits if h.dense_score is None]):
                exact = Searcher(self.shards[i].ctx).dense_scores(cids, qvec)
                for h in hits:
                    if h.dense_score is None and h.chunk_id % self.count == i:
                        h.dense_score = exact.get(h.chunk_id // self.count)
        if snippets:
            add_snippets(hits, query, self.analyzer)
        self._locate(hits)
        return SearchResults(hits, warnings)

    def _locate(self, hits: list[Hit]) -> None:
        """Each hit's page or section, from its own shard's document."""
        for i, shard in enumerate(self.shards):
            mine = [h for h in hits if h.chunk_id % self.count == i]
            if mine:
                Searcher(shard.ctx).locate(mine)

    def _by_shard(self, global_ids: list[int]) -> list[tuple[int, list[int]]]:
        out: dict[int, list[int]] = {}
        for g in global_ids:
            out.setdefault(g % self.count, []).append(g // self.count)
        return sorted(out.items())

    def reranker(self, model: str | os.PathLike[str], precision: str | None = None) -> Reranker:
        """The cross-encoder, loaded once (kept by the first shard's engine: one per index)."""
        return self.shards[0].reranker(model, precision)

    def similar(self, doc_id: str, k: int = 10) -> list[Hit]:
        """Documents closest to a stored one, from its stored vectors, across the shards."""
        if not isinstance(k, int) or k < 1:
            raise InputError("the number of results (k) must be a whole number of at least 1.")
        home = self.route_one(doc_id)
        found = Searcher(self.shards[home].ctx).document_vector(doc_id)
        if found is None:
            raise InputError(f"there is no document '{doc_id}' in the index.")
        qvec, own = found
        depth = max(4 * k + len(own), 50)
        while True:

            def one(i: int, s: SearchEngine, depth: int = depth) -> Candidates:
                return Searcher(s.ctx).search_candidates(
                    "",
                    depth,
                    "semantic",
                    query_vector=qvec,
                    exclude=set(own) if i == home else None,
                )

            merged = self._merge(self._map(one), depth)
            hits = hits_from_rows(merged.dense, merged.dense, {}, merged.rows, k)
            if len(hits) >= k or depth >= merged.reach:
                break
            depth *= 4
        plain_snippets(hits)
        self._locate(hits)
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

            def one(
                i: int, s: SearchEngine, depth: int, text: str = text, qvec: np.ndarray = qvec
            ) -> Candidates:
                return Searcher(s.ctx).search_candidates(text, depth, "hybrid", query_vector=qvec)

            merged = self._gather(text, "hybrid", depth, one)
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
        total: dict[str, dict[Any, int]] = {}
        for s in self.shards:
            for key, values in s.facets(fields, sys.maxsize).items():
                per = total.setdefault(key, {})
                for value, n in values:
                    per[value] = per.get(value, 0) + n
        return {
            key: sorted(per.items(), key=lambda vn: (-vn[1], *_sort_key(vn[0])))[:limit]
            for key, per in sorted(total.items())
        }

    # ----- checks and upkeep -----------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The index's facts (totals), and each shard's counts."""
        per = [s.info() for s in self.shards]
        primary = per[self.shards.index(self.primary)]
        files = {f"{MANIFEST_NAME}": (self.folder / MANIFEST_NAME).stat().st_size}
        for s, facts in zip(self.shards, per, strict=True):
            files.update({f"{s.folder.name}/{n}": size for n, size in facts["files"].items()})
        counts = self.counts()
        return {
            **primary,
            "index": str(self.folder),
            "documents": counts["documents"],
            "chunks": counts["chunks"],
            "seq": sum(f["seq"] for f in per),
            "staged": [d for f in per for d in f.get("staged", [])],
            "bytes_on_disk": sum(files.values()),
            "shards": self.count,
            "routing": ROUTING,
            "per_shard": [
                {
                    "shard": s.folder.name,
                    "documents": f["documents"],
                    "chunks": f["chunks"],
                    "seq": f["seq"],
                    "generation": f["generation"],
                    "index_type": f["index_type"],
                    "bytes_on_disk": f["bytes_on_disk"],
                }
                for s, f in zip(self.shards, per, strict=True)
            ],
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
        out = [s.repair() for s in self.shards]
        return {
            "vectors": sum(o["vectors"] for o in out),
            "reencoded": sum(o["reencoded"] for o in out),
            "seconds": sum(o.get("seconds", 0.0) for o in out),
        }

    def compact(self) -> dict[str, Any]:
        out = [s.compact() for s in self.shards]
        return {
            "bytes_before": sum(o["bytes_before"] for o in out),
            "bytes_after": sum(o["bytes_after"] for o in out),
            "staged_chunks_dropped": sum(o.get("staged_chunks_dropped", 0) for o in out),
        }

    # ----- tuning, re-embedding, training ----------------------------------------------------
    def tune(
        self,
        queries: dict[str, str] | None = None,
        qrels: dict[str, dict[str, int]] | None = None,
        **options: Any,
    ) -> TuneResult:
        """Choose the fusion on the merged candidates (as searches fuse them); every shard
        records it."""
        from .quality.tuning import tune

        return tune(cast("SearchEngine", self), queries, qrels, **options)

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
        from .index.reembed import ReembedResult
        from .quality.tuning import maybe_autotune

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
        maybe_autotune(cast("SearchEngine", self))  # on the merged candidates, not per shard
        return ReembedResult(
            encoder=done[0].encoder,
            generation=max(r.generation for r in done),
            chunks=sum(r.chunks for r in done),
            encoded=sum(r.encoded for r in done),
            resumed=sum(r.resumed for r in done),
            stragglers=sum(r.stragglers for r in done),
            seconds=sum(r.seconds for r in done),
        )

    def adapt(self, out: str | os.PathLike[str], **options: Any) -> TrainReport:
        """Adapt the index's model on every shard's chunks (one model for the index)."""
        from .quality.adapt import adapt

        return adapt(cast("SearchEngine", self), out, **options)

    def train(
        self,
        out: str | os.PathLike[str],
        queries: str | os.PathLike[str] | None = None,
        qrels: str | os.PathLike[str] | None = None,
        pairs: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> TrainReport:
        from .quality.training import train

        return train(cast("SearchEngine", self), out, queries, qrels, pairs, **options)


def _process_writer(
    folder: str,
    encoder: Encoder | None,
    options: dict[str, Any],
    wait: float,
    inbox: Any,
    results: Any,
    index: int,
) -> None:
    """A writer process: its shard's ``add`` over the batches it is sent (None ends them); puts
    (index, IngestSummary) or (index, the exception) on ``results``."""
    from .engine import SearchEngine

    def feed() -> Iterator[Document]:
        while (batch := inbox.get()) is not None:
            yield from batch

    try:
        with SearchEngine.open_folder(
            Path(folder), encoder, create=False, wait=wait, **options
        ) as engine:
            summary = Indexer(engine.ctx).add(feed(), False, None)  # no per-shard autotune
        summary.new_ids = set()  # not needed by the caller: do not ship it back
        results.put((index, summary))
    except BaseException as exc:
        results.put((index, exc))


class _WriterFailed(Exception):
    """A shard writer stopped (its error is raised from its future)."""


def _best(scores: dict[int, float], depth: int) -> dict[int, float]:
    if len(scores) <= depth:
        return scores
    return dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:depth])


# FTS5's bm25() (SQLite's fts5_aux.c): k1 = 1.2, b = 0.75, a phrase's
# idf = log((N - n + 0.5) / (n + 0.5)), clamped to 1e-6 where it is not positive
BM25_K1 = 1.2
BM25_B = 0.75


@dataclass(frozen=True)
class TermStats:
    """What bm25 takes from an index for one query: its rows, their total length in terms and
    how many rows hold each query term (one shard's, or every shard's summed)."""

    rows: int
    tokens: int
    df: dict[str, int]

    @staticmethod
    def total(parts: list[TermStats]) -> TermStats:
        df: dict[str, int] = {}
        for p in parts:
            for t, n in p.df.items():
                df[t] = df.get(t, 0) + n
        return TermStats(sum(p.rows for p in parts), sum(p.tokens for p in parts), df)

    def idf(self, term: str) -> float:
        n = self.df.get(term, 0)
        idf = math.log((self.rows - n + 0.5) / (n + 0.5))
        return idf if idf > 0.0 else 1e-6

    @property
    def avgdl(self) -> float:
        return self.tokens / self.rows if self.rows else 1.0


def bm25(terms: list[str], stored: str, stats: TermStats) -> float:
    """FTS5's bm25 score (higher is better) of a row whose analyzed terms are ``stored``, for a
    query of the distinct ``terms`` (each a one-term phrase), under ``stats``: the same
    arithmetic in the same order, so one index's own figures give its own scores."""
    words = stored.split(" ") if stored else []
    length = float(len(words))
    counts: dict[str, int] = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    score = 0.0
    for t in terms:
        f = float(counts.get(t, 0))
        score += stats.idf(t) * (
            (f * (BM25_K1 + 1.0)) / (f + BM25_K1 * (1 - BM25_B + BM25_B * length / stats.avgdl))
        )
    return score


def _unseen_bound(terms: list[str], local: TermStats, glob: TermStats, floor: float) -> float:
    """The highest global bm25 a row that a shard left out of its list could have: its local
    score is at most ``floor`` (the list's last). Per term, the local score is idf_local * T and
    the global one idf_global * T', with T' <= c * T (c = max(1, global avgdl / local avgdl):
    the length factor moves by at most that ratio) and T < k1 + 1; the best split of ``floor``
    over the terms (a fractional knapsack, most global score per local score first) bounds
    the sum."""
    items = [(glob.idf(t), local.idf(t)) for t in terms if local.df.get(t)]
    if not items:
        return 0.0
    c = max(1.0, glob.avgdl / local.avgdl) if local.tokens else 1.0
    items.sort(key=lambda gl: -gl[0] / gl[1])
    left, bound = floor, 0.0
    for g, loc in items:
        take = min(BM25_K1 + 1.0, left / loc)
        bound += c * g * take
        left -= loc * take
        if left <= 0.0:
            break
    return bound


def _merge_summaries(parts: list[IngestSummary]) -> IngestSummary:
    out = IngestSummary()
    for p in parts:
        for key in ("files", "added", "updated", "unchanged", "duplicates", "pruned", "chunks"):
            setattr(out, key, getattr(out, key) + getattr(p, key))
        out.seconds = max(out.seconds, p.seconds)
        out.skipped += p.skipped
        out.new_ids |= p.new_ids
    return out


def _sort_key(value: Any) -> tuple[int, Any]:
    """SQLite's order of facet values: null, numbers, then text."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, value)
    return (2, str(value))


def _doc_ids(engine: SearchEngine) -> set[str]:
    return {c.doc_id for batch in engine.iter_chunks() for c in batch}


def _resolved(path: Path) -> str:
    """The absolute, symlink-free path; a broken or looping link stays as it is."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return os.path.abspath(path)

"""Writing a sharded index: documents routed by id to their shard, N writers at once (threads
sharing one model, or one process per shard), each under its own shard's write lock."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..index.indexer import Indexer
from ..ingest import as_document
from ..readers import ReaderOptions, ReadReport, clean_text, iter_files, read_file
from .callers import LocalShard
from .layout import QUEUE_DOCS, WRITERS, shard_of
from .merge import merge_summaries

if TYPE_CHECKING:
    from ..encoder import Encoder
    from ..index.indexer import Embedder
    from ..ingest import IngestSummary
    from ..types import Document

Opener = Callable[..., LocalShard]  # SearchEngine.open_folder: (folder, encoder, **options)


def locked_embedder(enc: Encoder, lock: threading.Lock) -> Embedder:
    """The shards' embedder: the one shared encoder, one call at a time (the model uses every
    core already), so that N writers overlap only what is not encoding: chunking, analysis,
    SQLite and FAISS writes."""

    def embed(batches: Iterable[Any]) -> Iterator[np.ndarray]:
        for batch in batches:
            with lock:
                if batch and not isinstance(batch[0], str):
                    vecs = enc.encode_token_ids(batch)  # type: ignore[attr-defined]
                else:
                    vecs = enc.encode_documents(batch)
            yield np.asarray(vecs, dtype=np.float32)

    return embed


class ShardWriter:
    """Routes a stream of documents to the shards' writers (``write``) and prunes them."""

    def __init__(
        self,
        shards: Sequence[LocalShard],
        embedder: Callable[[], Embedder],
        open_shard: Opener,
        opened: tuple[Encoder | None, dict[str, Any]],
        wait: float,
    ) -> None:
        self.shards, self.embedder, self.open_shard = shards, embedder, open_shard
        self.opened, self.wait = opened, wait
        self.count = len(shards)

    def write(
        self, docs: Iterable[Document], embedder: Embedder | None, writers: str = "threads"
    ) -> IngestSummary:
        """Route a stream of documents to the shards, N writers at once (one thread per shard,
        each under its shard's write lock, fed through a bounded queue; or one process per
        shard, see ``_processes``)."""
        if embedder is not None:
            raise InputError(
                "encoding on Ray is not available for sharded indexes yet; leave out --ray."
            )
        if writers not in WRITERS:
            raise InputError(f"writers must be one of {', '.join(WRITERS)}, not '{writers}'.")
        if writers == "processes":
            return self._processes(docs)
        return self._threads(docs)

    def _threads(self, docs: Iterable[Document]) -> IngestSummary:
        embed = self.embedder()
        end = object()
        queues: list[queue.Queue[Any]] = [queue.Queue(QUEUE_DOCS) for _ in self.shards]
        failed = threading.Event()

        def feed(q: queue.Queue[Any]) -> Iterator[Document]:
            while (item := q.get()) is not end:
                yield item

        def write(i: int) -> IngestSummary:
            try:
                # the index layer's add: the after-write step (autotune) runs once, on the
                # merged index, not per shard
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
                    put(shard_of(doc.id, self.count), doc)
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
        return merge_summaries(summaries)

    def _processes(self, docs: Iterable[Document]) -> IngestSummary:
        """One writer PROCESS per shard: chunking, the Spanish analysis and the encoder's Python
        run in parallel too (threads share one interpreter lock). Each process opens its shard
        as this engine did: with a copy of the given encoder (it must pickle), else its own
        model from the options or the manifest (N models in memory)."""
        import multiprocessing as mp
        import pickle

        encoder, options = self.opened
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
                args=(
                    self.open_shard,
                    str(s.folder),
                    encoder,
                    options,
                    self.wait,
                    inboxes[i],
                    results,
                    i,
                ),
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
                i = shard_of(doc.id, self.count)
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
        return merge_summaries([done[i] for i in range(len(procs))])

    def ingest(
        self,
        paths: Iterable[str | os.PathLike[str]],
        reader: ReaderOptions | None,
        prune: bool,
        progress: bool | str,
        embedder: Embedder | None,
        writers: str,
    ) -> IngestSummary:
        """Read files and folders once, routing each document to its shard's writer
        (``progress``: a bar of files read unless False or "none")."""
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
        summary = self.write(documents(), embedder, writers)
        if prune:
            summary.pruned = self.prune(roots, seen, read_whole)
        summary.files = report.files
        summary.skipped = report.skips + summary.skipped
        summary.seconds = time.perf_counter() - started
        return summary

    def prune(self, roots: list[Path], seen: set[str], read_whole: set[str]) -> int:
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


def _process_writer(
    open_shard: Opener,
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

    def feed() -> Iterator[Document]:
        while (batch := inbox.get()) is not None:
            yield from batch

    try:
        engine = open_shard(Path(folder), encoder, create=False, wait=wait, **options)
        try:
            summary = Indexer(engine.ctx).add(feed(), False, None)  # no per-shard autotune
        finally:
            engine.close()
        summary.new_ids = set()  # not needed by the caller: do not ship it back
        results.put((index, summary))
    except BaseException as exc:
        results.put((index, exc))


class _WriterFailed(Exception):
    """A shard writer stopped (its error is raised from its future)."""


def _resolved(path: Path) -> str:
    """The absolute, symlink-free path; a broken or looping link stays as it is."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return os.path.abspath(path)

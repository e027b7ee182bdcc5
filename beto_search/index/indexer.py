"""Writing an index: ingest files, add (upsert) documents, precomputed vectors, delete and prune.

Every write runs under the index's write lock (``writing``); documents are stored a batch per
transaction, each document whole (row, chunks, vectors, FTS rows) or not at all; the vector cache
is checkpointed when the write ends. Vectors come from an *embedder*: a callable that takes an
iterable of batches (token-id lists when the index tokenizes with the model, else texts) and
yields one (n_i, dimension) float32 array per batch, in order. The default embedder calls the
index's encoder; a distributed one (Ray) may pipeline.

A document too large to hold (``Document.parts``) is read, chunked, staged and published as a
stream: ``stream.py``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..chunking import Chunker
from ..encoder import normalize_rows
from ..errors import InputError, ManifestMismatchError
from ..ingest import IngestSummary, as_document, content_hash
from ..progress import Progress
from ..readers import ReaderOptions, ReadReport, iter_files, read_file
from ..types import Chunk, Document
from .locking import WriteLock
from .manifest import Manifest
from .store import PreparedDocument
from .stream import BATCH_CHUNKS, Batch, stream_batches, write_streamed

if TYPE_CHECKING:
    from .context import IndexContext

log = logging.getLogger(__name__)

Embedder = Callable[[Iterable[Any]], Iterator[np.ndarray]]


def local_embedder(encoder: Any, token_ids: bool) -> Embedder:
    """The default embedder: the index's own encoder, one batch at a time."""

    def embed(batches: Iterable[Any]) -> Iterator[np.ndarray]:
        for batch in batches:
            if token_ids:
                yield np.asarray(encoder.encode_token_ids(batch), dtype=np.float32)
            else:
                yield np.asarray(encoder.encode_documents(batch), dtype=np.float32)

    return embed


class Indexer:
    """The write side of an index (``Indexer(ctx).add(...)``): built per write call, it keeps
    per-run state."""

    def __init__(self, ctx: IndexContext) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self._known_hashes: dict[str, str] = {}

    @contextmanager
    def writing(self) -> Iterator[None]:
        """The write lock; the cache loaded before and checkpointed after."""
        ctx = self.ctx
        with WriteLock(ctx.folder, ctx.wait):
            # refresh: a re-embed by another process also swaps the encoder (or refuses a stale one)
            if ctx.refresh() is not None:
                ctx.cache.current()  # load (or heal) the cache before changing anything
            yield
            if ctx.manifest is not None:
                ctx.cache.checkpoint()

    # ----- documents -----------------------------------------------------------------------
    def ingest(
        self,
        paths: Iterable[str | os.PathLike[str]],
        reader: ReaderOptions | None,
        prune: bool,
        progress: bool | str,
        embedder: Embedder | None,
        progress_every: float = 5.0,
    ) -> IngestSummary:
        """Read files and folders, then add their documents (upsert by id)."""
        roots = [Path(p) for p in paths]
        if not roots:
            raise InputError("give at least one file or folder to ingest.")
        reader = reader or ReaderOptions()
        report = ReadReport()
        files = list(iter_files(roots, report, reader))
        summary = IngestSummary()
        seen: set[str] = set()
        read_whole: set[str] = set()  # files read without any skip: their absent ids are gone

        def documents() -> Iterator[Document]:
            for path, root in files:
                source, skips = _resolved(path), len(report.skips)
                for doc in read_file(path, root, reader, report):
                    doc.source = source
                    yield doc
                if len(report.skips) == skips:
                    read_whole.add(source)

        started = time.perf_counter()
        total = 0
        for path, _ in files:
            with suppress(OSError):
                total += path.stat().st_size
        bar = Progress(progress, total, progress_every)
        with self.writing():
            try:
                self._add_stream(documents(), summary, seen, bar, embedder)
            finally:
                bar.close()
            if prune:
                summary.pruned = self._prune(roots, seen, read_whole)
        summary.files = report.files
        summary.excluded = report.excluded
        summary.skipped = report.skips + summary.skipped
        summary.seconds = time.perf_counter() - started
        return summary

    def _prune(self, roots: list[Path], seen: set[str], read_whole: set[str]) -> int:
        # a document is gone when its file is, or when its file was read whole without it;
        # a file that could not be read (or had bad records) keeps its documents
        gone = [
            doc_id
            for root in roots
            if root.is_dir()
            for doc_id, source in self.store.sources_under(str(root.resolve()))
            if doc_id not in seen and (source in read_whole or not os.path.exists(source))
        ]
        if not gone:
            return 0
        with self.store.write():
            return len(self.store.delete_documents(gone))

    def add(
        self,
        records: Iterable[Document | dict[str, Any]],
        progress: bool | str,
        embedder: Embedder | None,
    ) -> IngestSummary:
        """Insert or replace documents given as dicts (id, text, title, metadata) or Documents."""
        summary = IngestSummary()
        started = time.perf_counter()
        bar = Progress(progress)
        with self.writing():
            try:
                docs = (as_document(r) for r in records)
                self._add_stream(docs, summary, set(), bar, embedder)
            finally:
                bar.close()
        summary.seconds = time.perf_counter() - started
        return summary

    def _batches(
        self, docs: Iterable[Document], summary: IngestSummary, seen: set[str]
    ) -> Iterator[list[Document]]:
        """Documents grouped into transactions; a repeated id replaces the earlier one."""
        batch: dict[str, Document] = {}
        size = 0
        for doc in docs:
            if doc.id in seen:
                summary.duplicates += 1
                if doc.id not in batch:
                    log.warning("duplicate id %s: the last one wins", doc.id)
            seen.add(doc.id)
            if doc.parts is not None:  # a streamed document: batches of its own
                if batch:
                    yield list(batch.values())
                    batch, size = {}, 0
                yield [doc]
                continue
            batch.pop(doc.id, None)
            batch[doc.id] = doc
            size += max(1, len(doc.text) // 1500)
            if size >= BATCH_CHUNKS:
                yield list(batch.values())
                batch, size = {}, 0
        if batch:
            yield list(batch.values())

    def _add_stream(
        self,
        docs: Iterable[Document],
        summary: IngestSummary,
        seen: set[str],
        progress: Progress,
        embedder: Embedder | None,
        force: bool = False,
    ) -> None:
        pending: deque[Batch] = deque()
        token_ids: list[bool] = []  # decided once the manifest exists

        def feed(batch: Batch) -> Any:
            if not token_ids:
                token_ids.append(self._tokenizes())
            if token_ids[0]:
                return [c.token_ids or [] for c in batch.chunks]
            return [c.text for c in batch.chunks]

        def inputs() -> Iterator[Any]:
            for docs_ in self._batches(docs, summary, seen):
                if docs_[0].parts is not None:
                    for batch in self._stream_batches(docs_[0], summary, progress, force):
                        pending.append(batch)
                        if batch.chunks:  # a last batch with nothing new only publishes
                            yield feed(batch)
                    continue
                prepared = self._prepare(docs_, summary, progress, force)
                if prepared is None:
                    continue
                pending.append(prepared)
                yield feed(prepared)
            done.append(True)

        def publish_ready() -> None:
            # a streamed document's last batch with nothing new was never given to the embedder:
            # it publishes in its turn
            while pending and pending[0].stream is not None and not pending[0].chunks:
                self._write(pending.popleft(), np.zeros((0, 0)), summary, progress)

        done: list[bool] = []
        for vectors in self._embed(inputs(), embedder, token_ids):
            publish_ready()
            if not pending:
                raise InputError("the embedder yielded more batches than it was given.")
            self._write(pending.popleft(), vectors, summary, progress)
        publish_ready()
        if pending or not done:
            raise InputError(
                "the embedder stopped before embedding every batch; the batches "
                "it embedded were stored, the rest were not."
            )

    def _embed(
        self, feed: Iterator[Any], embedder: Embedder | None, token_ids: list[bool]
    ) -> Iterator[np.ndarray]:
        """The embedder's outputs; the default one is made once the first batch is known."""
        if embedder is not None:
            yield from embedder(feed)
            return
        first = next(feed, None)
        if first is None:
            return
        enc = self.ctx.encoder

        def chain() -> Iterator[Any]:
            yield first
            yield from feed

        yield from local_embedder(enc, token_ids[0])(chain())

    def _tokenizes(self) -> bool:
        """Whether chunks are embedded from their token ids (the index tokenizes with the model)."""
        m = self.ctx.manifest
        assert m is not None
        enc = self.ctx.encoder
        return (
            m.tokenizer == "model"
            and getattr(enc, "tokenizer", None) is not None
            and hasattr(enc, "encode_token_ids")
        )

    def _chunker(self, m: Manifest) -> Chunker:
        tok = getattr(self.ctx.encoder, "tokenizer", None) if m.tokenizer == "model" else None
        return Chunker(tok, int(m.chunk_tokens), int(m.overlap))

    def _manifest(self) -> Manifest:
        """The index's manifest, created (and saved) on the first write."""
        m = self.ctx.manifest
        if m is None:
            m = Manifest.for_encoder(self.ctx.encoder, self.ctx.index_options)
            with self.store.write():
                m.save(self.store)
            self.ctx.reload_manifest()
            self.ctx.cache.rebuild()  # the new, empty cache
        return m

    def _prepare(
        self, docs: list[Document], summary: IngestSummary, progress: Progress, force: bool
    ) -> Batch | None:
        """Skip unchanged documents, create the manifest on the first write, chunk the rest."""
        old = self.store.hashes(d.id for d in docs)
        todo = []
        for d in docs:
            h = content_hash(d)
            if old.get(d.id) == h and not force:
                summary.unchanged += 1
                progress.skip(len(d.text))
            else:
                todo.append((d, h))
        if not todo:
            return None
        chunker = self._chunker(self._manifest())
        prepared, chunks = [], []
        for d, h in todo:
            parts = chunker.chunk(d.text)
            prepared.append(PreparedDocument(d, h, parts, np.zeros(0), []))
            chunks.extend(parts)
        return Batch(todo, prepared, chunks, force, chars=sum(len(d.text) for d, _ in todo))

    def _stream_batches(
        self, doc: Document, summary: IngestSummary, progress: Progress, force: bool
    ) -> Iterator[Batch]:
        """A streamed document's batches of new chunks (``stream.stream_batches``)."""
        h = self._known_hashes.get(doc.id) or content_hash(doc)

        def chunker() -> Chunker:
            return self._chunker(self._manifest())

        return stream_batches(self.store, doc, h, chunker, summary, progress, force)

    def _write(
        self, batch: Batch, vectors: np.ndarray, summary: IngestSummary, progress: Progress
    ) -> None:
        m = self.ctx.manifest
        assert m is not None
        vectors = np.asarray(vectors, dtype=np.float32)
        if batch.stream is not None and not batch.chunks:
            vectors = vectors.reshape(0, int(m.dimension))
        if vectors.shape != (len(batch.chunks), int(m.dimension)):
            raise ManifestMismatchError(
                f"the encoder returned vectors of shape {vectors.shape} for {len(batch.chunks)} "
                f"chunks of dimension {m.dimension}; nothing of this batch was written."
            )
        vectors = normalize_rows(vectors)
        analyzer = self.ctx.analyzer
        if batch.stream is not None:
            write_streamed(self.store, analyzer, batch, vectors, summary)
            progress.update(len(batch.chunks), batch.chars)
            return
        # the stored hashes now, not when the batch was prepared: a pipelining embedder has later
        # batches prepared before earlier ones are written, so an id repeated in this run may be
        # stored by now, and unchanged (it is kept as it is, as a one-batch-at-a-time run would)
        old = self.store.hashes(d.id for d, _ in batch.todo)
        todo, prepared, pos, chunks = [], [], 0, 0
        for (d, h), p in zip(batch.todo, batch.prepared, strict=True):
            n = len(p.chunks)
            if old.get(d.id) == h and not batch.force:
                summary.unchanged += 1
            else:
                p.vectors = vectors[pos : pos + n]
                p.terms = [analyzer.analyze(c.text) for c in p.chunks]
                todo.append((d, h))
                prepared.append(p)
                chunks += n
            pos += n
        if prepared:
            with self.store.write():
                self.store.put_documents(prepared)
        for d, _ in todo:
            if d.id in summary.new_ids:  # a repeat of an id added earlier in this run
                continue
            if d.id in old:
                summary.updated += 1
            else:
                summary.added += 1
                summary.new_ids.add(d.id)
        summary.chunks += chunks
        progress.update(len(batch.chunks), batch.chars)

    def reencode(self, doc_ids: list[str]) -> int:
        """Encode stored documents again and store them (repair; caller holds the write lock)."""
        docs = []
        for doc_id in doc_ids:
            d = self.store.document(doc_id, whole=False)
            if d is None:
                continue
            parts = None
            if not d["text"]:  # a streamed document: streamed again from its chunks

                def parts(doc_id: str = doc_id) -> Iterator[tuple[str, dict[str, Any]]]:
                    for text in self.store.text_from_chunks(doc_id):
                        yield text, {}

            docs.append(
                Document(
                    id=d["id"],
                    text=d["text"],
                    title=d["title"],
                    source=d["source"],
                    metadata=d["metadata"],
                    locations=d.get("locations", []),
                    parts=parts,
                )
            )
        # a streamed document keeps its stored hash (its file may have changed since: the next
        # ingest must still see it as changed)
        self._known_hashes = self.store.hashes(d.id for d in docs if d.parts is not None)
        try:
            self._add_stream(docs, IngestSummary(), set(), Progress(False), None, force=True)
        finally:
            self._known_hashes = {}
        return len(docs)

    # ----- vectors given, deletes ----------------------------------------------------------
    def add_embeddings(
        self,
        records: Iterable[Document | dict[str, Any]],
        vectors: np.ndarray,
        chunk_size: int | None = None,
    ) -> IngestSummary:
        """Store documents with precomputed vectors, one vector per document (one chunk each)."""
        docs = [as_document(r) for r in records]
        vectors = np.asarray(vectors, dtype=np.float32)
        m = self.ctx.manifest
        if m is None:
            raise InputError("add precomputed vectors to an index created with an encoder first.")
        dim = int(m.dimension)
        if vectors.ndim != 2 or vectors.shape != (len(docs), dim):
            raise InputError(
                f"expected vectors of shape ({len(docs)}, {dim}), got {vectors.shape}."
            )
        summary = IngestSummary()
        started = time.perf_counter()
        analyzer = self.ctx.analyzer
        with self.writing():
            step = chunk_size or 5000
            for i in range(0, len(docs), step):
                part = docs[i : i + step]
                prepared = [
                    PreparedDocument(
                        d,
                        content_hash(d),
                        [Chunk(0, 0, len(d.text), d.text)],
                        normalize_rows(vectors[i + j : i + j + 1]),
                        [analyzer.analyze(d.text)],
                    )
                    for j, d in enumerate(part)
                ]
                old = self.store.hashes(d.id for d in part)
                with self.store.write():
                    self.store.put_documents(prepared)
                summary.updated += sum(1 for d in part if d.id in old)
                summary.added += sum(1 for d in part if d.id not in old)
                summary.chunks += len(part)
        summary.seconds = time.perf_counter() - started
        return summary

    def delete(self, ids: Iterable[str]) -> list[str]:
        """Delete documents by id; returns the ids that existed."""
        ids = list(ids)
        with self.writing(), self.store.write():
            return self.store.delete_documents(ids)


def _resolved(path: Path) -> str:
    """The absolute, symlink-free path; a broken or looping link stays as it is."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return os.path.abspath(path)

"""Writing an index: ingest files, add (upsert) documents, precomputed vectors, delete and prune.

Every write runs under the index's write lock (``writing``); documents are stored a batch per
transaction, each document whole (row, chunks, vectors, FTS rows) or not at all; the vector cache
is checkpointed when the write ends. Vectors come from an *embedder*: a callable that takes an
iterable of batches (token-id lists when the index tokenizes with the model, else texts) and
yields one (n_i, dimension) float32 array per batch, in order. The default embedder calls the
engine's encoder; a distributed one (Ray) may pipeline.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .chunking import Chunker
from .encoder import normalize_rows
from .errors import InputError, ManifestMismatchError
from .ingest import IngestSummary, as_document, content_hash
from .locking import WriteLock
from .manifest import Manifest
from .readers import ReaderOptions, ReadReport, iter_files, read_file
from .store import PreparedDocument
from .types import Chunk, Document

if TYPE_CHECKING:
    from .engine import SearchEngine

log = logging.getLogger(__name__)

BATCH_CHUNKS = 128  # chunks per ingest transaction (estimated from text length)

Embedder = Callable[[Iterable[Any]], Iterator[np.ndarray]]


def local_embedder(encoder: Any, token_ids: bool) -> Embedder:
    """The default embedder: the engine's own encoder, one batch at a time."""

    def embed(batches: Iterable[Any]) -> Iterator[np.ndarray]:
        for batch in batches:
            if token_ids:
                yield np.asarray(encoder.encode_token_ids(batch), dtype=np.float32)
            else:
                yield np.asarray(encoder.encode_documents(batch), dtype=np.float32)

    return embed


@dataclass
class _Batch:
    """Documents of one transaction, chunked, waiting for their vectors."""

    todo: list[tuple[Document, str]]
    prepared: list[PreparedDocument]
    chunks: list[Chunk]
    force: bool


class Indexer:
    """The write side of an engine (``Indexer(engine).add(...)``)."""

    def __init__(self, engine: SearchEngine) -> None:
        self.engine = engine
        self.store = engine.store

    @contextmanager
    def writing(self) -> Iterator[None]:
        """The write lock; the cache loaded before and checkpointed after."""
        engine = self.engine
        with WriteLock(engine.folder, engine.wait):
            # refresh: a re-embed by another process also swaps the encoder (or refuses a stale one)
            if engine.refresh() is not None:
                engine.cache.current()  # load (or heal) the cache before changing anything
            yield
            if engine.manifest is not None:
                engine.cache.checkpoint()

    # ----- documents -----------------------------------------------------------------------
    def ingest(
        self,
        paths: Iterable[str | os.PathLike[str]],
        reader: ReaderOptions | None,
        prune: bool,
        progress: bool,
        embedder: Embedder | None,
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
            from tqdm import tqdm  # a progress bar only where one is drawn

            for path, root in tqdm(
                files, desc="files", unit="file", disable=not progress, leave=False
            ):
                source, skips = _resolved(path), len(report.skips)
                for doc in read_file(path, root, reader, report):
                    doc.source = source
                    yield doc
                if len(report.skips) == skips:
                    read_whole.add(source)

        started = time.perf_counter()
        with self.writing():
            self._add_stream(documents(), summary, seen, progress, embedder)
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
        progress: bool,
        embedder: Embedder | None,
    ) -> IngestSummary:
        """Insert or replace documents given as dicts (id, text, title, metadata) or Documents."""
        summary = IngestSummary()
        started = time.perf_counter()
        with self.writing():
            self._add_stream((as_document(r) for r in records), summary, set(), progress, embedder)
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
        progress: bool,
        embedder: Embedder | None,
        force: bool = False,
    ) -> None:
        from tqdm import tqdm  # a progress bar only where one is drawn

        bar = tqdm(desc="embedding", unit="chunk", disable=not progress, leave=False)
        pending: deque[_Batch] = deque()
        token_ids: list[bool] = []  # decided once the manifest exists

        def inputs() -> Iterator[Any]:
            for docs_ in self._batches(docs, summary, seen):
                batch = self._prepare(docs_, summary, force)
                if batch is None:
                    continue
                if not token_ids:
                    token_ids.append(self._tokenizes())
                pending.append(batch)
                if token_ids[0]:
                    yield [c.token_ids or [] for c in batch.chunks]
                else:
                    yield [c.text for c in batch.chunks]
            done.append(True)

        done: list[bool] = []
        try:
            for vectors in self._embed(inputs(), embedder, token_ids):
                if not pending:
                    raise InputError("the embedder yielded more batches than it was given.")
                self._write(pending.popleft(), vectors, summary, bar)
            if pending or not done:
                raise InputError(
                    "the embedder stopped before embedding every batch; the batches "
                    "it embedded were stored, the rest were not."
                )
        finally:
            bar.close()

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
        enc = self.engine.encoder

        def chain() -> Iterator[Any]:
            yield first
            yield from feed

        yield from local_embedder(enc, token_ids[0])(chain())

    def _tokenizes(self) -> bool:
        """Whether chunks are embedded from their token ids (the index tokenizes with the model)."""
        m = self.engine.manifest
        assert m is not None
        enc = self.engine.encoder
        return (
            m.tokenizer == "model"
            and getattr(enc, "tokenizer", None) is not None
            and hasattr(enc, "encode_token_ids")
        )

    def _chunker(self, m: Manifest) -> Chunker:
        tok = getattr(self.engine.encoder, "tokenizer", None) if m.tokenizer == "model" else None
        return Chunker(tok, int(m.chunk_tokens), int(m.overlap))

    def _prepare(self, docs: list[Document], summary: IngestSummary, force: bool) -> _Batch | None:
        """Skip unchanged documents, create the manifest on the first write, chunk the rest."""
        old = self.store.hashes(d.id for d in docs)
        todo = []
        for d in docs:
            h = content_hash(d)
            if old.get(d.id) == h and not force:
                summary.unchanged += 1
            else:
                todo.append((d, h))
        if not todo:
            return None
        m = self.engine.manifest
        if m is None:
            m = Manifest.for_encoder(self.engine.encoder, self.engine.index_options)
            with self.store.write():
                m.save(self.store)
            self.engine.reload_manifest()
            self.engine.cache.rebuild()  # the new, empty cache
        chunker = self._chunker(m)
        prepared, chunks = [], []
        for d, h in todo:
            parts = chunker.chunk(d.text)
            prepared.append(PreparedDocument(d, h, parts, np.zeros(0), []))
            chunks.extend(parts)
        return _Batch(todo, prepared, chunks, force)

    def _write(self, batch: _Batch, vectors: np.ndarray, summary: IngestSummary, bar: Any) -> None:
        m = self.engine.manifest
        assert m is not None
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(batch.chunks), int(m.dimension)):
            raise ManifestMismatchError(
                f"the encoder returned vectors of shape {vectors.shape} for {len(batch.chunks)} "
                f"chunks of dimension {m.dimension}; nothing of this batch was written."
            )
        vectors = normalize_rows(vectors)
        analyzer = self.engine.analyzer
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
        bar.update(len(batch.chunks))

    def reencode(self, doc_ids: list[str]) -> int:
        """Encode stored documents again and store them (repair; caller holds the write lock)."""
        docs = [
            Document(
                id=d["id"],
                text=d["text"],
                title=d["title"],
                source=d["source"],
                metadata=d["metadata"],
                locations=d.get("locations", []),
            )
            for d in map(self.store.document, doc_ids)
            if d
        ]
        self._add_stream(docs, IngestSummary(), set(), False, None, force=True)
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
        m = self.engine.manifest
        if m is None:
            raise InputError("add precomputed vectors to an index created with an encoder first.")
        dim = int(m.dimension)
        if vectors.ndim != 2 or vectors.shape != (len(docs), dim):
            raise InputError(
                f"expected vectors of shape ({len(docs)}, {dim}), got {vectors.shape}."
            )
        summary = IngestSummary()
        started = time.perf_counter()
        analyzer = self.engine.analyzer
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

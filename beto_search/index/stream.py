"""The streamed path of a write: a document too large to hold (``Document.parts``: a 20 MB text, a
2,000-page PDF) is read and chunked as a stream; its batches go to staging tables
(``store.stage_chunks``, one transaction per batch) that searches never read, and it is published
in one transaction at its end (``store.publish_staged``). A run killed in between loses at most
the batches in flight; the next run with the same content re-chunks the stream (cheap) and encodes
only the chunks after the last staged one. ``Indexer`` drives it (``indexer.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..chunking import Chunker
from ..ingest import IngestSummary
from ..progress import Progress
from ..readers import Skip
from ..types import Chunk, Document
from .store import PreparedDocument, Store

if TYPE_CHECKING:
    from ..analyzer import SpanishAnalyzer

log = logging.getLogger(__name__)

BATCH_CHUNKS = 128  # chunks per ingest transaction (estimated from text length)


@dataclass
class Batch:
    """Documents of one transaction, chunked, waiting for their vectors; or a batch of one
    streamed document (``stream``), the last of which publishes it."""

    todo: list[tuple[Document, str]]
    prepared: list[PreparedDocument]
    chunks: list[Chunk]
    force: bool
    chars: int = 0  # characters of input the batch covers (progress)
    stream: tuple[Document, str] | None = None
    publish: bool = False


def stream_batches(
    store: Store,
    doc: Document,
    h: str,
    chunker: Callable[[], Chunker],
    summary: IngestSummary,
    progress: Progress,
    force: bool,
) -> Iterator[Batch]:
    """A streamed document's batches of new chunks (``h``: its content hash), the last one
    marked to publish it; ``chunker``: made once the document is known to be new or changed.

    Chunks already staged by a killed run with the same content are cut again (so the
    stream goes on from the same place) but not given to the embedder again."""
    if not force and store.hashes([doc.id]).get(doc.id) == h:
        summary.unchanged += 1
        return
    chunks = chunker()
    with store.write():
        store.ensure_staging_tables()
        staged, last = store.begin_staging(doc.id, h, doc.source)
    locations: list[tuple[int, dict[str, Any]]] = []

    def texts() -> Iterator[str]:
        pos = 0
        for text, where in doc.parts():  # type: ignore[misc]  # checked by the caller
            if where:
                locations.append((pos, where))
            pos += len(text)
            yield text

    group: list[Chunk] = []
    done_to = 0  # input characters covered by the batches handed on
    n = 0
    for c in chunks.chunk_stream(texts()):
        n += 1
        if c.ordinal < staged:
            if c.ordinal == staged - 1:
                if (c.start, c.end) != last:  # cut otherwise than staged: start over
                    log.warning("staged chunks of %s do not match: encoding anew", doc.id)
                    with store.write():
                        store.drop_staging(doc.id)
                    yield from stream_batches(store, doc, h, chunker, summary, progress, force)
                    return
                log.info("%s: resuming after %d staged chunks", doc.id, staged)
                summary.resumed += staged
                progress.skip(c.end)
                done_to = c.end
            continue
        group.append(c)
        if len(group) >= BATCH_CHUNKS:
            yield Batch([(doc, h)], [], group, force, c.end - done_to, (doc, h))
            done_to, group = c.end, []
    if n == 0:
        with store.write():
            store.drop_staging(doc.id)
        summary.skipped.append(Skip(doc.source or doc.id, "empty or whitespace-only"))
        return
    if locations or not doc.locations:  # a repaired stream keeps its stored locations
        doc.locations = locations
    end = group[-1].end if group else done_to
    yield Batch([(doc, h)], [], group, force, end - done_to, (doc, h), publish=True)


def write_streamed(
    store: Store,
    analyzer: SpanishAnalyzer,
    batch: Batch,
    vectors: np.ndarray,
    summary: IngestSummary,
) -> None:
    """Stage a streamed document's batch; the last one publishes it in the same transaction."""
    assert batch.stream is not None
    doc, h = batch.stream
    terms = [analyzer.analyze(c.text) for c in batch.chunks]
    old = store.hashes([doc.id]) if batch.publish else {}
    with store.write():
        if batch.chunks:
            store.stage_chunks(doc.id, h, batch.chunks, vectors, terms)
        if batch.publish:
            store.publish_staged(doc, h)
    summary.chunks += len(batch.chunks)
    if batch.publish and doc.id not in summary.new_ids:
        if doc.id in old:
            summary.updated += 1
        else:
            summary.added += 1
            summary.new_ids.add(doc.id)

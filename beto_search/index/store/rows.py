"""The values that go into and come out of the store's rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import IndexCorruptError
from ...types import Chunk, Document
from ...validation import load_metadata


@dataclass
class StoredChunk:
    """A chunk row joined with its document's fields."""

    chunk_id: int
    doc_id: str
    ordinal: int
    start: int
    end: int
    text: str
    title: str
    source: str
    metadata: dict[str, Any]


def stored_chunk(row: tuple[Any, ...]) -> StoredChunk:
    """A (chunk id, doc id, ordinal, start, end, text, title, source, metadata JSON) row."""
    cid, doc_id, ordinal, start, end, text, title, source, meta = row
    return StoredChunk(cid, doc_id, ordinal, start, end, text, title, source, load_metadata(meta))


def document_row(doc: Document, content_hash: str, created: str, stamp: str) -> dict[str, Any]:
    """The ``documents`` row of a document (a streamed one's text is its chunks': "" here)."""
    return {
        "id": doc.id,
        "source": doc.source,
        "title": doc.title,
        "text": doc.text,
        "metadata": json.dumps(doc.metadata, ensure_ascii=False, default=str),
        "locations": json.dumps(doc.locations, ensure_ascii=False),
        "content_hash": content_hash,
        "created_at": created,
        "updated_at": stamp,
    }


@dataclass
class PreparedDocument:
    """A document ready to store: its chunks, their vectors and their analyzed terms."""

    doc: Document
    content_hash: str
    chunks: list[Chunk]
    vectors: np.ndarray
    terms: list[str]


@dataclass(frozen=True)
class CacheState:
    """What the vector cache must agree with: the change sequence, the history floor (changes at
    or below it are gone) and the manifest's generation (bumped by a re-embedding)."""

    seq: int
    floor: int
    generation: int


def as_matrix(ids: list[int], blobs: list[bytes], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) from stored float32 blobs (a blob of another size: the index is corrupt)."""
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
    data = b"".join(blobs)
    # compared in bytes before numpy reads them: a blob that is not whole floats is corrupt too
    if len(data) != 4 * len(ids) * dim:
        raise IndexCorruptError("stored vectors do not match the index's dimension; run verify.")
    mat = np.frombuffer(data, dtype=np.float32)
    return np.asarray(ids, dtype=np.int64), mat.reshape(len(ids), dim)

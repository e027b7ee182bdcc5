"""SQLite (through sqlite-utils) as the source of truth, and all of the project's SQL.

Tables: ``documents``; ``chunks`` (rowid = vector id, AUTOINCREMENT so ids are never reused);
``embeddings`` (float32 blobs, one per chunk); ``chunks_fts`` (FTS5 over analyzed terms, rowid =
chunk id); ``changes`` (every chunk added or removed, with a sequence number the FAISS cache
catches up from); ``manifest`` (settings fixed at creation) and ``meta`` (counters).
A document's rows change in one transaction: it is all there or not at all.

``Store`` is one class put together from the parts below, each owning its tables or concern;
they all build on ``StoreBase`` (connections, transactions, manifest), and no part imports this
package, so the modules form no cycle:

| module | owns |
| --- | --- |
| ``schema`` | the tables and columns, created or completed on open; shared SQL fragments |
| ``filters`` | ``Filter`` and the folding SQL functions registered on each connection |
| ``rows`` | the values in and out of rows: ``StoredChunk``, ``PreparedDocument``, ``CacheState`` |
| ``base`` | ``StoreBase``: a connection per thread, ``write``/``snapshot``, manifest, counters |
| ``lexical`` | ``chunks_fts`` reads (bm25 candidates, stored terms) and the kept term statistics |
| ``staging`` | the staging tables of streamed documents |
| ``documents`` | every write of the live document tables: put, publish from staging, delete |
| ``reading`` | documents, chunks, vectors, locations, facets and filtered ids as stored |
| ``checks`` | row counts and the rows that break the invariants (``verify``) |
| ``next_vectors`` | re-embedding's side vectors and the switching transaction |
"""

from __future__ import annotations

from .base import StoreBase
from .checks import ChecksMixin
from .documents import DocumentsMixin
from .filters import BUILTIN_FILTER_FIELDS, Filter, fold_value, register_functions
from .lexical import LexicalMixin
from .next_vectors import NextVectorsMixin
from .reading import ReadingMixin
from .rows import CacheState, PreparedDocument, StoredChunk, document_row
from .schema import DOCUMENT_COLUMNS, RAW_SCHEMA, now, term_count
from .staging import StagingMixin

__all__ = [
    "BUILTIN_FILTER_FIELDS",
    "DOCUMENT_COLUMNS",
    "RAW_SCHEMA",
    "CacheState",
    "Filter",
    "PreparedDocument",
    "Store",
    "StoreBase",
    "StoredChunk",
    "document_row",
    "fold_value",
    "now",
    "register_functions",
    "term_count",
]


class Store(
    DocumentsMixin,
    ReadingMixin,
    ChecksMixin,
    NextVectorsMixin,
    LexicalMixin,
    StagingMixin,
    StoreBase,
):
    """The index database: one writer at a time, any number of readers (WAL).

    Each thread gets its own connection (``conn``), so each thread has its own transactions and
    snapshots; a connection is never used by two threads at once.
    """

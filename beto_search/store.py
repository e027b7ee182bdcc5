"""SQLite (through sqlite-utils) as the source of truth, and all of the project's SQL.

Tables: ``documents``; ``chunks`` (rowid = vector id, AUTOINCREMENT so ids are never reused);
``embeddings`` (float32 blobs, one per chunk); ``chunks_fts`` (FTS5 over analyzed terms, rowid =
chunk id); ``changes`` (every chunk added or removed, with a sequence number the FAISS cache
catches up from); ``manifest`` (settings fixed at creation) and ``meta`` (counters).
A document's rows change in one transaction: it is all there or not at all.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import IndexCorruptError, InputError, StorageError
from .types import Chunk, Document
from .validation import load_metadata

if TYPE_CHECKING:
    import sqlite_utils


def _import_sqlite_utils() -> Any:
    """sqlite_utils, imported without pandas: sqlite-utils imports pandas whenever it is installed
    (Ray brings it), only to convert pandas values we never pass, and that import alone costs
    ~0.3 s of every cold command. Hiding it for this one import changes nothing else: a later
    ``import pandas`` elsewhere works as usual."""
    import sys

    if "sqlite_utils" in sys.modules or "pandas" in sys.modules:
        import sqlite_utils

        return sqlite_utils
    sys.modules["pandas"] = None  # type: ignore[assignment]  # makes `import pandas` fail fast
    try:
        import sqlite_utils
    finally:
        del sys.modules["pandas"]
    return sqlite_utils


sqlite_utils = _import_sqlite_utils()

# sqlite-utils cannot declare AUTOINCREMENT (``chunks`` and ``changes`` need ids never reused)
# nor a free-standing FTS5 table over analyzed terms (its ``enable_fts`` indexes a table's own
# columns through triggers): these three stay raw SQL, with the same names and columns as always.
RAW_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, ordinal INTEGER NOT NULL,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, chunk_id INTEGER NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    terms, tokenize = 'unicode61 remove_diacritics 0');
"""
DOCUMENT_COLUMNS = {
    "id": str,
    "source": str,
    "title": str,
    "text": str,
    "metadata": str,
    "locations": str,  # JSON [[offset, {"page": 3}], ...]: where pages / sections start
    "content_hash": str,
    "created_at": str,
    "updated_at": str,
}

# metadata read by SQLite's JSON functions: a row that is not valid JSON (written before the
# checks of validation.py, or by hand) counts as {} instead of failing the whole query
_VALID_METADATA = "CASE WHEN json_valid(d.metadata) THEN d.metadata ELSE '{}' END"
_KEY_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


def _stored_chunk(row: tuple[Any, ...]) -> StoredChunk:
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


def fold_value(value: str) -> str:
    """The form filters compare text in: NFKD without combining marks (á -> a, ü -> u, and
    ñ -> n too), case-folded, surrounding spaces dropped. Unlike the lexical analyzer, which keeps
    ñ so that the stems "año" and "ano" stay apart, a filter compares whole values (a category, a
    place, an author), where users type "espana" for "España" far more often than two values
    differ only by ñ."""
    out = "".join(
        ch for ch in unicodedata.normalize("NFKD", value) if not unicodedata.combining(ch)
    )
    return out.casefold().strip()


@lru_cache(maxsize=1 << 16)  # a field holds few distinct values: most rows are a cache hit
def _filter_match(kind: str | None, stored: str | None, folded: str, raw: str) -> int:
    """SQL ``beto_filter_match(json_type, CAST(value AS TEXT), folded wanted, raw wanted)``: text
    matches without regard to case and accents, numbers exactly as written, booleans as
    true/false (any case) or 1/0; null and missing values never match."""
    if stored is None or kind is None:
        return 0
    if kind == "text":
        return int(_fold_cached(stored) == folded)
    if kind in ("true", "false"):
        return int(raw.strip().lower() in (kind, "1" if kind == "true" else "0"))
    return int(stored == raw)


@lru_cache(maxsize=1 << 16)
def _fold_cached(value: str) -> str:
    return fold_value(value)


def _fold_sql(value: Any) -> Any:
    """SQL ``beto_fold(x)``: ``fold_value`` of text; anything else unchanged."""
    return _fold_cached(value) if isinstance(value, str) else value


def register_functions(conn: sqlite3.Connection) -> None:
    """The SQL functions filters use (registered on every connection the store opens; they are
    only called in queries, so other tools still open ``index.db`` as a plain SQLite file)."""
    conn.create_function("beto_fold", 1, _fold_sql, deterministic=True)
    conn.create_function("beto_filter_match", 4, _filter_match, deterministic=True)


BUILTIN_FILTER_FIELDS = ("title", "source", "id", "doc_id")


@dataclass
class Filter:
    """Metadata / title / source equality filters and a source glob, always bound as parameters.

    Text values (metadata strings and titles) match without regard to case and accents
    (``fold_value``); numbers match exactly as written, booleans as true/false or 1/0; ``id`` and
    ``source`` match exactly (the source glob is case-sensitive too)."""

    where: dict[str, str]
    source_glob: str | None = None

    def __bool__(self) -> bool:
        return bool(self.where) or self.source_glob is not None

    def metadata_paths(self) -> dict[str, str]:
        """JSON path of each metadata key filtered on (a bad key is a one-sentence error)."""
        out = {}
        for key in self.where:
            if key in BUILTIN_FILTER_FIELDS:
                continue
            if not key or not set(key) <= _KEY_OK:
                raise InputError(
                    f"filter key '{key}' may only hold letters, digits, '_', '-' and '.'."
                )
            out[key] = "$." + ".".join('"' + part + '"' for part in key.split("."))
        return out

    def sql(self) -> tuple[str, list[Any]]:
        """A WHERE fragment over ``documents d`` and its parameters."""
        parts: list[str] = []
        params: list[Any] = []
        paths = self.metadata_paths()
        for key, value in self.where.items():
            if key == "title":
                parts.append("beto_fold(d.title) = ?")
                params.append(fold_value(value))
            elif key in BUILTIN_FILTER_FIELDS:
                parts.append(f"d.{'id' if key == 'doc_id' else key} = ?")
                params.append(value)
            else:
                parts.append(
                    f"beto_filter_match(json_type({_VALID_METADATA}, ?),"
                    f" CAST(json_extract({_VALID_METADATA}, ?) AS TEXT), ?, ?)"
                )
                params.extend([paths[key], paths[key], fold_value(value), value])
        if self.source_glob is not None:
            parts.append("d.source GLOB ?")
            params.append(self.source_glob)
        return " AND ".join(parts) or "1", params


class Store:
    """The index database: one writer at a time, any number of readers (WAL).

    Each thread gets its own connection (``conn``), so each thread has its own transactions and
    snapshots; a connection is never used by two threads at once.
    """

    def __init__(self, path: Path, create: bool = True) -> None:
        self.path = path
        if not create and not path.exists():
            raise InputError(f"no index database at {path}.")
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        try:
            if create:
                self._create_schema()
            self.conn.execute("SELECT count(*) FROM documents").fetchone()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise IndexCorruptError(f"the index database {path} cannot be read ({exc}).") from None

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False only so that close() may close every thread's connection;
        # each connection is otherwise used by the thread that opened it alone
        conn = sqlite3.connect(
            str(self.path), isolation_level=None, timeout=60, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout = 60000")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        register_functions(conn)
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StorageError("the index is closed.")
            try:
                conn = self._connect()
            except sqlite3.DatabaseError as exc:
                raise IndexCorruptError(
                    f"the index database {self.path} cannot be read ({exc})."
                ) from None
            self._local.conn = conn
            # no sqlite-utils plugins: our schema needs none, third-party code has no business
            # in the index's connections, and finding plugins scans every installed package
            self._local.db = sqlite_utils.Database(conn, execute_plugins=False)
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection as a sqlite-utils Database."""
        self.conn  # noqa: B018  (opens it)
        return self._local.db

    def _create_schema(self) -> None:
        """Create what is missing (an existing index keeps its tables as they are)."""
        db = self.db
        db.table("manifest").create(
            {"key": str, "value": str}, pk="key", not_null={"value"}, if_not_exists=True
        )
        db.table("meta").create(
            {"key": str, "value": int}, pk="key", not_null={"value"}, if_not_exists=True
        )
        db.table("documents").create(
            DOCUMENT_COLUMNS, pk="id", not_null=set(DOCUMENT_COLUMNS), if_not_exists=True
        )
        if "locations" not in db.table("documents").columns_dict:
            # an index made before documents had locations: add the column (old rows: none)
            try:
                db.table("documents").add_column("locations", str, not_null_default="[]")
            except sqlite3.OperationalError as exc:  # another process added it meanwhile
                if "duplicate column" not in str(exc):
                    raise
        db.table("documents").create_index(
            ["source"], index_name="documents_source", if_not_exists=True
        )
        db.table("embeddings").create(
            {"chunk_id": int, "vector": bytes},
            pk="chunk_id",
            not_null={"vector"},
            if_not_exists=True,
        )
        self.conn.executescript(RAW_SCHEMA)
        db.table("chunks").create_index(
            ["doc_id", "ordinal"], index_name="chunks_doc", if_not_exists=True
        )

    def close(self) -> None:
        self._closed = True
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    # ----- transactions --------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[None]:
        """One write transaction; rolled back whole on any error (disk full included)."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StorageError(f"cannot write to the index ({exc}).") from None
        try:
            yield
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.DatabaseError | OSError):  # disk full, I/O errors
                raise StorageError(
                    f"writing to the index failed, nothing was changed ({exc})."
                ) from None
            raise

    def in_snapshot(self) -> bool:
        """True inside a read or write transaction of this thread."""
        return self.conn.in_transaction

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction of this thread: every query inside sees the same committed state.
        Nested inside another of this thread's transactions, it is that transaction."""
        conn = self.conn
        if conn.in_transaction:
            yield
            return
        conn.execute("BEGIN")
        conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()  # the snapshot starts here, not later
        try:
            yield
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def cache_state(self) -> CacheState:
        """The vector cache's view of the index, in one query."""
        row = self.conn.execute(
            "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'changes'),"
            " (SELECT value FROM meta WHERE key = 'history_floor'),"
            " (SELECT value FROM manifest WHERE key = 'generation')"
        ).fetchone()
        return CacheState(int(row[0] or 0), int(row[1] or 0), int(json.loads(row[2] or "0")))

    # ----- manifest and counters -----------------------------------------------------------
    def manifest(self) -> dict[str, Any] | None:
        """The manifest's key/value rows (JSON values), None while the index is new."""
        return {r["key"]: json.loads(r["value"]) for r in self.db.table("manifest").rows} or None

    def manifest_stamp(self) -> tuple[str | None, str | None]:
        """The raw generation and fusion values: what may change in a manifest after its first
        write (cheaper to compare at every search than reading the whole manifest)."""
        row = self.conn.execute(
            "SELECT (SELECT value FROM manifest WHERE key = 'generation'),"
            " (SELECT value FROM manifest WHERE key = 'fusion')"
        ).fetchone()
        return row[0], row[1]

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Insert or replace manifest keys (caller's transaction: sqlite-utils nests a savepoint)."""
        self.db.table("manifest").upsert_all(
            [{"key": k, "value": json.dumps(v)} for k, v in manifest.items()], pk="key"
        )

    def seq(self) -> int:
        """The sequence number of the last change to the set of chunks."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return int(row[0]) if row else 0

    def history_floor(self) -> int:
        """Changes at or below this sequence number have been dropped (by compact)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'history_floor'").fetchone()
        return int(row[0]) if row else 0

    def drop_history(self) -> None:
        """Forget the change log up to now (after a full rebuild of the vector cache)."""
        seq = self.seq()
        self.conn.execute("DELETE FROM changes WHERE seq <= ?", (seq,))
        self.db.table("meta").upsert({"key": "history_floor", "value": seq}, pk="key")

    # ----- writing documents ---------------------------------------------------------------
    def hashes(self, ids: Iterable[str]) -> dict[str, str]:
        """content_hash of each id already stored."""
        ids = list(ids)
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = ",".join("?" * len(part))
            out.update(
                self.conn.execute(
                    f"SELECT id, content_hash FROM documents WHERE id IN ({q})", part
                ).fetchall()
            )
        return out

    def _remove_chunks(self, doc_id: str) -> int:
        ids = [r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))]
        if not ids:
            return 0
        q = ",".join("?" * len(ids))
        self.conn.execute(f"DELETE FROM embeddings WHERE chunk_id IN ({q})", ids)
        self.conn.execute(f"DELETE FROM chunks_fts WHERE rowid IN ({q})", ids)
        self.conn.execute(f"DELETE FROM chunks WHERE id IN ({q})", ids)
        self.conn.executemany(
            "INSERT INTO changes(op, chunk_id) VALUES ('del', ?)", [(i,) for i in ids]
        )
        return len(ids)

    def put_documents(self, docs: list[PreparedDocument]) -> None:
        """Insert or replace documents with their chunks, vectors and terms (caller's transaction)."""
        stamp = now()
        created = self._created_at([p.doc.id for p in docs])
        for p in docs:
            self._remove_chunks(p.doc.id)
        # documents: one bulk upsert through sqlite-utils (it nests a savepoint in our transaction)
        self.db.table("documents").upsert_all(
            [
                document_row(p.doc, p.content_hash, created.get(p.doc.id, stamp), stamp)
                for p in docs
            ],
            pk="id",
        )
        # chunks and their vectors, terms and change rows: raw executemany, the hot path of an
        # ingest (sqlite-utils' insert_all builds a statement per chunk of rows and cannot give
        # back AUTOINCREMENT ids); ids come from RETURNING, one row per chunk
        conn = self.conn
        emb, fts, log = [], [], []
        for p in docs:
            vectors = np.ascontiguousarray(p.vectors, dtype=np.float32)
            for c, vec, terms in zip(p.chunks, vectors, p.terms):
                cid = conn.execute(
                    'INSERT INTO chunks(doc_id, ordinal, start, "end", text) VALUES (?, ?, ?, ?, ?)'
                    " RETURNING id",
                    (p.doc.id, c.ordinal, c.start, c.end, c.text),
                ).fetchone()[0]
                emb.append((cid, vec.tobytes()))
                fts.append((cid, terms))
                log.append((cid,))
        conn.executemany("INSERT INTO embeddings(chunk_id, vector) VALUES (?, ?)", emb)
        conn.executemany("INSERT INTO chunks_fts(rowid, terms) VALUES (?, ?)", fts)
        conn.executemany("INSERT INTO changes(op, chunk_id) VALUES ('add', ?)", log)

    def _created_at(self, ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            out.update(
                (r["id"], r["created_at"])
                for r in self.db.table("documents").rows_where(
                    f"id IN ({','.join('?' * len(part))})", part, select="id, created_at"
                )
            )
        return out

    def delete_documents(self, ids: Iterable[str]) -> list[str]:
        """Delete documents and everything of theirs (caller's transaction); the ids found."""
        found = []
        table = self.db.table("documents")
        for doc_id in ids:
            if table.count_where("id = ?", [doc_id]):
                self._remove_chunks(doc_id)
                table.delete_where("id = ?", [doc_id])
                found.append(doc_id)
            self.drop_staging(doc_id)
        return found

    def sources_under(self, folder: str) -> list[tuple[str, str]]:
        """(id, source) of documents whose source file lies under ``folder`` (an absolute path)."""
        prefix = folder.rstrip("/") + "/"
        return self.conn.execute(
            "SELECT id, source FROM documents WHERE substr(source, 1, ?) = ?", (len(prefix), prefix)
        ).fetchall()

    # ----- reading -------------------------------------------------------------------------
    def changes_since(self, seq: int) -> list[tuple[int, str, int]]:
        return self.conn.execute(
            "SELECT seq, op, chunk_id FROM changes WHERE seq > ? ORDER BY seq", (seq,)
        ).fetchall()

    def embeddings(self, chunk_ids: list[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the given chunks that exist, in ascending id order."""
        ids_out: list[int] = []
        vecs: list[bytes] = []
        for i in range(0, len(chunk_ids), 500):
            part = chunk_ids[i : i + 500]
            q = ",".join("?" * len(part))
            for cid, blob in self.conn.execute(
                f"SELECT chunk_id, vector FROM embeddings WHERE chunk_id IN ({q}) ORDER BY chunk_id",
                part,
            ):
                ids_out.append(cid)
                vecs.append(blob)
        return _as_matrix(ids_out, vecs, dim)

    def iter_embeddings(
        self, dim: int, batch: int = 20000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All stored (ids, vectors) in ascending id order, a batch at a time."""
        last = -1
        while True:
            rows = self.conn.execute(
                "SELECT chunk_id, vector FROM embeddings WHERE chunk_id > ? ORDER BY chunk_id LIMIT ?",
                (last, batch),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield _as_matrix([r[0] for r in rows], [r[1] for r in rows], dim)

    def sample_embeddings(self, dim: int, n: int) -> np.ndarray:
        """Up to ``n`` stored vectors picked at random (to train quantizers)."""
        rows = self.conn.execute(
            "SELECT chunk_id, vector FROM embeddings ORDER BY random() LIMIT ?", (n,)
        ).fetchall()
        return _as_matrix([r[0] for r in rows], [r[1] for r in rows], dim)[1]

    def chunk_ids(self) -> np.ndarray:
        return np.fromiter(
            (r[0] for r in self.conn.execute("SELECT id FROM chunks")), dtype=np.int64
        )

    def chunks_by_id(self, ids: list[int]) -> dict[int, StoredChunk]:
        out: dict[int, StoredChunk] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = ",".join("?" * len(part))
            for row in self.conn.execute(
                f'SELECT c.id, c.doc_id, c.ordinal, c.start, c."end", c.text, d.title, d.source,'
                f" d.metadata FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE c.id IN ({q})",
                part,
            ):
                out[row[0]] = _stored_chunk(row)
        return out

    def doc_chunk_ids(self, doc_id: str) -> list[int]:
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT id FROM chunks WHERE doc_id = ? ORDER BY ordinal", (doc_id,)
            )
        ]

    def document(self, doc_id: str, whole: bool = True) -> dict[str, Any] | None:
        """A document's fields; a streamed document's text put together from its chunks (its
        stored text is "": ``whole=False`` leaves it so)."""
        with self.snapshot():
            for row in self.db.table("documents").rows_where(
                "id = ?", [doc_id], select="id, source, title, text, metadata"
            ):
                if whole and not row["text"]:
                    row["text"] = "".join(self.text_from_chunks(doc_id))
                return {
                    **row,
                    "metadata": load_metadata(row["metadata"]),
                    "locations": self.locations([doc_id]).get(doc_id, []),
                }
        return None

    def _has_locations(self) -> bool:
        """Whether ``documents`` has its locations column (an old index opened read-only may
        not: it gains it at its next write)."""
        if not getattr(self._local, "has_locations", False):
            self._local.has_locations = "locations" in self.db.table("documents").columns_dict
        return bool(self._local.has_locations)

    def locations(self, doc_ids: list[str]) -> dict[str, list[tuple[int, dict[str, Any]]]]:
        """Where pages or sections start in each document that has any (see ``Document``)."""
        if not doc_ids or not self._has_locations():
            return {}
        out: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for i in range(0, len(doc_ids), 500):
            part = doc_ids[i : i + 500]
            q = ",".join("?" * len(part))
            for doc_id, raw in self.conn.execute(
                f"SELECT id, locations FROM documents WHERE id IN ({q}) AND locations != '[]'",
                part,
            ):
                out[doc_id] = [(int(o), loc) for o, loc in json.loads(raw)]
        return out

    def text_from_chunks(self, doc_id: str, batch: int = 256) -> Iterator[str]:
        """A document's text as the new part of each chunk, in order (spans cover the text and
        overlap: chunk i adds ``text[previous end:end]``); a page of chunks at a time."""
        pos, last = 0, -1
        while True:
            rows = self.conn.execute(
                'SELECT ordinal, start, "end", text FROM chunks WHERE doc_id = ? AND ordinal > ?'
                " ORDER BY ordinal LIMIT ?",
                (doc_id, last, batch),
            ).fetchall()
            if not rows:
                return
            for ordinal, start, end, text in rows:
                if end > pos:
                    yield text[max(0, pos - start) :]
                    pos = end
                last = ordinal

    def document_with_chunks(self, doc_id: str) -> dict[str, Any] | None:
        """A document and its chunks' ids and spans (one snapshot)."""
        with self.snapshot():
            doc = self.document(doc_id)
            if doc is not None:
                doc["chunks"] = [
                    {"chunk_id": r["id"], "start": r["start"], "end": r["end"]}
                    for r in self.db.table("chunks").rows_where(
                        "doc_id = ?", [doc_id], order_by="ordinal", select='id, start, "end"'
                    )
                ]
        return doc

    def iter_chunks(self, batch_size: int = 1024) -> Iterator[list[StoredChunk]]:
        """Every chunk joined with its document, ascending chunk id, a batch per snapshot."""
        last = -1
        while True:
            with self.snapshot():
                rows = self.conn.execute(
                    'SELECT c.id, c.doc_id, c.ordinal, c.start, c."end", c.text, d.title, d.source,'
                    " d.metadata FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE c.id > ?"
                    " ORDER BY c.id LIMIT ?",
                    (last, batch_size),
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [_stored_chunk(r) for r in rows]

    def facets(
        self, fields: list[str] | None = None, limit: int = 20
    ) -> dict[str, list[tuple[Any, int]]]:
        """Document counts per top-level metadata value, most common first, per field. Text
        values that a filter would not tell apart (``fold_value``: "Economía", "economia") count
        as one, shown in their most common spelling, so a facet's count is what filtering on it
        finds."""
        where, params = "", []
        if fields is not None:
            if not fields:
                return {}
            where = f"WHERE j.key IN ({','.join('?' * len(fields))})"
            params = list(fields)
        groups: dict[str, dict[Any, list[Any]]] = {}
        for r in self.db.query(
            "SELECT j.key AS field, j.value AS value, j.type AS type, count(DISTINCT d.id) AS n"
            f" FROM documents d, json_each({_VALID_METADATA}) j"
            f" {where} {'AND' if where else 'WHERE'} j.type NOT IN ('object', 'array')"
            " GROUP BY j.key, j.type, j.value ORDER BY j.key, n DESC, j.value",
            params,
        ):
            value = r["value"]
            same = ("text", _fold_cached(value)) if r["type"] == "text" else (r["type"], value)
            group = groups.setdefault(r["field"], {}).setdefault(same, [value, 0])
            group[1] += r["n"]  # a top-level key holds one value per document: counts add up
        out: dict[str, list[tuple[Any, int]]] = {}
        for field, values in groups.items():
            ranked = sorted(values.values(), key=lambda vn: (-vn[1], str(vn[0])))
            out[field] = [(v, n) for v, n in ranked[:limit]]
        return out

    def missing_fields(self, flt: Filter) -> list[str]:
        """The filter's metadata keys that no stored document has (each check stops at the first
        document that has it)."""
        return [
            key
            for key, path in flt.metadata_paths().items()
            if not self.conn.execute(
                "SELECT EXISTS(SELECT 1 FROM documents d"
                f" WHERE json_type({_VALID_METADATA}, ?) IS NOT NULL)",
                (path,),
            ).fetchone()[0]
        ]

    def metadata_fields(self, limit: int = 30) -> list[str]:
        """Top-level metadata keys of the stored documents, sorted, at most ``limit``."""
        return [
            r[0]
            for r in self.conn.execute(
                f"SELECT DISTINCT j.key FROM documents d, json_each({_VALID_METADATA}) j ORDER BY j.key"
                " LIMIT ?",
                (limit,),
            )
        ]

    def filtered_chunk_ids(self, flt: Filter) -> np.ndarray:
        """Ids of chunks whose document passes the filter."""
        clause, params = flt.sql()
        rows = self.conn.execute(
            f"SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE {clause}", params
        )
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def lexical(self, match: str, limit: int, flt: Filter | None = None) -> list[tuple[int, float]]:
        """(chunk id, bm25 score, higher is better) for an FTS5 MATCH expression."""
        if flt:
            clause, params = flt.sql()
            sql = (
                "SELECT f.rowid, -bm25(chunks_fts) AS s FROM chunks_fts f"
                " JOIN chunks c ON c.id = f.rowid JOIN documents d ON d.id = c.doc_id"
                f" WHERE chunks_fts MATCH ? AND {clause} ORDER BY bm25(chunks_fts) LIMIT ?"
            )
            args = [match, *params, limit]
        else:
            sql = (
                "SELECT rowid, -bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ?"
                " ORDER BY bm25(chunks_fts) LIMIT ?"
            )
            args = [match, limit]
        return [(int(r[0]), float(r[1])) for r in self.conn.execute(sql, args)]

    # ----- facts and checks ----------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Row counts in one query (one snapshot even outside a transaction)."""
        row = self.conn.execute(
            "SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM chunks),"
            " (SELECT count(*) FROM embeddings)"
        ).fetchone()
        return {"documents": row[0], "chunks": row[1], "embeddings": row[2]}

    def ids_by_title(self, titles: list[str]) -> list[tuple[str, str]]:
        """(title, document id) of the documents whose title is one of ``titles``, by id."""
        marks = ",".join("?" * len(titles))
        rows = self.conn.execute(
            f"SELECT title, id FROM documents WHERE title IN ({marks}) ORDER BY id", titles
        ).fetchall()
        return [(str(t), str(d)) for t, d in rows]

    def chunk_count(self) -> int:
        """The number of chunks (cheaper than ``counts``: embeddings' big rows are not walked)."""
        return int(self.conn.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def integrity_check(self) -> list[str]:
        rows = [r[0] for r in self.conn.execute("PRAGMA integrity_check")]
        return [] if rows == ["ok"] else rows

    def problems(self, dim: int) -> list[str]:
        """Rows that break the invariants: vectors missing or of the wrong size, spans with gaps."""
        out = []
        bad = self.conn.execute(
            "SELECT count(*) FROM chunks c LEFT JOIN embeddings e ON e.chunk_id = c.id"
            " WHERE e.vector IS NULL OR length(e.vector) != ?",
            (4 * dim,),
        ).fetchone()[0]
        if bad:
            out.append(f"{bad} chunks have no vector of dimension {dim}")
        orphans = self.conn.execute(
            "SELECT count(*) FROM embeddings e LEFT JOIN chunks c ON c.id = e.chunk_id"
            " WHERE c.id IS NULL"
        ).fetchone()[0]
        if orphans:
            out.append(f"{orphans} vectors belong to no chunk")
        fts = self.conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0]
        chunks = self.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        if fts != chunks:
            out.append(f"the lexical index has {fts} rows for {chunks} chunks")
        gaps = 0
        for doc_id, length in self.conn.execute("SELECT id, length(text) FROM documents"):
            pos = 0
            ok = True
            for start, end in self.conn.execute(
                'SELECT start, "end" FROM chunks WHERE doc_id = ? ORDER BY ordinal', (doc_id,)
            ):
                if start > pos:
                    ok = False
                pos = max(pos, end)
            if pos < length or not ok:
                gaps += 1
        if gaps:
            out.append(f"{gaps} documents are not covered by their chunks")
        invalid = [
            r[0]
            for r in self.conn.execute("SELECT id FROM documents WHERE NOT json_valid(metadata)")
        ]
        if invalid:
            shown = ", ".join(invalid[:5]) + (", ..." if len(invalid) > 5 else "")
            out.append(
                f"{len(invalid)} documents have stored metadata that is not valid JSON ({shown});"
                " facets and filters skip it: re-add them with valid metadata"
            )
        return out

    def documents_missing_vectors(self, dim: int) -> list[str]:
        """Ids of documents with a chunk that has no vector of the right size."""
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT DISTINCT c.doc_id FROM chunks c LEFT JOIN embeddings e ON e.chunk_id = c.id"
                " WHERE e.vector IS NULL OR length(e.vector) != ?",
                (4 * dim,),
            )
        ]

    def ids_like_path(self, path: str, limit: int = 3) -> list[str]:
        """Stored ids that the path-like text may have meant: a trailing part of it ("corpora/es/
        a/x.txt" -> "a/x.txt", ids being relative to the ingested folder), else ids that end
        with it ("x.txt" -> "a/x.txt")."""
        parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
        tails = ["/".join(parts[i:]) for i in range(len(parts))]
        found = set(self.hashes(tails))
        out = [tail for tail in tails if tail in found][:limit]  # longest first
        if not out and parts:
            end = "/" + "/".join(parts)
            out = [
                r[0]
                for r in self.conn.execute(
                    "SELECT id FROM documents WHERE substr(id, -?) = ? ORDER BY id LIMIT ?",
                    (len(end), end, limit),
                )
            ]
        return out

    def document_ids(self) -> list[str]:
        return [r["id"] for r in self.db.table("documents").rows_where(select="id", order_by="id")]

    # ----- re-embedding: side table and state (reembed.py) -----------------------------------
    # ``embeddings_next`` holds the new model's vectors while the old ones keep serving;
    # ``reembed_state`` (one row) names the target, so a re-run resumes or starts over.
    def ensure_reembed_tables(self) -> None:
        """Create the side tables if missing (an index made before re-embedding existed)."""
        self.db.table("embeddings_next").create(
            {"chunk_id": int, "vector": bytes},
            pk="chunk_id",
            not_null={"vector"},
            if_not_exists=True,
        )
        self.db.table("reembed_state").create(
            {"id": int, "target": str, "started_at": str},
            pk="id",
            not_null={"target", "started_at"},
            if_not_exists=True,
        )

    def reembed_target(self) -> dict[str, Any] | None:
        """The target of an unfinished re-embedding (None: none, or no side tables yet)."""
        if not self.db.table("reembed_state").exists():
            return None
        row = self.conn.execute("SELECT target FROM reembed_state WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else None

    def start_reembed(self, target: dict[str, Any]) -> None:
        """Record a new target and forget the vectors of any other (caller's transaction)."""
        self.conn.execute("DELETE FROM embeddings_next")
        self.db.table("reembed_state").upsert(
            {"id": 1, "target": json.dumps(target), "started_at": now()}, pk="id"
        )

    def drop_orphan_next_vectors(self) -> None:
        """Side vectors of chunks deleted since they were written (caller's transaction)."""
        self.conn.execute(
            "DELETE FROM embeddings_next WHERE chunk_id NOT IN (SELECT id FROM chunks)"
        )

    def next_vector_count(self) -> int:
        if not self.db.table("embeddings_next").exists():
            return 0
        return int(self.conn.execute("SELECT count(*) FROM embeddings_next").fetchone()[0])

    def chunks_without_next_vector(self, after: int, limit: int) -> list[tuple[int, str]]:
        """(id, text) of chunks above ``after`` that have no side vector yet, ascending id."""
        return self.conn.execute(
            "SELECT c.id, c.text FROM chunks c WHERE c.id > ? AND NOT EXISTS (SELECT 1 FROM"
            " embeddings_next n WHERE n.chunk_id = c.id) ORDER BY c.id LIMIT ?",
            (after, limit),
        ).fetchall()

    def count_without_next_vector(self) -> int:
        return int(
            self.conn.execute(
                "SELECT count(*) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM embeddings_next n"
                " WHERE n.chunk_id = c.id)"
            ).fetchone()[0]
        )

    def put_next_vectors(self, ids: list[int], vectors: np.ndarray) -> None:
        """Write side vectors (caller's transaction)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.conn.executemany(
            "INSERT OR REPLACE INTO embeddings_next(chunk_id, vector) VALUES (?, ?)",
            [(int(i), v.tobytes()) for i, v in zip(ids, vectors)],
        )

    def switch_to_next_vectors(self, manifest: dict[str, Any]) -> None:
        """THE switch (caller's write transaction): the side vectors replace ``embeddings``,
        the manifest takes the new model's keys, the side tables empty, a marker is logged and
        the change log dropped (no cache of the old vectors is ever caught up again)."""
        self.conn.execute("DELETE FROM embeddings")
        self.conn.execute(
            "INSERT INTO embeddings(chunk_id, vector) SELECT n.chunk_id, n.vector FROM"
            " embeddings_next n JOIN chunks c ON c.id = n.chunk_id"
        )
        self.conn.execute("DELETE FROM embeddings_next")
        self.conn.execute("DELETE FROM reembed_state")
        self.write_manifest(manifest)
        self.conn.execute("INSERT INTO changes(op, chunk_id) VALUES ('reembed', 0)")
        self.drop_history()

    # ----- staging: streamed documents being written (indexer.py) ----------------------------
    # ``staged_chunks`` holds the chunks, vectors and terms of a document too large for one
    # transaction, written a batch per transaction and keyed by (doc id, content hash, ordinal);
    # ``staged_docs`` names each document being staged. Searches never read them: the document
    # appears in one transaction (``publish_staged``). A re-run with the same content resumes
    # after the last staged ordinal; other content drops them.
    def ensure_staging_tables(self) -> None:
        """Create the staging tables if missing (an index made before streaming existed)."""
        self.db.table("staged_docs").create(
            {
                "doc_id": str,
                "content_hash": str,
                "source": str,
                "size": int,
                "mtime_ns": int,
                "started_at": str,
            },
            pk="doc_id",
            not_null={"content_hash", "source", "started_at"},
            if_not_exists=True,
        )
        self.db.table("staged_chunks").create(
            {
                "doc_id": str,
                "content_hash": str,
                "ordinal": int,
                "start": int,
                "end": int,
                "text": str,
                "vector": bytes,
                "terms": str,
            },
            pk=("doc_id", "content_hash", "ordinal"),
            not_null={"start", "end", "text", "vector", "terms"},
            if_not_exists=True,
        )

    def _has_staging(self) -> bool:
        return bool(
            self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'staged_chunks'"
            ).fetchone()
        )

    def begin_staging(
        self, doc_id: str, content_hash: str, source: str
    ) -> tuple[int, tuple[int, int] | None]:
        """Start or resume staging a document (caller's transaction): staging of other content
        under this id is dropped. Returns the number of chunks already staged and the span of
        the last one (to check that the re-run cuts the same chunks)."""
        self.conn.execute(
            "DELETE FROM staged_chunks WHERE doc_id = ? AND content_hash != ?",
            (doc_id, content_hash),
        )
        row = self.conn.execute(
            "SELECT content_hash FROM staged_docs WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        if row is None or row[0] != content_hash:
            try:
                st = Path(source).stat() if source else None
            except OSError:
                st = None
            self.db.table("staged_docs").upsert(
                {
                    "doc_id": doc_id,
                    "content_hash": content_hash,
                    "source": source,
                    "size": st.st_size if st else None,
                    "mtime_ns": st.st_mtime_ns if st else None,
                    "started_at": now(),
                },
                pk="doc_id",
            )
        n, last = self.conn.execute(
            "SELECT count(*), max(ordinal) FROM staged_chunks WHERE doc_id = ? AND content_hash = ?",
            (doc_id, content_hash),
        ).fetchone()
        if not n:
            return 0, None
        if last != n - 1:  # never written out of order; if so, start over
            self.drop_staging(doc_id)
            return 0, None
        span = self.conn.execute(
            'SELECT start, "end" FROM staged_chunks WHERE doc_id = ? AND content_hash = ?'
            " AND ordinal = ?",
            (doc_id, content_hash, last),
        ).fetchone()
        return int(n), (int(span[0]), int(span[1]))

    def stage_chunks(
        self,
        doc_id: str,
        content_hash: str,
        chunks: list[Chunk],
        vectors: np.ndarray,
        terms: list[str],
    ) -> None:
        """Write one batch of a streamed document's chunks (caller's transaction)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.conn.executemany(
            'INSERT OR REPLACE INTO staged_chunks(doc_id, content_hash, ordinal, start, "end",'
            " text, vector, terms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (doc_id, content_hash, c.ordinal, c.start, c.end, c.text, v.tobytes(), t)
                for c, v, t in zip(chunks, vectors, terms, strict=True)
            ],
        )

    def publish_staged(self, doc: Document, content_hash: str) -> int:
        """THE publication of a streamed document (caller's transaction): its previous version
        removed, its row, chunks, vectors, FTS rows and change rows written from the staging
        tables by SQL (nothing passes through Python), the staging dropped. Returns its chunks."""
        conn = self.conn
        stamp = now()
        created = self._created_at([doc.id]).get(doc.id, stamp)
        self._remove_chunks(doc.id)
        self.db.table("documents").upsert(document_row(doc, content_hash, created, stamp), pk="id")
        key = (doc.id, content_hash)
        conn.execute(
            'INSERT INTO chunks(doc_id, ordinal, start, "end", text) SELECT doc_id, ordinal,'
            ' start, "end", text FROM staged_chunks WHERE doc_id = ? AND content_hash = ?'
            " ORDER BY ordinal",
            key,
        )
        join = (
            " FROM chunks c JOIN staged_chunks s ON s.doc_id = c.doc_id AND s.ordinal = c.ordinal"
            " WHERE c.doc_id = ? AND s.content_hash = ? ORDER BY c.id"
        )
        conn.execute(f"INSERT INTO embeddings(chunk_id, vector) SELECT c.id, s.vector{join}", key)
        conn.execute(f"INSERT INTO chunks_fts(rowid, terms) SELECT c.id, s.terms{join}", key)
        n = conn.execute(
            "INSERT INTO changes(op, chunk_id) SELECT 'add', id FROM chunks WHERE doc_id = ?"
            " ORDER BY id",
            (doc.id,),
        ).rowcount
        self.drop_staging(doc.id)
        return int(n)

    def drop_staging(self, doc_id: str | None = None) -> int:
        """Forget the staging of one document, or of all (caller's transaction); chunks dropped."""
        if not self._has_staging():
            return 0
        where, args = ("WHERE doc_id = ?", (doc_id,)) if doc_id is not None else ("", ())
        n = self.conn.execute(f"DELETE FROM staged_chunks {where}", args).rowcount
        self.conn.execute(f"DELETE FROM staged_docs {where}", args)
        return int(n)

    def staged(self) -> list[dict[str, Any]]:
        """Documents being staged: doc_id, content_hash, source, size, mtime_ns, chunks."""
        if not self._has_staging():
            return []
        return [
            dict(r)
            for r in self.db.query(
                "SELECT d.doc_id, d.content_hash, d.source, d.size, d.mtime_ns,"
                " (SELECT count(*) FROM staged_chunks s WHERE s.doc_id = d.doc_id"
                " AND s.content_hash = d.content_hash) AS chunks FROM staged_docs d"
                " ORDER BY d.doc_id"
            )
        ]

    def staging_problems(self, dim: int) -> list[str]:
        """Staged rows that could not be published: vectors of the wrong size, orphans."""
        if not self._has_staging():
            return []
        out = []
        bad = self.conn.execute(
            "SELECT count(*) FROM staged_chunks WHERE length(vector) != ?", (4 * dim,)
        ).fetchone()[0]
        if bad:
            out.append(f"{bad} staged chunks have no vector of dimension {dim}")
        orphans = self.conn.execute(
            "SELECT count(*) FROM staged_chunks s LEFT JOIN staged_docs d ON d.doc_id = s.doc_id"
            " AND d.content_hash = s.content_hash WHERE d.doc_id IS NULL"
        ).fetchone()[0]
        if orphans:
            out.append(f"{orphans} staged chunks belong to no staged document")
        return out

    def vacuum(self) -> None:
        self.conn.execute("VACUUM")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _as_matrix(ids: list[int], blobs: list[bytes], dim: int) -> tuple[np.ndarray, np.ndarray]:
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
    mat = np.frombuffer(b"".join(blobs), dtype=np.float32)
    if mat.size != len(ids) * dim:
        raise IndexCorruptError("stored vectors do not match the index's dimension; run verify.")
    return np.asarray(ids, dtype=np.int64), mat.reshape(len(ids), dim)

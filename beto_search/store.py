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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from .errors import IndexCorruptError, InputError, StorageError
from .types import Chunk, Document

SCHEMA = """
CREATE TABLE IF NOT EXISTS manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, source TEXT NOT NULL, title TEXT NOT NULL, text TEXT NOT NULL,
    metadata TEXT NOT NULL, content_hash TEXT NOT NULL, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS documents_source ON documents(source);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, ordinal INTEGER NOT NULL,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id, ordinal);
CREATE TABLE IF NOT EXISTS embeddings (chunk_id INTEGER PRIMARY KEY, vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, chunk_id INTEGER NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    terms, tokenize = 'unicode61 remove_diacritics 0');
"""

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


@dataclass
class PreparedDocument:
    """A document ready to store: its chunks, their vectors and their analyzed terms."""

    doc: Document
    content_hash: str
    chunks: list[Chunk]
    vectors: np.ndarray
    terms: list[str]


@dataclass
class Filter:
    """Metadata / title / source equality filters and a source glob, always bound as parameters."""

    where: dict[str, str]
    source_glob: str | None = None

    def __bool__(self) -> bool:
        return bool(self.where) or self.source_glob is not None

    def sql(self) -> tuple[str, list[Any]]:
        """A WHERE fragment over ``documents d`` and its parameters."""
        parts: list[str] = []
        params: list[Any] = []
        for key, value in self.where.items():
            if key in ("title", "source", "id", "doc_id"):
                parts.append(f"d.{'id' if key == 'doc_id' else key} = ?")
                params.append(value)
                continue
            if not key or not set(key) <= _KEY_OK:
                raise InputError(f"filter key '{key}' may only hold letters, digits, '_', '-' and '.'.")
            path = "$." + ".".join('"' + part + '"' for part in key.split("."))
            parts.append("CAST(json_extract(d.metadata, ?) AS TEXT) = ?")
            params.extend([path, value])
        if self.source_glob is not None:
            parts.append("d.source GLOB ?")
            params.append(self.source_glob)
        return " AND ".join(parts) or "1", params


class Store:
    """The index database: one writer at a time, any number of readers (WAL)."""

    def __init__(self, path: Path, create: bool = True) -> None:
        self.path = path
        if not create and not path.exists():
            raise InputError(f"no index database at {path}.")
        try:
            conn = sqlite3.connect(str(path), isolation_level=None, timeout=60, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 60000")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self.db = sqlite_utils.Database(conn)
            if create:
                conn.executescript(SCHEMA)
            self.conn = conn
            self.conn.execute("SELECT count(*) FROM documents").fetchone()
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(f"the index database {path} cannot be read ({exc}).") from None

    def close(self) -> None:
        self.conn.close()

    # ----- transactions --------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[None]:
        """One write transaction; rolled back whole on any error (disk full included)."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StorageError(f"cannot write to the index ({exc}).") from None
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.DatabaseError | OSError):  # disk full, I/O errors
                raise StorageError(f"writing to the index failed, nothing was changed ({exc}).") from None
            raise

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees the same committed state."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    # ----- manifest and counters -----------------------------------------------------------
    def manifest(self) -> dict[str, Any] | None:
        rows = self.conn.execute("SELECT key, value FROM manifest").fetchall()
        return {k: json.loads(v) for k, v in rows} or None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO manifest(key, value) VALUES (?, ?)",
            [(k, json.dumps(v)) for k, v in manifest.items()],
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
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('history_floor', ?)", (seq,))

    # ----- writing documents ---------------------------------------------------------------
    def hashes(self, ids: Iterable[str]) -> dict[str, str]:
        """content_hash of each id already stored."""
        ids = list(ids)
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = ",".join("?" * len(part))
            out.update(self.conn.execute(
                f"SELECT id, content_hash FROM documents WHERE id IN ({q})", part).fetchall())
        return out

    def _remove_chunks(self, doc_id: str) -> int:
        ids = [r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))]
        if not ids:
            return 0
        q = ",".join("?" * len(ids))
        self.conn.execute(f"DELETE FROM embeddings WHERE chunk_id IN ({q})", ids)
        self.conn.execute(f"DELETE FROM chunks_fts WHERE rowid IN ({q})", ids)
        self.conn.execute(f"DELETE FROM chunks WHERE id IN ({q})", ids)
        self.conn.executemany("INSERT INTO changes(op, chunk_id) VALUES ('del', ?)", [(i,) for i in ids])
        return len(ids)

    def put_documents(self, docs: list[PreparedDocument]) -> None:
        """Insert or replace documents with their chunks, vectors and terms (caller's transaction)."""
        stamp = now()
        for p in docs:
            d = p.doc
            created = self.conn.execute(
                "SELECT created_at FROM documents WHERE id = ?", (d.id,)).fetchone()
            self._remove_chunks(d.id)
            self.conn.execute(
                "INSERT OR REPLACE INTO documents(id, source, title, text, metadata, content_hash,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (d.id, d.source, d.title, d.text, json.dumps(d.metadata, ensure_ascii=False,
                 default=str), p.content_hash, created[0] if created else stamp, stamp),
            )
            vectors = np.ascontiguousarray(p.vectors, dtype=np.float32)
            for c, vec, terms in zip(p.chunks, vectors, p.terms):
                cur = self.conn.execute(
                    'INSERT INTO chunks(doc_id, ordinal, start, "end", text) VALUES (?, ?, ?, ?, ?)',
                    (d.id, c.ordinal, c.start, c.end, c.text),
                )
                cid = cur.lastrowid
                self.conn.execute("INSERT INTO embeddings(chunk_id, vector) VALUES (?, ?)",
                                  (cid, vec.tobytes()))
                self.conn.execute("INSERT INTO chunks_fts(rowid, terms) VALUES (?, ?)", (cid, terms))
                self.conn.execute("INSERT INTO changes(op, chunk_id) VALUES ('add', ?)", (cid,))

    def delete_documents(self, ids: Iterable[str]) -> list[str]:
        """Delete documents and everything of theirs (caller's transaction); the ids found."""
        found = []
        for doc_id in ids:
            if self.conn.execute("SELECT 1 FROM documents WHERE id = ?", (doc_id,)).fetchone():
                self._remove_chunks(doc_id)
                self.conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
                found.append(doc_id)
        return found

    def sources_under(self, folder: str) -> list[tuple[str, str]]:
        """(id, source) of documents whose source file lies under ``folder`` (an absolute path)."""
        prefix = folder.rstrip("/") + "/"
        return self.conn.execute(
            "SELECT id, source FROM documents WHERE substr(source, 1, ?) = ?",
            (len(prefix), prefix)).fetchall()

    # ----- reading -------------------------------------------------------------------------
    def changes_since(self, seq: int) -> list[tuple[int, str, int]]:
        return self.conn.execute(
            "SELECT seq, op, chunk_id FROM changes WHERE seq > ? ORDER BY seq", (seq,)).fetchall()

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

    def iter_embeddings(self, dim: int, batch: int = 20000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All stored (ids, vectors) in ascending id order, a batch at a time."""
        last = -1
        while True:
            rows = self.conn.execute(
                "SELECT chunk_id, vector FROM embeddings WHERE chunk_id > ? ORDER BY chunk_id LIMIT ?",
                (last, batch)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield _as_matrix([r[0] for r in rows], [r[1] for r in rows], dim)

    def sample_embeddings(self, dim: int, n: int) -> np.ndarray:
        """Up to ``n`` stored vectors picked at random (to train quantizers)."""
        rows = self.conn.execute(
            "SELECT chunk_id, vector FROM embeddings ORDER BY random() LIMIT ?", (n,)).fetchall()
        return _as_matrix([r[0] for r in rows], [r[1] for r in rows], dim)[1]

    def chunk_ids(self) -> np.ndarray:
        return np.fromiter((r[0] for r in self.conn.execute("SELECT id FROM chunks")), dtype=np.int64)

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
                out[row[0]] = StoredChunk(*row[:8], metadata=json.loads(row[8]))
        return out

    def doc_chunk_ids(self, doc_id: str) -> list[int]:
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM chunks WHERE doc_id = ? ORDER BY ordinal", (doc_id,))]

    def document(self, doc_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT id, source, title, text, metadata FROM documents WHERE id = ?", (doc_id,)
        ).fetchone()
        if row is None:
            return None
        return {"id": row[0], "source": row[1], "title": row[2], "text": row[3],
                "metadata": json.loads(row[4])}

    def filtered_chunk_ids(self, flt: Filter) -> np.ndarray:
        """Ids of chunks whose document passes the filter."""
        clause, params = flt.sql()
        rows = self.conn.execute(
            f"SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE {clause}", params)
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
            sql = ("SELECT rowid, -bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ?"
                   " ORDER BY bm25(chunks_fts) LIMIT ?")
            args = [match, limit]
        return [(int(r[0]), float(r[1])) for r in self.conn.execute(sql, args)]

    # ----- facts and checks ----------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        q = self.conn.execute
        return {
            "documents": q("SELECT count(*) FROM documents").fetchone()[0],
            "chunks": q("SELECT count(*) FROM chunks").fetchone()[0],
            "embeddings": q("SELECT count(*) FROM embeddings").fetchone()[0],
        }

    def integrity_check(self) -> list[str]:
        rows = [r[0] for r in self.conn.execute("PRAGMA integrity_check")]
        return [] if rows == ["ok"] else rows

    def problems(self, dim: int) -> list[str]:
        """Rows that break the invariants: vectors missing or of the wrong size, spans with gaps."""
        out = []
        bad = self.conn.execute(
            "SELECT count(*) FROM chunks c LEFT JOIN embeddings e ON e.chunk_id = c.id"
            " WHERE e.vector IS NULL OR length(e.vector) != ?", (4 * dim,)).fetchone()[0]
        if bad:
            out.append(f"{bad} chunks have no vector of dimension {dim}")
        orphans = self.conn.execute(
            "SELECT count(*) FROM embeddings e LEFT JOIN chunks c ON c.id = e.chunk_id"
            " WHERE c.id IS NULL").fetchone()[0]
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
                    'SELECT start, "end" FROM chunks WHERE doc_id = ? ORDER BY ordinal', (doc_id,)):
                if start > pos:
                    ok = False
                pos = max(pos, end)
            if pos < length or not ok:
                gaps += 1
        if gaps:
            out.append(f"{gaps} documents are not covered by their chunks")
        return out

    def documents_missing_vectors(self, dim: int) -> list[str]:
        """Ids of documents with a chunk that has no vector of the right size."""
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT c.doc_id FROM chunks c LEFT JOIN embeddings e ON e.chunk_id = c.id"
            " WHERE e.vector IS NULL OR length(e.vector) != ?", (4 * dim,))]

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

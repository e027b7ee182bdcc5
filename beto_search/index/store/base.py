"""``StoreBase``: the index database's connections (one per thread), its transactions and
snapshots, the schema created on open, and the manifest and counters every other part reads."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import IndexCorruptError, InputError, StorageError
from .filters import register_functions
from .rows import CacheState
from .schema import create_schema, database

if TYPE_CHECKING:
    import sqlite_utils


class StoreBase:
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
            self._local.db = database(conn)
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
        create_schema(self.db)

    def close(self) -> None:
        self._closed = True
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def vacuum(self) -> None:
        self.conn.execute("VACUUM")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

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

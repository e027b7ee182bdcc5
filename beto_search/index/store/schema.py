"""The index database's schema: its tables and columns, created (or completed, for an index made
by an older version) on open, and the SQL fragments that several parts of the store share."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

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
VALID_METADATA = "CASE WHEN json_valid(d.metadata) THEN d.metadata ELSE '{}' END"

# The number of terms in a ``chunks_fts.terms`` value (the analyzer's terms, one space between
# them, none empty): as SQL, and as Python in ``term_count``.
TERM_COUNT = "(length(terms) - length(replace(terms, ' ', '')) + (terms != ''))"


def term_count(terms: str) -> int:
    """The number of terms in an analyzed ``terms`` value (FTS5's row length in tokens)."""
    return terms.count(" ") + 1 if terms else 0


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def database(conn: sqlite3.Connection) -> sqlite_utils.Database:
    """A connection as a sqlite-utils Database."""
    # no sqlite-utils plugins: our schema needs none, third-party code has no business
    # in the index's connections, and finding plugins scans every installed package
    return sqlite_utils.Database(conn, execute_plugins=False)


def create_schema(db: sqlite_utils.Database) -> None:
    """Create what is missing (an existing index keeps its tables as they are)."""
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
    db.conn.executescript(RAW_SCHEMA)
    db.table("chunks").create_index(
        ["doc_id", "ordinal"], index_name="chunks_doc", if_not_exists=True
    )

"""``StagingMixin``: the staging tables of streamed documents being written (indexer.py).

``staged_chunks`` holds the chunks, vectors and terms of a document too large for one
transaction, written a batch per transaction and keyed by (doc id, content hash, ordinal);
``staged_docs`` names each document being staged. Searches never read them: the document
appears in one transaction (``DocumentsMixin.publish_staged``, which owns the writes to the live
tables). A re-run with the same content resumes after the last staged ordinal; other content
drops them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...types import Chunk
from .base import StoreBase
from .schema import now


class StagingMixin(StoreBase):
    """Streamed documents' chunks, staged a batch per transaction until their publication."""

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

"""``NextVectorsMixin``: re-embedding's side table and state (reembed.py).

``embeddings_next`` holds the new model's vectors while the old ones keep serving;
``reembed_state`` (one row) names the target, so a re-run resumes or starts over. One write
transaction (``switch_to_next_vectors``) puts them in place.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .lexical import LexicalMixin
from .schema import now


class NextVectorsMixin(LexicalMixin):
    """The vectors of the model an index is being re-embedded with, and the switch to them."""

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
        self._start_lexical_totals()
        self.conn.execute("DELETE FROM embeddings")
        self.conn.execute(
            "INSERT INTO embeddings(chunk_id, vector) SELECT n.chunk_id, n.vector FROM"
            " embeddings_next n JOIN chunks c ON c.id = n.chunk_id"
        )
        self.conn.execute("DELETE FROM embeddings_next")
        self.conn.execute("DELETE FROM reembed_state")
        self.write_manifest(manifest)
        self.conn.execute("INSERT INTO changes(op, chunk_id) VALUES ('reembed', 0)")
        self._keep_lexical_seq()  # the terms did not change
        self.drop_history()

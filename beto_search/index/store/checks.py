"""``ChecksMixin``: facts about the index (row counts) and the rows that break its invariants
(what ``verify`` reports and ``repair`` mends)."""

from __future__ import annotations

from .base import StoreBase


class ChecksMixin(StoreBase):
    """Counts and checks over the live tables (the staging tables check themselves:
    ``StagingMixin.staging_problems``)."""

    def counts(self) -> dict[str, int]:
        """Row counts in one query (one snapshot even outside a transaction)."""
        row = self.conn.execute(
            "SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM chunks),"
            " (SELECT count(*) FROM embeddings)"
        ).fetchone()
        return {"documents": row[0], "chunks": row[1], "embeddings": row[2]}

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

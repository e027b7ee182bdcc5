"""``DocumentsMixin``: the one place that writes the live document tables (``documents``,
``chunks``, ``embeddings``, ``chunks_fts``) and logs each chunk added or removed in ``changes``.

Every method runs in the caller's transaction (``write()``), so a document's rows change
together: put, published from staging, or deleted, all there or not at all (invariant 2).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ...types import Document
from .lexical import LexicalMixin
from .rows import PreparedDocument, document_row
from .schema import TERM_COUNT, now, term_count
from .staging import StagingMixin


class DocumentsMixin(LexicalMixin, StagingMixin):
    """Documents written whole: put, publish (a streamed one), delete."""

    def _remove_chunks(self, doc_id: str) -> int:
        ids = [r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))]
        if not ids:
            return 0
        q = ",".join("?" * len(ids))
        rows, terms = self.conn.execute(
            f"SELECT count(*), coalesce(sum({TERM_COUNT}), 0) FROM chunks_fts WHERE rowid IN ({q})",
            ids,
        ).fetchone()
        self.conn.execute(f"DELETE FROM embeddings WHERE chunk_id IN ({q})", ids)
        self.conn.execute(f"DELETE FROM chunks_fts WHERE rowid IN ({q})", ids)
        self.conn.execute(f"DELETE FROM chunks WHERE id IN ({q})", ids)
        self.conn.executemany(
            "INSERT INTO changes(op, chunk_id) VALUES ('del', ?)", [(i,) for i in ids]
        )
        self._add_lexical_totals(-int(rows), -int(terms))
        return len(ids)

    def put_documents(self, docs: list[PreparedDocument]) -> None:
        """Insert or replace documents with their chunks, vectors and terms (caller's transaction)."""
        self._start_lexical_totals()
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
        self._add_lexical_totals(len(fts), sum(term_count(t) for _, t in fts))

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
        self._start_lexical_totals()
        table = self.db.table("documents")
        for doc_id in ids:
            if table.count_where("id = ?", [doc_id]):
                self._remove_chunks(doc_id)
                table.delete_where("id = ?", [doc_id])
                found.append(doc_id)
            self.drop_staging(doc_id)
        return found

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

"""``ReadingMixin``: reads of documents and chunks: by id, in batches, their vectors, their
text put together again, locations, facets and the chunks a filter lets through."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ...validation import load_metadata
from .base import StoreBase
from .filters import Filter, fold_cached
from .rows import StoredChunk, as_matrix, stored_chunk
from .schema import VALID_METADATA


class ReadingMixin(StoreBase):
    """Documents, chunks and vectors as stored (every read is one query or one snapshot)."""

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

    def sources_under(self, folder: str) -> list[tuple[str, str]]:
        """(id, source) of documents whose source file lies under ``folder`` (an absolute path)."""
        prefix = folder.rstrip("/") + "/"
        return self.conn.execute(
            "SELECT id, source FROM documents WHERE substr(source, 1, ?) = ?", (len(prefix), prefix)
        ).fetchall()

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
        return as_matrix(ids_out, vecs, dim)

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
            yield as_matrix([r[0] for r in rows], [r[1] for r in rows], dim)

    def sample_embeddings(self, dim: int, n: int) -> np.ndarray:
        """Up to ``n`` stored vectors picked at random (to train quantizers)."""
        rows = self.conn.execute(
            "SELECT chunk_id, vector FROM embeddings ORDER BY random() LIMIT ?", (n,)
        ).fetchall()
        return as_matrix([r[0] for r in rows], [r[1] for r in rows], dim)[1]

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
                out[row[0]] = stored_chunk(row)
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
            yield [stored_chunk(r) for r in rows]

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
            f" FROM documents d, json_each({VALID_METADATA}) j"
            f" {where} {'AND' if where else 'WHERE'} j.type NOT IN ('object', 'array')"
            " GROUP BY j.key, j.type, j.value ORDER BY j.key, n DESC, j.value",
            params,
        ):
            value = r["value"]
            same = ("text", fold_cached(value)) if r["type"] == "text" else (r["type"], value)
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
                f" WHERE json_type({VALID_METADATA}, ?) IS NOT NULL)",
                (path,),
            ).fetchone()[0]
        ]

    def metadata_fields(self, limit: int = 30) -> list[str]:
        """Top-level metadata keys of the stored documents, sorted, at most ``limit``."""
        return [
            r[0]
            for r in self.conn.execute(
                f"SELECT DISTINCT j.key FROM documents d, json_each({VALID_METADATA}) j ORDER BY j.key"
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

    def ids_by_title(self, titles: list[str]) -> list[tuple[str, str]]:
        """(title, document id) of the documents whose title is one of ``titles``, by id."""
        marks = ",".join("?" * len(titles))
        rows = self.conn.execute(
            f"SELECT title, id FROM documents WHERE title IN ({marks}) ORDER BY id", titles
        ).fetchall()
        return [(str(t), str(d)) for t, d in rows]

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

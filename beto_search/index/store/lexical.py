"""``LexicalMixin``: reads of the FTS5 table ``chunks_fts`` (bm25 candidates, the stored terms)
and the global term statistics kept beside it (sharded indexes score bm25 with them)."""

from __future__ import annotations

from .base import StoreBase
from .filters import Filter
from .schema import TERM_COUNT


class LexicalMixin(StoreBase):
    """The lexical index: bm25 candidates and the term statistics FTS5's bm25() is built from."""

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

    # ----- global term statistics (sharded indexes score bm25 with them) -------------------
    # FTS5's bm25() reads the row count and the total number of tokens from its own internals;
    # the same two figures are kept in ``meta`` (``lexical_rows``, ``lexical_terms``), updated
    # in every write transaction that changes ``chunks_fts``, so that reading them is O(1).
    # ``lexical_seq`` is the change sequence they were last brought to: a writer that did not
    # keep them (an older version) moves the sequence past it, and they are counted again.
    _TOTAL_KEYS = ("lexical_rows", "lexical_terms", "lexical_seq")

    def _kept_lexical_totals(self) -> tuple[int, int] | None:
        """The kept totals, None when missing or left behind by the change sequence."""
        rows = self.conn.execute(
            "SELECT key, value FROM meta WHERE key IN (?, ?, ?)"
            " UNION ALL SELECT 'seq', seq FROM sqlite_sequence WHERE name = 'changes'",
            self._TOTAL_KEYS,
        ).fetchall()
        got = {str(k): int(v) for k, v in rows}
        if len(got) < 3 or got.get("lexical_seq") != got.get("seq", 0):
            return None
        return got["lexical_rows"], got["lexical_terms"]

    def _scan_lexical_totals(self) -> tuple[int, int]:
        row = self.conn.execute(
            f"SELECT count(*), coalesce(sum({TERM_COUNT}), 0) FROM chunks_fts"
        ).fetchone()
        return int(row[0]), int(row[1])

    def _start_lexical_totals(self) -> None:
        """Have the totals right before a write changes them (an index made before they were
        kept, or last written by a version that did not keep them: counted, in the writer's
        transaction)."""
        if self._kept_lexical_totals() is None:
            rows, terms = self._scan_lexical_totals()
            self.conn.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                [("lexical_rows", rows), ("lexical_terms", terms), ("lexical_seq", self.seq())],
            )

    def _add_lexical_totals(self, rows: int, terms: int) -> None:
        """Move the totals by a write's rows and terms (caller's transaction, after its change
        rows: the totals are then as of the new sequence)."""
        self.conn.executemany(
            "UPDATE meta SET value = value + ? WHERE key = ?",
            [(rows, "lexical_rows"), (terms, "lexical_terms")],
        )
        self._keep_lexical_seq()

    def _keep_lexical_seq(self) -> None:
        self.conn.execute("UPDATE meta SET value = ? WHERE key = 'lexical_seq'", (self.seq(),))

    def lexical_totals(self) -> tuple[int, int]:
        """(rows, tokens) of the lexical index: what FTS5's bm25() takes N and avgdl from
        (counted from the rows when none are kept for the index's current state)."""
        kept = self._kept_lexical_totals()
        return kept if kept is not None else self._scan_lexical_totals()

    def doc_frequencies(self, terms: list[str]) -> dict[str, int]:
        """How many rows hold each analyzed term: FTS5's own count for a quoted one-term phrase,
        which is what its bm25() takes a phrase's idf from."""
        out: dict[str, int] = {}
        for i in range(0, len(terms), 100):  # one statement per 100 terms
            part = terms[i : i + 100]
            counts = self.conn.execute(
                "SELECT "
                + ", ".join(
                    ["(SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?)"] * len(part)
                ),
                ['"' + t.replace('"', '""') + '"' for t in part],
            ).fetchone()
            out.update(zip(part, (int(n) for n in counts), strict=True))
        return out

    def lexical_terms(self, ids: list[int]) -> dict[int, str]:
        """The analyzed terms stored for each of the given chunks (space-separated)."""
        out: dict[int, str] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = ",".join("?" * len(part))
            out.update(
                (int(r[0]), str(r[1]))
                for r in self.conn.execute(
                    f"SELECT rowid, terms FROM chunks_fts WHERE rowid IN ({q})", part
                )
            )
        return out

"""bm25 under GLOBAL term statistics: what lets shards score their lexical candidates as one index
of all their rows would (Elasticsearch's dfs_query_then_fetch; ``merge.gather`` runs the rounds).

``bm25`` is FTS5's own formula (SQLite's fts5_aux.c) in the same order of arithmetic, so one
index's own figures give its own scores; ``unseen_bound`` says when a shard's cut list can no
longer hide a row that would reach the merged top."""

from __future__ import annotations

import math
from dataclasses import dataclass

# FTS5's bm25(): k1 = 1.2, b = 0.75, a phrase's idf = log((N - n + 0.5) / (n + 0.5)), clamped to
# 1e-6 where it is not positive
BM25_K1 = 1.2
BM25_B = 0.75


@dataclass(frozen=True)
class TermStats:
    """What bm25 takes from an index for one query: its rows, their total length in terms and
    how many rows hold each query term (one shard's, or every shard's summed)."""

    rows: int
    tokens: int
    df: dict[str, int]

    @staticmethod
    def total(parts: list[TermStats]) -> TermStats:
        df: dict[str, int] = {}
        for p in parts:
            for t, n in p.df.items():
                df[t] = df.get(t, 0) + n
        return TermStats(sum(p.rows for p in parts), sum(p.tokens for p in parts), df)

    def idf(self, term: str) -> float:
        n = self.df.get(term, 0)
        idf = math.log((self.rows - n + 0.5) / (n + 0.5))
        return idf if idf > 0.0 else 1e-6

    @property
    def avgdl(self) -> float:
        return self.tokens / self.rows if self.rows else 1.0


def bm25(terms: list[str], stored: str, stats: TermStats) -> float:
    """FTS5's bm25 score (higher is better) of a row whose analyzed terms are ``stored``, for a
    query of the distinct ``terms`` (each a one-term phrase), under ``stats``: the same
    arithmetic in the same order, so one index's own figures give its own scores."""
    words = stored.split(" ") if stored else []
    length = float(len(words))
    counts: dict[str, int] = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    score = 0.0
    for t in terms:
        f = float(counts.get(t, 0))
        score += stats.idf(t) * (
            (f * (BM25_K1 + 1.0)) / (f + BM25_K1 * (1 - BM25_B + BM25_B * length / stats.avgdl))
        )
    return score


def unseen_bound(terms: list[str], local: TermStats, glob: TermStats, floor: float) -> float:
    """The highest global bm25 a row that a shard left out of its list could have: its local
    score is at most ``floor`` (the list's last). Per term, the local score is idf_local * T and
    the global one idf_global * T', with T' <= c * T (c = max(1, global avgdl / local avgdl):
    the length factor moves by at most that ratio) and T < k1 + 1; the best split of ``floor``
    over the terms (a fractional knapsack, most global score per local score first) bounds
    the sum."""
    items = [(glob.idf(t), local.idf(t)) for t in terms if local.df.get(t)]
    if not items:
        return 0.0
    c = max(1.0, glob.avgdl / local.avgdl) if local.tokens else 1.0
    items.sort(key=lambda gl: -gl[0] / gl[1])
    left, bound = floor, 0.0
    for g, loc in items:
        take = min(BM25_K1 + 1.0, left / loc)
        bound += c * g * take
        left -= loc * take
        if left <= 0.0:
            break
    return bound

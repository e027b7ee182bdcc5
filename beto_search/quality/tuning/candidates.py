"""The candidate lists tuning re-fuses: each query's dense and lexical chunk candidates,
retrieved once (``engine.candidates``, the searcher's own sources) and held as arrays
(``_Query``) so that every fusion config of the grid is scored without searching again."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ...encoder import normalize_rows
from ...fusion import FusionConfig, normalise
from ..pseudoqueries import PseudoSet
from ..scoring import best_per_document

if TYPE_CHECKING:
    from ...protocols import EngineLike

DEPTH = 100  # candidates per side and query
K1, B = 1.2, 0.75  # SQLite FTS5's bm25() constants


def _bm25_ratio(engine: EngineLike, pset: PseudoSet) -> dict[str, float]:
    """For each rescored query: BM25(query, chunk remainder) / BM25(query, whole chunk), with
    FTS5's formula and document frequencies of the chunks involved (a ratio: the collection
    statistics mostly cancel), to scale the chunk's stored lexical score."""
    an = engine.analyzer
    docs = {cid: an.terms(text) for cid, _, text, _ in pset.rest.values()}
    n_docs = max(1, engine.store.chunk_count())
    avgdl = max(1.0, sum(len(t) for t in docs.values()) / max(1, len(docs)))
    df: dict[str, int] = {}
    for terms in docs.values():
        for t in set(terms):
            df[t] = df.get(t, 0) + 1
    scale = n_docs / max(1, len(docs))  # sample frequencies scaled to the index

    def bm25(q: set[str], terms: list[str]) -> float:
        tf: dict[str, int] = {}
        for t in terms:
            if t in q:
                tf[t] = tf.get(t, 0) + 1
        norm = K1 * (1 - B + B * len(terms) / avgdl)
        total = 0.0
        for t, f in tf.items():
            d = df.get(t, 1) * scale
            idf = max(1e-6, math.log((n_docs - d + 0.5) / (d + 0.5)))
            total += idf * f * (K1 + 1) / (f + norm)
        return total

    out = {}
    for qid, (cid, _, _, remainder) in pset.rest.items():
        q = set(an.terms(pset.queries[qid]))
        whole = bm25(q, docs[cid])
        out[qid] = bm25(q, an.terms(remainder)) / whole if whole > 0 else 1.0
    return out


def cloze_candidates(
    engine: EngineLike, pset: PseudoSet, depth: int = DEPTH
) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]], dict[int, str]]:
    """The candidate lists of ``pset``'s queries, with each query's own chunk rescored without
    the query's sentence, or left out (see ``cloze_set``)."""
    qids = list(pset.queries)
    texts = [pset.queries[q] for q in qids]
    qvecs = normalize_rows(np.asarray(engine.query_encoder.encode_queries(texts), np.float32))
    dense_l, lexical_l, doc_of = engine.candidates(texts, depth + 1, qvecs)
    dense, lexical = dict(zip(qids, dense_l)), dict(zip(qids, lexical_l))
    for qid, cid in pset.exclude.items():
        dense[qid].pop(cid, None)
        lexical[qid].pop(cid, None)
    if pset.rest:
        rq = [q for q in qids if q in pset.rest]
        rvecs = normalize_rows(
            np.asarray(engine.encoder.encode_documents([pset.rest[q][3] for q in rq]), np.float32)
        )
        ratio = _bm25_ratio(engine, pset)
        row = {q: i for i, q in enumerate(qids)}
        for j, qid in enumerate(rq):
            cid, doc_of[cid] = pset.rest[qid][:2]
            dense[qid][cid] = float(qvecs[row[qid]] @ rvecs[j])
            if cid in lexical[qid]:
                if ratio[qid] > 0:
                    lexical[qid][cid] *= ratio[qid]
                else:
                    del lexical[qid][cid]
    for side in (dense, lexical):  # back to ``depth`` per side, as searches fuse
        for qid, cands in side.items():
            if len(cands) > depth:
                side[qid] = dict(sorted(cands.items(), key=lambda kv: -kv[1])[:depth])
    return dense, lexical, doc_of


def candidate_lists(
    engine: EngineLike, queries: dict[str, str], depth: int = DEPTH
) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]], dict[int, str]]:
    """Dense and lexical chunk candidates per query (retrieved once, by the searcher's own
    candidate sources so tuning scores what searches do), and each chunk's document."""
    qids = list(queries)
    dense, lexical, doc_of = engine.candidates([queries[q] for q in qids], depth)
    return dict(zip(qids, dense)), dict(zip(qids, lexical)), doc_of


class _Query:
    """One query's candidates as arrays, each normalisation computed once (by ``fusion``'s own
    functions, so the scores are those a search fuses) and shared by every alpha."""

    def __init__(
        self, dense: dict[int, float], lexical: dict[int, float], doc_of: dict[int, str]
    ) -> None:
        self.ids = np.array(sorted((dense.keys() | lexical.keys()) & doc_of.keys()), dtype=np.int64)
        self.docs = [doc_of[int(i)] for i in self.ids]
        self.dense, self.lexical = dense, lexical
        self._norm: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._rr: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def normalised(self, norm: str) -> tuple[np.ndarray, np.ndarray]:
        if norm not in self._norm:
            nd, nl = normalise(self.dense, norm), normalise(self.lexical, norm)
            fd = min(nd.values(), default=0.0) if norm != "minmax" else 0.0
            fl = min(nl.values(), default=0.0) if norm != "minmax" else 0.0
            self._norm[norm] = (
                np.array([nd.get(int(i), fd) for i in self.ids]),
                np.array([nl.get(int(i), fl) for i in self.ids]),
            )
        return self._norm[norm]

    def reciprocal(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in self._rr:
            out = []
            for side in (self.dense, self.lexical):
                order = sorted(side, key=lambda i: -side[i])
                rank = {cid: r for r, cid in enumerate(order, start=1)}
                out.append(
                    np.array(
                        [1.0 / (k + rank[int(i)]) if int(i) in rank else 0.0 for i in self.ids]
                    )
                )
            self._rr[k] = (out[0], out[1])
        return self._rr[k]

    def scores(self, cfg: FusionConfig | str) -> np.ndarray:
        if cfg == "dense":
            return np.array([self.dense.get(int(i), -np.inf) for i in self.ids])
        if cfg == "lexical":
            return np.array([self.lexical.get(int(i), -np.inf) for i in self.ids])
        assert isinstance(cfg, FusionConfig)
        if cfg.method == "convex":
            nd, nl = self.normalised(cfg.norm)
            return cfg.alpha * nd + (1 - cfg.alpha) * nl
        rd, rl = self.reciprocal(cfg.rrf_k)
        return 2 * cfg.alpha * rd + 2 * (1 - cfg.alpha) * rl

    def top_docs(self, scores: np.ndarray, key: Callable[[str], str], k: int = 10) -> list[str]:
        """Best chunk wins its document (ties: lower chunk id), as searches aggregate."""
        return [d for d, _ in best_per_document(scores, self.docs, k, self.ids, key)]

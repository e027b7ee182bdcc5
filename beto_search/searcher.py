"""Reading an index: search (dense and lexical candidates, fusion, per-document aggregation, hits)
and similar documents. Each call reads one SQLite snapshot and the vector cache at that same
snapshot (``VectorCache.pinned``), so results never mix two states of the index.
"""

from __future__ import annotations

import html
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from .encoder import normalize_rows
from .errors import InputError
from .fusion import FUSIONS, FusionConfig, fuse, resolve
from .readers import clean_text
from .rerank import DEFAULT_DEPTH, Reranker
from .snippets import make_snippet
from .store import Filter
from .types import Hit
from .vector_index import SearchParams, VectorIndex

if TYPE_CHECKING:
    from .engine import SearchEngine

MODES = ("semantic", "lexical", "hybrid")
EXACT_FILTER_MAX = 20_000  # filtered searches over at most this many chunks are scored exactly


class Searcher:
    """The read side of an engine (``Searcher(engine).search(...)``)."""

    def __init__(self, engine: SearchEngine) -> None:
        self.engine = engine
        self.store = engine.store

    # ----- search --------------------------------------------------------------------------
    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "hybrid",
        fusion: str | None = None,
        alpha: float | None = None,
        where: dict[str, str] | None = None,
        source: str | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
        snippets: bool = True,
        query_vector: np.ndarray | None = None,
        rerank: str | os.PathLike[str] | Reranker | bool | None = None,
        rerank_depth: int = DEFAULT_DEPTH,
        rerank_precision: str | None = None,
    ) -> list[Hit]:
        """The k best documents for ``query``, best first (snippets=False skips highlighting).

        ``rerank``: a cross-encoder (hub id, folder, a ``Reranker``, or True for
        ``$BETO_SEARCH_RERANKER``) that rescores the best passage of each of the top
        ``rerank_depth`` documents after fusion; they come first, in its order (``rerank_score``),
        the rest keep the fused order. The top ``rerank_depth`` do not depend on ``k``, so pages
        of one query stay consistent.
        """
        if not isinstance(query, str) or not clean_text(query).strip():
            raise InputError("the query is empty; give some text to search for.")
        if not isinstance(k, int) or k < 1:
            raise InputError("the number of results (k) must be a whole number of at least 1.")
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, not '{mode}'.")
        if fusion is not None and fusion not in FUSIONS:
            raise InputError(f"fusion must be one of {', '.join(FUSIONS)}, not '{fusion}'.")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise InputError("alpha must be between 0 and 1.")
        reranker = self._reranker(rerank, rerank_depth, rerank_precision)  # fails before searching
        want = max(k, rerank_depth) if reranker is not None else k
        manifest = self.engine.refresh()  # another process may have re-embedded or re-tuned
        config = self.fusion_config(fusion, alpha)
        if manifest is None:
            return []
        query = clean_text(query)
        flt = Filter({str(a): str(b) for a, b in (where or {}).items()}, source)
        params = SearchParams(ef_search=ef_search, nprobe=nprobe)
        qvec: np.ndarray | None = None
        pending: Future[np.ndarray] | None = None
        if mode == "hybrid" and query_vector is None:
            # encode while the lexical side runs: ONNX Runtime and SQLite both release the GIL,
            # so a hybrid query costs about max(encoding, bm25) instead of their sum
            pending = _pool().submit(self._query_vector, query, None, manifest.dimension)
        elif mode != "lexical":
            qvec = self._query_vector(query, query_vector, manifest.dimension)
        with self.engine.cache.pinned() as vi:
            if vi.generation != manifest.generation:  # re-embedded while the query was encoded
                manifest = self.engine.refresh()
                assert manifest is not None
                config = self.fusion_config(fusion, alpha)
                if mode != "lexical":
                    if pending is not None:
                        pending.cancel()  # or let it finish unused: it encoded for the old model
                        pending = None
                    qvec = self._query_vector(query, query_vector, manifest.dimension)
            allowed = self.store.filtered_chunk_ids(flt) if flt else None
            if allowed is not None and not len(allowed):
                return []
            depth = max(4 * want, 50)
            while True:
                lexical = self._lexical(query, depth, flt) if mode != "semantic" else {}
                if pending is not None:
                    qvec, pending = pending.result(), None
                dense = self._dense(vi, qvec, depth, allowed, params) if qvec is not None else {}
                fused = self._fuse(mode, config, dense, lexical)
                hits = self._to_hits(fused, dense, lexical, want)
                if len(hits) >= want or depth >= self._reach(allowed):
                    break
                depth *= 4
            if reranker is not None:
                hits = rerank_hits(reranker, query, hits, rerank_depth)[:k]
            self._finish_hits(hits, query, qvec, snippets)
        return hits

    def _reranker(self, rerank: Any, depth: int, precision: str | None) -> Reranker | None:
        """The reranker ``search(rerank=...)`` asks for (loaded once per engine), or None."""
        if rerank is None or rerank is False:
            return None
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise InputError("the rerank depth must be a whole number of at least 1.")
        if isinstance(rerank, Reranker) and not isinstance(rerank, str | os.PathLike):
            return rerank
        from .rerank import rerank_model

        model = rerank_model(None if rerank is True else os.fspath(rerank))
        return self.engine.reranker(model, precision)

    def _reach(self, allowed: np.ndarray | None) -> int:
        """How many chunks a search can reach (counted only when a search must widen)."""
        return len(allowed) if allowed is not None else self.store.chunk_count()

    def fusion_config(self, fusion: str | None = None, alpha: float | None = None) -> FusionConfig:
        """THE fusion resolution: the given method/alpha, else the index's tuned default
        (manifest.fusion), else the library's (``fusion.resolve``)."""
        m = self.engine.manifest
        return resolve(m.to_dict() if m is not None else None, fusion, alpha)

    def default_fusion(self, fusion: str | None, alpha: float | None) -> tuple[str, float]:
        """(method, alpha) of ``fusion_config`` (kept for callers of the old signature)."""
        config = self.fusion_config(fusion, alpha)
        return config.method, config.alpha

    def candidates(
        self, queries: list[str], depth: int
    ) -> tuple[list[dict[int, float]], list[dict[int, float]], dict[int, str]]:
        """Dense and lexical chunk candidates of each query (no filters, one batched FAISS
        search) and each candidate chunk's document, all in ONE snapshot: what a hybrid search
        fuses, so ``tuning`` can re-fuse them under many configs."""
        texts = [clean_text(q) for q in queries]
        manifest = self.engine.refresh()
        if manifest is None:
            raise InputError("the index is empty; ingest documents first.")
        enc = self.engine.query_encoder
        qvecs = normalize_rows(np.asarray(enc.encode_queries(texts), dtype=np.float32))
        with self.engine.cache.pinned() as vi:
            if vi.generation != manifest.generation:
                raise InputError("the index was re-embedded meanwhile; run it again.")
            scores, ids = vi.search(qvecs, depth, params=SearchParams())
            dense = [
                {int(i): float(v) for i, v in zip(ids[n], scores[n]) if i >= 0}
                for n in range(len(texts))
            ]
            lexical = [self._lexical(t, depth, Filter({})) for t in texts]
            wanted = sorted({c for side in (dense, lexical) for per in side for c in per})
            doc_of = {cid: row.doc_id for cid, row in self.store.chunks_by_id(wanted).items()}
        return dense, lexical, doc_of

    def _query_vector(self, query: str, given: np.ndarray | None, dim: int) -> np.ndarray:
        if given is None:
            enc = self.engine.query_encoder
            return normalize_rows(np.asarray(enc.encode_queries([query]), dtype=np.float32))
        vec = np.asarray(given, dtype=np.float32)
        if vec.ndim == 1:
            vec = vec[None, :]
        if vec.shape != (1, dim):
            raise InputError(
                f"the query vector must have shape ({dim},) or (1, {dim}), not {tuple(vec.shape)}."
            )
        return normalize_rows(vec)

    def _dense(
        self,
        vi: VectorIndex,
        qvec: np.ndarray,
        depth: int,
        allowed: np.ndarray | None,
        params: SearchParams,
    ) -> dict[int, float]:
        if allowed is not None and (vi.kind == "flat" or len(allowed) <= EXACT_FILTER_MAX):
            if vi.kind == "flat":
                scores, ids = vi.search(qvec, depth, allowed=allowed, params=params)
                return {int(i): float(s) for i, s in zip(ids[0], scores[0]) if i >= 0}
            ids, vecs = self.store.embeddings(allowed.tolist(), vi.dim)
            return _top(ids, vecs @ qvec[0], depth)
        scores, ids = vi.search(qvec, depth, params=params)
        out = {int(i): float(s) for i, s in zip(ids[0], scores[0]) if i >= 0}
        if allowed is not None:
            allowed_set = set(allowed.tolist())
            out = {i: s for i, s in out.items() if i in allowed_set}
            if len(out) < depth and depth >= vi.ntotal:
                # an approximate index may miss vectors: score the allowed ones exactly
                best: dict[int, float] = {}
                for part in range(0, len(allowed), EXACT_FILTER_MAX):
                    ids_, vecs = self.store.embeddings(
                        allowed[part : part + EXACT_FILTER_MAX].tolist(), vi.dim
                    )
                    best.update(_top(ids_, vecs @ qvec[0], depth))
                out = dict(sorted(best.items(), key=lambda kv: -kv[1])[:depth])
        return out

    def _lexical(self, query: str, depth: int, flt: Filter) -> dict[int, float]:
        match = self.engine.analyzer.fts_query(query)
        if match is None:
            return {}
        return dict(self.store.lexical(match, depth, flt if flt else None))

    @staticmethod
    def _fuse(
        mode: str, config: FusionConfig, dense: dict[int, float], lexical: dict[int, float]
    ) -> dict[int, float]:
        if mode == "semantic":
            return dict(dense)
        if mode == "lexical":
            return dict(lexical)
        return fuse(config, dense, lexical)

    def _to_hits(
        self, fused: dict[int, float], dense: dict[int, float], lexical: dict[int, float], k: int
    ) -> list[Hit]:
        """Aggregate chunk scores to documents (best chunk wins) and take the top k."""
        rows = self.store.chunks_by_id(list(fused))
        best: dict[str, int] = {}
        for cid, _score in sorted(fused.items(), key=lambda kv: (-kv[1], kv[0])):
            row = rows.get(cid)
            if row is None:  # a vector SQLite no longer has (tombstone): never shown
                continue
            if row.doc_id not in best:
                best[row.doc_id] = cid
                if len(best) == k:
                    break
        hits = []
        for rank, (doc_id, cid) in enumerate(best.items(), start=1):
            r = rows[cid]
            hits.append(
                Hit(
                    rank=rank,
                    score=float(fused[cid]),
                    doc_id=doc_id,
                    title=r.title,
                    text=r.text,
                    start=r.start,
                    end=r.end,
                    source=r.source,
                    metadata=r.metadata,
                    chunk_id=cid,
                    dense_score=dense.get(cid),
                    lexical_score=lexical.get(cid),
                )
            )
        return hits

    def _finish_hits(
        self, hits: list[Hit], query: str, qvec: np.ndarray | None, snippets: bool = True
    ) -> None:
        """Exact dense scores for the explanation, and snippets with highlights."""
        if qvec is not None:
            missing = [h.chunk_id for h in hits if h.dense_score is None]
            if missing:
                ids, vecs = self.store.embeddings(missing, int(qvec.shape[1]))
                exact = dict(zip(ids.tolist(), (vecs @ qvec[0]).tolist()))
                for h in hits:
                    if h.dense_score is None:
                        h.dense_score = exact.get(h.chunk_id)
        analyzer = self.engine.analyzer
        for h in hits if snippets else []:
            snip = make_snippet(h.text, h.start, query, analyzer)
            h.snippet, h.snippet_start, h.snippet_end = snip.text, snip.start, snip.end
            h.highlight_spans = snip.spans
            h.highlight = snip.marked()

    # ----- similar -------------------------------------------------------------------------
    def similar(self, doc_id: str, k: int = 10) -> list[Hit]:
        """Documents closest to a stored one, from its stored vectors (no encoding)."""
        if not isinstance(k, int) or k < 1:
            raise InputError("the number of results (k) must be a whole number of at least 1.")
        manifest = self.engine.manifest
        if manifest is None:
            raise InputError(f"there is no document '{doc_id}' in the index.")
        with self.engine.cache.pinned() as vi:
            own = self.store.doc_chunk_ids(doc_id)
            if not own:
                raise InputError(f"there is no document '{doc_id}' in the index.")
            _, vecs = self.store.embeddings(own, manifest.dimension)
            qvec = normalize_rows(vecs.mean(axis=0, keepdims=True))
            total = self.store.chunk_count()
            depth = max(4 * k + len(own), 50)
            own_set = set(own)
            while True:
                dense = {
                    i: s
                    for i, s in self._dense(vi, qvec, depth, None, SearchParams()).items()
                    if i not in own_set
                }
                hits = self._to_hits(dense, dense, {}, k)
                if len(hits) >= k or depth >= total:
                    break
                depth *= 4
            for h in hits:
                h.snippet, h.snippet_start = h.text[:320], h.start
                h.snippet_end = h.start + len(h.snippet)
                # nothing to mark, but escaped like search's highlights: HTML-safe to show as is
                h.highlight = html.escape(h.snippet)
        return hits


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """Threads that encode hybrid queries next to their lexical side (shared by every engine
    of the process; idle threads cost nothing and are joined at exit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="beto-search-query")
        return _POOL


def _top(ids: np.ndarray, scores: np.ndarray, n: int) -> dict[int, float]:
    if not len(ids):
        return {}
    order = np.argsort(-scores)[:n]
    return {int(ids[i]): float(scores[i]) for i in order}


def rerank_hits(reranker: Reranker, query: str, hits: list[Hit], depth: int) -> list[Hit]:
    """The top ``depth`` hits in ``reranker``'s order of (query, best passage) scores (ties keep
    the fused order), then the rest as they were; ranks renumbered."""
    head, tail = hits[:depth], hits[depth:]
    if not head:
        return hits
    scores = np.asarray(reranker.score(query, [h.text for h in head]), dtype=np.float64)
    if scores.shape != (len(head),):
        raise InputError(
            f"the reranker '{reranker.name}' gave {scores.size} scores for {len(head)} passages."
        )
    scores = np.nan_to_num(scores, nan=-np.inf)
    order = sorted(range(len(head)), key=lambda i: (-scores[i], i))
    for i in order:
        head[i].rerank_score = float(scores[i])
    out = [head[i] for i in order] + tail
    for rank, h in enumerate(out, start=1):
        h.rank = rank
    return out

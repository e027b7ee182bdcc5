"""Reading an index: search (dense and lexical candidates, fusion, per-document aggregation, hits)
and similar documents. Each call reads one SQLite snapshot and the vector cache at that same
snapshot (``VectorCache.pinned``), so results never mix two states of the index.
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np

from ..encoder import normalize_rows
from ..errors import InputError
from ..fusion import FusionConfig, resolve
from ..readers import EXTENSIONS, clean_text
from ..rerank import DEFAULT_DEPTH, Reranker
from ..types import Hit, SearchResults, locate
from ..vector_index import SearchParams, VectorIndex
from .candidates import (
    Candidates,
    _pool,
    _top,
    add_snippets,
    check_search,
    field_warnings,
    fuse_mode,
    hits_from_rows,
    make_filter,
    plain_snippets,
    rerank_hits,
)
from .store import Filter

if TYPE_CHECKING:
    from .context import IndexContext

EXACT_FILTER_MAX = 20_000  # filtered searches over at most this many chunks are scored exactly


class Searcher:
    """The read side of an index (``Searcher(ctx).search(...)``): no state but the context, so
    one serves every thread."""

    def __init__(self, ctx: IndexContext) -> None:
        self.ctx = ctx
        self.store = ctx.store

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
    ) -> SearchResults:
        """The k best documents for ``query``, best first (snippets=False skips highlighting);
        ``.warnings`` names filter fields that no document has.

        ``rerank``: a cross-encoder (hub id, folder, a ``Reranker``, or True for
        ``$BETO_SEARCH_RERANKER``) that rescores the best passage of each of the top
        ``rerank_depth`` documents after fusion; they come first, in its order (``rerank_score``),
        the rest keep the fused order. The top ``rerank_depth`` do not depend on ``k``, so pages
        of one query stay consistent.
        """
        check_search(query, k, mode, fusion, alpha)
        reranker = self.reranker_for(
            rerank, rerank_depth, rerank_precision
        )  # fails before searching
        want = max(k, rerank_depth) if reranker is not None else k
        manifest = self.ctx.refresh()  # another process may have re-embedded or re-tuned
        config = self.fusion_config(fusion, alpha)
        if manifest is None:
            return SearchResults()
        query = clean_text(query)
        flt = make_filter(where, source)
        missing = self.store.missing_fields(flt)  # only a filter's fields: usually nothing to do
        # the fields that do exist are named only in a warning: listing them scans every document
        warnings = field_warnings(missing, self.store.metadata_fields() if missing else [])
        params = SearchParams(ef_search=ef_search, nprobe=nprobe)
        qvec: np.ndarray | None = None
        pending: Future[np.ndarray] | None = None
        if mode == "hybrid" and query_vector is None:
            # encode while the lexical side runs: ONNX Runtime and SQLite both release the GIL,
            # so a hybrid query costs about max(encoding, bm25) instead of their sum
            pending = _pool().submit(self._query_vector, query, None, manifest.dimension)
        elif mode != "lexical":
            qvec = self._query_vector(query, query_vector, manifest.dimension)
        with self.ctx.cache.pinned() as vi:
            if vi.generation != manifest.generation:  # re-embedded while the query was encoded
                manifest = self.ctx.refresh()
                assert manifest is not None
                config = self.fusion_config(fusion, alpha)
                if mode != "lexical":
                    if pending is not None:
                        pending.cancel()  # or let it finish unused: it encoded for the old model
                        pending = None
                    qvec = self._query_vector(query, query_vector, manifest.dimension)
            allowed = self.store.filtered_chunk_ids(flt) if flt else None
            if allowed is not None and not len(allowed):
                return SearchResults([], warnings)
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
        return SearchResults(hits, warnings)

    def no_document(self, doc_id: str) -> str:
        """The sentence for an id the index lacks; an id that looks like a path gets the hint
        that ids are relative to the ingested folder, and the stored id it may have meant."""
        looks_like_path = (
            "/" in doc_id or "\\" in doc_id or doc_id.lower().endswith(tuple(EXTENSIONS))
        )
        if not looks_like_path:
            return f"there is no document '{doc_id}' in the index."
        hint = "ids are relative to the ingested folder"
        like = self.store.ids_like_path(doc_id)
        if like:
            hint += ": try " + " or ".join(f"'{i}'" for i in like)
        else:
            hint += " (the ids that 'query' prints)"
        return f"there is no document '{doc_id}' in the index; {hint}."

    def reranker_for(self, rerank: Any, depth: int, precision: str | None) -> Reranker | None:
        """The reranker ``search(rerank=...)`` asks for (loaded once per engine), or None."""
        if rerank is None or rerank is False:
            return None
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise InputError("the rerank depth must be a whole number of at least 1.")
        if isinstance(rerank, Reranker) and not isinstance(rerank, str | os.PathLike):
            return rerank
        from ..rerank import rerank_model

        model = rerank_model(None if rerank is True else os.fspath(rerank))
        return self.ctx.reranker(model, precision)

    def _reach(self, allowed: np.ndarray | None) -> int:
        """How many chunks a search can reach (counted only when a search must widen)."""
        return len(allowed) if allowed is not None else self.store.chunk_count()

    def fusion_config(self, fusion: str | None = None, alpha: float | None = None) -> FusionConfig:
        """THE fusion resolution: the given method/alpha, else the index's tuned default
        (manifest.fusion), else the library's (``fusion.resolve``)."""
        m = self.ctx.manifest
        return resolve(m.to_dict() if m is not None else None, fusion, alpha)

    def default_fusion(self, fusion: str | None, alpha: float | None) -> tuple[str, float]:
        """(method, alpha) of ``fusion_config`` (kept for callers of the old signature)."""
        config = self.fusion_config(fusion, alpha)
        return config.method, config.alpha

    def candidates(
        self, queries: list[str], depth: int, query_vectors: np.ndarray | None = None
    ) -> tuple[list[dict[int, float]], list[dict[int, float]], dict[int, str]]:
        """Dense and lexical chunk candidates of each query (no filters, one batched FAISS
        search) and each candidate chunk's document, all in ONE snapshot: what a hybrid search
        fuses, so ``tuning`` can re-fuse them under many configs. ``query_vectors``: the
        queries already encoded (``tuning`` scores more texts against them)."""
        texts = [clean_text(q) for q in queries]
        manifest = self.ctx.refresh()
        if manifest is None:
            raise InputError("the index is empty; ingest documents first.")
        if query_vectors is None:
            enc = self.ctx.query_encoder
            query_vectors = np.asarray(enc.encode_queries(texts), dtype=np.float32)
        qvecs = normalize_rows(np.asarray(query_vectors, dtype=np.float32))
        with self.ctx.cache.pinned() as vi:
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

    def search_candidates(
        self,
        query: str,
        depth: int,
        mode: str = "hybrid",
        where: dict[str, str] | None = None,
        source: str | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
        query_vector: np.ndarray | None = None,
        exclude: set[int] | None = None,
    ) -> Candidates:
        """One search's candidates before fusion, with raw scores: the ``depth`` best chunks by
        cosine (``query_vector``, needed unless mode is lexical: encode once, search many) and
        by bm25 over THIS index's term statistics, each candidate's row, and how many chunks the
        search could reach, all in one snapshot. What a sharded index merges before fusing
        (``beto_search.shards``); ``exclude``: chunk ids never returned (similar's own)."""
        manifest = self.ctx.refresh()
        if manifest is None:
            return Candidates({}, {}, {}, 0)
        flt = Filter({str(a): str(b) for a, b in (where or {}).items()}, source)
        params = SearchParams(ef_search=ef_search, nprobe=nprobe)
        qvec = None
        if mode != "lexical":
            if query_vector is None:
                raise InputError("a query vector is needed for dense candidates.")
            qvec = self._query_vector(query, query_vector, manifest.dimension)
        with self.ctx.cache.pinned() as vi:
            if vi.generation != manifest.generation:
                raise InputError("the index was re-embedded meanwhile; run the search again.")
            allowed = self.store.filtered_chunk_ids(flt) if flt else None
            if allowed is not None and not len(allowed):
                return Candidates({}, {}, {}, 0)
            lexical = self._lexical(clean_text(query), depth, flt) if mode != "semantic" else {}
            dense: dict[int, float] = {}
            if qvec is not None:
                extra = len(exclude) if exclude else 0
                dense = self._dense(vi, qvec, depth + extra, allowed, params)
                if exclude:
                    dense = {i: v for i, v in dense.items() if i not in exclude}
            rows = self.store.chunks_by_id(sorted(dense.keys() | lexical.keys()))
            return Candidates(dense, lexical, rows, self._reach(allowed))

    def dense_scores(self, chunk_ids: list[int], query_vector: np.ndarray) -> dict[int, float]:
        """Exact cosine of the given chunks with a (normalised) query vector (``--explain`` for
        chunks that came from the lexical side only)."""
        qvec = np.asarray(query_vector, dtype=np.float32).reshape(1, -1)
        ids, vecs = self.store.embeddings(chunk_ids, int(qvec.shape[1]))
        return dict(zip(ids.tolist(), (vecs @ qvec[0]).tolist()))

    def document_vector(self, doc_id: str) -> tuple[np.ndarray, list[int]] | None:
        """A stored document's mean vector (normalised, shape (1, dim)) and its chunk ids, or
        None when the index does not hold it (``similar``'s query, no encoding)."""
        manifest = self.ctx.refresh()
        if manifest is None:
            return None
        own = self.store.doc_chunk_ids(doc_id)
        if not own:
            return None
        _, vecs = self.store.embeddings(own, manifest.dimension)
        return normalize_rows(vecs.mean(axis=0, keepdims=True)), own

    def _query_vector(self, query: str, given: np.ndarray | None, dim: int) -> np.ndarray:
        if given is None:
            enc = self.ctx.query_encoder
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
        match = self.ctx.analyzer.fts_query(query)
        if match is None:
            return {}
        return dict(self.store.lexical(match, depth, flt if flt else None))

    @staticmethod
    def _fuse(
        mode: str, config: FusionConfig, dense: dict[int, float], lexical: dict[int, float]
    ) -> dict[int, float]:
        return fuse_mode(mode, config, dense, lexical)

    def _to_hits(
        self, fused: dict[int, float], dense: dict[int, float], lexical: dict[int, float], k: int
    ) -> list[Hit]:
        """Aggregate chunk scores to documents (best chunk wins) and take the top k."""
        return hits_from_rows(fused, dense, lexical, self.store.chunks_by_id(list(fused)), k)

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
        if snippets:
            add_snippets(hits, query, self.ctx.analyzer)
        self.locate(hits)

    def locate(self, hits: list[Hit]) -> None:
        """Each hit's page or section: where the words it matched lie in the document (else its
        snippet, else its chunk)."""
        located = self.store.locations(list({h.doc_id for h in hits}))
        for h in hits:
            if h.doc_id in located:
                if h.highlight_spans:
                    span = (
                        min(s for s, _ in h.highlight_spans),
                        max(e for _, e in h.highlight_spans),
                    )
                elif h.snippet:
                    span = (h.snippet_start, h.snippet_end)
                else:
                    span = (h.start, h.end)
                h.location = locate(located[h.doc_id], *span)

    # ----- similar -------------------------------------------------------------------------
    def similar(self, doc_id: str, k: int = 10) -> list[Hit]:
        """Documents closest to a stored one, from its stored vectors (no encoding)."""
        if not isinstance(k, int) or k < 1:
            raise InputError("the number of results (k) must be a whole number of at least 1.")
        manifest = self.ctx.manifest
        if manifest is None:
            raise InputError(f"there is no document '{doc_id}' in the index.")
        with self.ctx.cache.pinned() as vi:
            own = self.store.doc_chunk_ids(doc_id)
            if not own:
                raise InputError(self.no_document(doc_id))
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
            plain_snippets(hits)
            self.locate(hits)
        return hits

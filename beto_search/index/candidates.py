"""The pure steps of a search, shared by ``Searcher``, a sharded index, the server and Ray: the
arguments' check (``check_search``, ``MODES``), fusion per mode, chunk rows to document hits,
snippets, filters and their warnings, reranking; and ``Candidates``, one search's chunk candidates
before fusion.
"""

from __future__ import annotations

import html
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..fusion import FUSIONS, FusionConfig, fuse
from ..readers import clean_text
from ..snippets import make_snippet
from ..types import Hit
from .store import Filter, StoredChunk

if TYPE_CHECKING:
    from ..analyzer import SpanishAnalyzer
    from ..rerank import Reranker

MODES = ("semantic", "lexical", "hybrid")


@dataclass
class Candidates:
    """A search's chunk candidates before fusion (``Searcher.search_candidates``): raw cosine
    and bm25 scores by chunk id, the rows of those chunks, and the chunks the search reaches."""

    dense: dict[int, float]
    lexical: dict[int, float]
    rows: dict[int, StoredChunk]
    reach: int


def check_search(
    query: str, k: int, mode: str, fusion: str | None = None, alpha: float | None = None
) -> None:
    """A search's arguments, checked once (one-sentence ``InputError``s); the server runs them
    before it encodes a query."""
    if not isinstance(query, str) or not clean_text(query).strip():
        raise InputError("the query is empty; give some text to search for.")
    if not isinstance(k, int) or k < 1:
        raise InputError("the number of results (k) must be a whole number of at least 1.")
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, not '{mode[:40]}'.")
    if fusion is not None and fusion not in FUSIONS:
        raise InputError(f"fusion must be one of {', '.join(FUSIONS)}, not '{fusion[:40]}'.")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise InputError("alpha must be between 0 and 1.")


def fuse_mode(
    mode: str, config: FusionConfig, dense: dict[int, float], lexical: dict[int, float]
) -> dict[int, float]:
    """The chunk scores a search of ``mode`` ranks by: one side alone, or the two fused."""
    if mode == "semantic":
        return dict(dense)
    if mode == "lexical":
        return dict(lexical)
    return fuse(config, dense, lexical)


def hits_from_rows(
    fused: dict[int, float],
    dense: dict[int, float],
    lexical: dict[int, float],
    rows: dict[int, StoredChunk],
    k: int,
) -> list[Hit]:
    """Aggregate chunk scores to documents (best chunk wins) and take the top k; a chunk
    without a row (a vector SQLite no longer has: a tombstone) is never shown."""
    best: dict[str, int] = {}
    for cid, _score in sorted(fused.items(), key=lambda kv: (-kv[1], kv[0])):
        row = rows.get(cid)
        if row is None:
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


def add_snippets(hits: list[Hit], query: str, analyzer: SpanishAnalyzer) -> None:
    """Snippets with the query's terms highlighted."""
    for h in hits:
        snip = make_snippet(h.text, h.start, query, analyzer)
        h.snippet, h.snippet_start, h.snippet_end = snip.text, snip.start, snip.end
        h.highlight_spans = snip.spans
        h.highlight = snip.marked()


def plain_snippets(hits: list[Hit]) -> None:
    """``similar``'s snippets: the chunk's start, nothing marked, escaped like search's
    highlights (HTML-safe to show as is)."""
    for h in hits:
        h.snippet, h.snippet_start = h.text[:320], h.start
        h.snippet_end = h.start + len(h.snippet)
        h.highlight = html.escape(h.snippet)


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


def make_filter(where: dict[str, Any] | None, source: str | None) -> Filter:
    """The store's ``Filter`` for a search's ``where`` and ``source``."""
    return Filter({str(a): _filter_value(b) for a, b in (where or {}).items()}, source)


def field_warnings(missing: list[str], fields: list[str]) -> list[str]:
    """A sentence per filtered metadata field that no document has, naming those that exist
    (a misspelled field would otherwise be a silent empty result)."""
    if not missing:
        return []
    known = (
        f"the metadata fields are: {', '.join(fields)} (and title, source, id)"
        if fields
        else "no document has metadata (filter on title, source or id)"
    )
    return [f"no document has the field '{key}'; {known}." for key in missing]


def _filter_value(value: object) -> str:
    """A filter value as text: booleans as JSON writes them (True -> "true"), the rest as str."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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

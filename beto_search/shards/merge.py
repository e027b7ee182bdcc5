"""Searches over shards, merged BEFORE fusion, wherever the shards are (a ``ShardCaller``).

Every shard returns its dense (cosine: comparable across shards) and lexical candidates with raw
scores; the lexical ones are re-scored with bm25 under the GLOBAL term statistics (the answering
shards' summed row counts, lengths and document frequencies: Elasticsearch's
dfs_query_then_fetch, see ``gather``), so both sides score as one index of those shards would;
the merged top ``depth`` of each side is then fused, aggregated per document, reranked and
snippeted once (``search_merged``). The query is encoded once by the caller of these functions,
not once per shard. Chunk ids seen from outside are global: ``local id * N + shard``.

A shard that fails (only a remote caller reports failures) is left out of the statistics and of
the merge, so the scores are those of an index of the live shards; it is named in ``failed``."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..encoder import normalize_rows
from ..errors import InputError
from ..fusion import FusionConfig
from ..index.candidates import (
    Candidates,
    add_snippets,
    field_warnings,
    fuse_mode,
    hits_from_rows,
    make_filter,
    plain_snippets,
    rerank_hits,
)
from ..ingest import IngestSummary
from ..rerank import DEFAULT_DEPTH, Reranker
from ..types import Hit, locate
from .bm25 import TermStats, bm25, unseen_bound
from .callers import CandidateRequest, ShardAnswer, ShardCaller
from .layout import global_id

if TYPE_CHECKING:
    from ..analyzer import SpanishAnalyzer
    from ..encoder import Encoder
    from ..index.reembed import ReembedResult
    from ..index.store import StoredChunk


def best(scores: dict[int, float], depth: int) -> dict[int, float]:
    """The ``depth`` highest scores (ties: the lower id first, as one index orders them)."""
    if len(scores) <= depth:
        return scores
    return dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:depth])


def merge_candidates(parts: Mapping[int, Candidates], count: int, depth: int) -> Candidates:
    """The shards' candidates under global ids, each side cut to the best ``depth`` (what one
    index would have returned from the same scores)."""
    dense: dict[int, float] = {}
    lexical: dict[int, float] = {}
    rows: dict[int, StoredChunk] = {}
    for i, c in parts.items():
        dense.update((global_id(i, k, count), v) for k, v in c.dense.items())
        lexical.update((global_id(i, k, count), v) for k, v in c.lexical.items())
        rows.update((global_id(i, k, count), r) for k, r in c.rows.items())
    reach = sum(c.reach for c in parts.values())
    return Candidates(best(dense, depth), best(lexical, depth), rows, reach)


def merge_summaries(parts: list[IngestSummary]) -> IngestSummary:
    """One summary of the shards' writes."""
    out = IngestSummary()
    for p in parts:
        for key in ("files", "added", "updated", "unchanged", "duplicates", "pruned", "chunks"):
            setattr(out, key, getattr(out, key) + getattr(p, key))
        out.seconds = max(out.seconds, p.seconds)
        out.skipped += p.skipped
        out.new_ids |= p.new_ids
    return out


def sort_key(value: Any) -> tuple[int, Any]:
    """SQLite's order of facet values: null, numbers, then text."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, value)
    return (2, str(value))


def merge_facets(
    parts: list[dict[str, list[tuple[Any, int]]]], limit: int
) -> dict[str, list[tuple[Any, int]]]:
    """Document counts per metadata value summed over the shards (each gave all its values),
    most common first."""
    total: dict[str, dict[Any, int]] = {}
    for part in parts:
        for key, values in part.items():
            per = total.setdefault(key, {})
            for value, n in values:
                per[value] = per.get(value, 0) + n
    return {
        key: sorted(per.items(), key=lambda vn: (-vn[1], *sort_key(vn[0])))[:limit]
        for key, per in sorted(total.items())
    }


def merge_info(per: dict[str, dict[str, Any]], primary: str) -> dict[str, Any]:
    """An index's facts from its shards' (``per``: by shard name; ``primary``: the shard whose
    manifest speaks for the index): totals, and each shard's own counts."""
    facts = per.values()
    return {
        **per[primary],
        "documents": sum(f["documents"] for f in facts),
        "chunks": sum(f["chunks"] for f in facts),
        "seq": sum(f["seq"] for f in facts),
        "staged": [d for f in facts for d in f.get("staged", [])],
        "bytes_on_disk": sum(f["bytes_on_disk"] for f in facts),
        "per_shard": [
            {
                "shard": name,
                **{
                    key: f[key]
                    for key in (
                        "documents",
                        "chunks",
                        "seq",
                        "generation",
                        "index_type",
                        "bytes_on_disk",
                    )
                    if key in f
                },
            }
            for name, f in per.items()
        ],
    }


def sum_facts(parts: list[dict[str, Any]], zero: dict[str, Any]) -> dict[str, Any]:
    """The shards' figures summed, for the keys of ``zero`` (a shard without one adds zero)."""
    return {key: sum((p.get(key, z) for p in parts), z) for key, z in zero.items()}


def merge_reembeds(done: list[ReembedResult]) -> ReembedResult:
    """One result of the shards' re-embeddings (one model)."""
    from ..index.reembed import ReembedResult

    return ReembedResult(
        encoder=done[0].encoder,
        generation=max(r.generation for r in done),
        chunks=sum(r.chunks for r in done),
        encoded=sum(r.encoded for r in done),
        resumed=sum(r.resumed for r in done),
        stragglers=sum(r.stragglers for r in done),
        seconds=sum(r.seconds for r in done),
    )


def query_vector(
    query: str, given: np.ndarray | None, dim: int, encoder: Callable[[], Encoder]
) -> np.ndarray:
    """The query's vector, encoded ONCE for every shard (or the given one, checked)."""
    if given is None:
        return normalize_rows(np.asarray(encoder().encode_queries([query]), dtype=np.float32))
    vec = np.asarray(given, dtype=np.float32)
    if vec.ndim == 1:
        vec = vec[None, :]
    if vec.shape != (1, dim):
        raise InputError(
            f"the query vector must have shape ({dim},) or (1, {dim}), not {tuple(vec.shape)}."
        )
    return normalize_rows(vec)


def reranker_for(
    rerank: Any, depth: int, precision: str | None, load: Callable[[str, str | None], Reranker]
) -> Reranker | None:
    """The reranker ``search(rerank=...)`` asks for (``load``: the engine's loaded-once
    cross-encoders), or None; the checks of ``Searcher.reranker_for``."""
    if rerank is None or rerank is False:
        return None
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise InputError("the rerank depth must be a whole number of at least 1.")
    if isinstance(rerank, Reranker) and not isinstance(rerank, str | os.PathLike):
        return rerank
    from ..rerank import rerank_model

    return load(rerank_model(None if rerank is True else os.fspath(rerank)), precision)


@dataclass
class Gathered:
    """The merged candidates of the answering shards, and what their answers brought."""

    candidates: Candidates  # global chunk ids
    failed: list[int]
    first: dict[int, ShardAnswer]  # the first round's answers (filter fields)
    locations: dict[str, Any] = field(default_factory=dict)


def gather(
    caller: ShardCaller, request: CandidateRequest, depth: int, terms: list[str]
) -> Gathered:
    """Every shard's candidates for ``request``, merged and cut to ``depth``, with the lexical
    side scored under the GLOBAL term statistics (Elasticsearch's dfs_query_then_fetch): the
    first round also asks each shard for its rows, their total length in terms and its document
    frequency of each query term (``terms``, analyzed once); their sums over the shards that
    answer give the idf and average length that one index of all their rows would use, and each
    shard's lexical candidates are re-scored with FTS5's bm25 formula under them.

    A shard returns its best rows by ITS bm25, which may rank differently: a shard whose list was
    cut is asked again for 4x as many until no row it left out can reach the merged top
    ``depth`` (``unseen_bound``), so the merged lexical list is the one index's top ``depth``,
    at worst at the cost of reading the shard's matches whole. A shard that fails in a later
    round keeps its earlier answer and is asked no more (named in ``failed``: its list may be
    short)."""
    count = caller.count
    if count == 1:  # one shard's statistics are the global ones: FTS5's own scores stand
        terms = []
    first = replace(request, depth=depth, terms=tuple(terms), with_stats=bool(terms))
    answers, failed = caller.candidates({i: first for i in range(count)})
    located: dict[str, Any] = {}
    for a in answers.values():
        located.update(a.locations)
    if not terms:
        parts = {i: a.candidates for i, a in answers.items()}
        return Gathered(merge_candidates(parts, count, depth), failed, answers, located)
    local = {i: a.stats or TermStats(0, 0, {}) for i, a in answers.items()}
    glob = TermStats.total([local[i] for i in sorted(local)])
    want = dict.fromkeys(answers, depth)
    rescored: dict[int, Candidates] = {}
    floor: dict[int, float] = {}
    lost = set(failed)
    fetched = answers
    while True:
        for i, a in fetched.items():
            c = a.candidates
            floor[i] = min(c.lexical.values(), default=0.0)
            lexical = {cid: bm25(terms, a.terms.get(cid, ""), glob) for cid in c.lexical}
            rescored[i] = replace(c, lexical=lexical)
            located.update(a.locations)
        scores = sorted((v for p in rescored.values() for v in p.lexical.values()), reverse=True)
        kth = scores[depth - 1] if len(scores) >= depth else -math.inf
        todo = [
            i
            for i, p in sorted(rescored.items())
            if i not in lost
            and len(p.lexical) >= want[i]
            and unseen_bound(terms, local[i], glob, floor[i]) > kth
        ]
        if not todo:
            break
        for i in todo:
            want[i] *= 4
        again = replace(first, with_stats=False, with_fields=False)
        fetched, more = caller.candidates({i: replace(again, depth=want[i]) for i in todo})
        lost.update(more)
    merged = merge_candidates(rescored, count, depth)
    return Gathered(merged, sorted(lost), answers, located)


@dataclass
class Merged:
    """A merged search's hits, its filter warnings and the shards left out."""

    hits: list[Hit]
    warnings: list[str]
    failed: list[int]


def search_merged(
    caller: ShardCaller,
    request: CandidateRequest,
    k: int,
    config: FusionConfig,
    analyzer: SpanishAnalyzer,
    snippets: bool = True,
    reranker: Reranker | None = None,
    rerank_depth: int = DEFAULT_DEPTH,
) -> Merged:
    """The k best documents across the shards (``request``: the checked, cleaned query, its
    vector unless lexical, the filters): candidates gathered and merged, fused once, reranked
    once, the exact cosine of lexical-only hits, snippets and locations; the filter warnings
    name fields that no answering shard's documents have."""
    want = max(k, rerank_depth) if reranker is not None else k
    count = caller.count
    paths = list(make_filter(request.where, request.source).metadata_paths())  # checks the keys
    terms = list(dict.fromkeys(analyzer.terms(request.query))) if request.mode != "semantic" else []
    template = replace(request, with_fields=bool(paths))
    warnings: list[str] = []
    depth = max(4 * want, 50)
    while True:
        got = gather(caller, template, depth, terms)
        if template.with_fields:  # the first round only
            warnings = _field_warnings(paths, got.first)
            template = replace(template, with_fields=False)
        merged = got.candidates
        fused = fuse_mode(request.mode, config, merged.dense, merged.lexical)
        hits = hits_from_rows(fused, merged.dense, merged.lexical, merged.rows, want)
        if len(hits) >= want or depth >= merged.reach:
            break
        depth *= 4
    failed = set(got.failed)
    if reranker is not None:
        hits = rerank_hits(reranker, request.query, hits, rerank_depth)[:k]
    qvec = request.query_vector
    if qvec is not None:  # exact dense scores for the explanation of lexical-only hits
        for i, ids in _by_shard([h.chunk_id for h in hits if h.dense_score is None], count):
            exact = caller.dense_scores(i, ids, qvec)
            if exact is None:
                failed.add(i)
                continue
            for h in hits:
                if h.dense_score is None and h.chunk_id % count == i:
                    h.dense_score = exact.get(h.chunk_id // count)
    if snippets:
        add_snippets(hits, request.query, analyzer)
    failed |= _locate(caller, hits, got.locations)
    return Merged(hits, warnings, sorted(failed))


def similar_merged(
    caller: ShardCaller, qvec: np.ndarray, own: list[int], home: int, k: int
) -> tuple[list[Hit], list[int]]:
    """Documents closest to a stored one (``qvec``: its mean vector; ``own``: its chunk ids in
    its shard ``home``), across the shards; (hits, shards left out)."""
    count = caller.count
    depth = max(4 * k + len(own), 50)
    request = CandidateRequest("", "semantic", depth, query_vector=qvec)
    mine = replace(request, exclude=frozenset(own))
    while True:
        asks = {i: replace(mine if i == home else request, depth=depth) for i in range(count)}
        answers, failed = caller.candidates(asks)
        parts = {i: a.candidates for i, a in answers.items()}
        merged = merge_candidates(parts, count, depth)
        hits = hits_from_rows(merged.dense, merged.dense, {}, merged.rows, k)
        if len(hits) >= k or depth >= merged.reach:
            break
        depth *= 4
    plain_snippets(hits)
    located: dict[str, Any] = {}
    for a in answers.values():
        located.update(a.locations)
    lost = set(failed) | _locate(caller, hits, located)
    return hits, sorted(lost)


def locate_hits(hits: list[Hit], located: dict[str, Any]) -> None:
    """Each hit's page or section from its document's locations (``Searcher.locate``'s rule:
    where the words it matched lie, else its snippet, else its chunk)."""
    for h in hits:
        if h.doc_id in located:
            if h.highlight_spans:
                span = (min(a for a, _ in h.highlight_spans), max(b for _, b in h.highlight_spans))
            elif h.snippet:
                span = (h.snippet_start, h.snippet_end)
            else:
                span = (h.start, h.end)
            h.location = locate(located[h.doc_id], *span)


def _locate(caller: ShardCaller, hits: list[Hit], known: dict[str, Any]) -> set[int]:
    """Locations through each hit's own shard; the shards that failed."""
    failed = set()
    for i in range(caller.count):
        mine = [h for h in hits if h.chunk_id % caller.count == i]
        if mine and not caller.locate(i, mine, known):
            failed.add(i)
    return failed


def _by_shard(global_ids: list[int], count: int) -> list[tuple[int, list[int]]]:
    out: dict[int, list[int]] = {}
    for g in global_ids:
        out.setdefault(g % count, []).append(g // count)
    return sorted(out.items())


def _field_warnings(paths: list[str], answers: dict[int, ShardAnswer]) -> list[str]:
    """A sentence per filtered field that no answering shard's documents have."""
    missing = [set(a.missing or []) for a in answers.values()]
    if not missing:
        return []
    gone = set.intersection(*missing)
    fields = sorted({f for a in answers.values() for f in a.fields})
    return field_warnings([f for f in paths if f in gone], fields)

"""Choose the index's default fusion of dense and lexical results, with or without labels.

``tune`` retrieves the dense and the lexical candidate lists ONCE per query, then re-fuses them
for every config of a small grid (RRF and convex, several normalisations and dense weights),
scores each with nDCG@10 (ir_measures, as ``evaluation`` does) and stores the winner in the
manifest (``fusion``), where searches pick it up as the index's default.

Without labels it tunes on cloze pseudo-queries cut from the index's own chunks (``cloze_set``):
a sentence of a chunk asks for its document while the chunk is scored WITHOUT that sentence, and
a one-sentence document asks for the other documents of its title, itself left out; neither side
wins by copying words, and every kind of index (paragraphs of one chunk, sentences) gets them.
Only the convex min-max line is scored on them, and ``choose_pseudo`` turns it into a dense weight,
corrected by which side the pseudo-queries found weaker (they overrate the dense side). How the
choice holds on held-out questions: docs/fusion.md (benchmarks/fusion.py).

Guards against noise: fewer than ``MIN_QUERIES`` usable queries keeps the default. On labels,
configs within ``TOLERANCE`` of the best count as ties and the simplest of them wins (the grid is
ordered simplest first, the library default first of all), and a winner that is not better than
the default by at least one standard error of the per-query difference keeps the default; on
pseudo-queries a line flat within ``TOLERANCE`` keeps the default.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ir_measures
import numpy as np
from ir_measures import nDCG

from ..analyzer import stopwords
from ..encoder import normalize_rows
from ..errors import BetoSearchError, InputError
from ..fusion import DEFAULT_CONFIG, NORMS, FusionConfig, normalise, resolve
from ..fusion import explain as explain  # re-exported: moved to fusion.py
from .pseudoqueries import group_queries, make_pseudo_queries, sentences

if TYPE_CHECKING:
    from ..engine import SearchEngine
    from ..index.store import StoredChunk

log = logging.getLogger(__name__)

MIN_QUERIES = 30  # below this, nDCG differences between configs are mostly noise
PSEUDO_QUERIES = 200  # pseudo-queries drawn when tuning without labels
# chunks sampled to cut them from (at least 10 per query, so most chunks yield none and the
# draw stays random; bounded so tuning a large index streams it instead of holding its text)
SAMPLE_PER_QUERY = 10
SAMPLE_MIN = 2000
AUTOTUNE_MIN_CHUNKS = 200  # see maybe_autotune
DEPTH = 100  # candidates per side and query
TOLERANCE = 0.002  # nDCG@10 differences below this are ties
PSEUDO_SEED = 1234  # not adapt's seed: these queries are held out from its training
STYLES = ("cloze", "mixed", "hard", "keywords", "gist", "sentence", "neighbour")
_WORD_KEEP = 0.5


def grid() -> list[FusionConfig]:
    """Configs to try, simplest first: the library default, plain RRF, convex min-max, the rest."""
    out = [DEFAULT_CONFIG, FusionConfig("rrf", 0.5)]
    alphas = [round(0.1 * i, 1) for i in range(1, 10)]
    out += [FusionConfig("convex", a, "minmax") for a in alphas]
    out += [FusionConfig("rrf", a) for a in (0.3, 0.4, 0.6, 0.7, 0.8)]
    out += [FusionConfig("rrf", 0.5, rrf_k=k) for k in (10, 30)]
    out += [FusionConfig("convex", a, norm) for norm in NORMS if norm != "minmax" for a in alphas]
    out += [FusionConfig("convex", 0.0), FusionConfig("convex", 1.0)]  # one side alone: last resort
    seen: set[FusionConfig] = set()
    return [c for c in out if not (c in seen or seen.add(c))]  # type: ignore[func-returns-value]


def pseudo_grid() -> list[FusionConfig]:
    """The configs tried on pseudo-queries: the default, then convex min-max at every dense weight.

    Pseudo-queries are not the user's queries; on the full grid they picked normalisations that
    suited their task and not real queries (docs/tune-reembed.md), while along this one line the
    dense weight they choose moved the right way for every encoder measured.
    """
    return [DEFAULT_CONFIG] + [
        FusionConfig("convex", a) for a in (round(0.05 * i, 2) for i in range(21)) if a != 0.3
    ]


# pseudo-queries overrate the dense side: on held-out questions (docs/fusion.md) the dense weight
# they prefer was right or too high for a strong encoder (0.9 where 0.7-0.8 was best) and twice
# too high for a weak one (0.3 where 0.1-0.15 was best, 0.3 falling below lexical alone)
STRONG_CAP = 0.8  # dense side the stronger one: its weight at most this
WEAK_SHRINK = 0.5  # dense side the weaker one: the weight pseudo-queries prefer, times this


def choose_pseudo(
    means: dict[FusionConfig, float], dense: float, lexical: float
) -> tuple[FusionConfig, str]:
    """The fusion chosen on pseudo-queries, and why (``tune`` without labels).

    ``means``: pseudo nDCG@10 of configs including the convex min-max line; ``dense`` and
    ``lexical``: each side alone. The dense weight the line prefers (the middle of those within
    ``TOLERANCE`` of its best) is corrected by which side the pseudo-queries found weaker: a
    weaker dense side gets ``WEAK_SHRINK`` of it, a stronger one at most ``STRONG_CAP``. A flat
    line (every weight within ``TOLERANCE``) is no evidence: the default stays.
    """
    line = sorted(
        (c for c in means if c.method == "convex" and c.norm == "minmax"), key=lambda c: c.alpha
    )
    values = [means[c] for c in line]
    if not line or max(values) - min(values) <= TOLERANCE:
        return DEFAULT_CONFIG, (
            f"the pseudo-queries rated every dense weight alike (within {TOLERANCE}): no "
            f"evidence, kept the default {DEFAULT_CONFIG.label()}"
        )
    tied = [c.alpha for c in line if means[c] >= max(values) - TOLERANCE]
    preferred = tied[len(tied) // 2]
    side = f"dense only {dense:.3f}, lexical only {lexical:.3f}"
    if dense < lexical:
        alpha = round(math.floor(preferred * WEAK_SHRINK * 20 + 1e-9) / 20, 2)  # 0.05 steps, down
        why = (
            f"the dense side is the weaker one on the pseudo-queries ({side}): the dense weight "
            f"they prefer, {preferred:g}, halved (they overrate the dense side)"
        )
    else:
        alpha = min(preferred, STRONG_CAP)
        why = (
            f"the dense side is the stronger one on the pseudo-queries ({side}): the dense "
            f"weight they prefer, {preferred:g}"
            + (f", capped at {STRONG_CAP:g}" if preferred > STRONG_CAP else "")
        )
    return FusionConfig("convex", alpha), why


@dataclass
class TuneResult:
    """What ``tune`` chose, on what, and why."""

    config: FusionConfig
    stored: bool
    reason: str
    tuned_on: str
    queries: int
    ndcg: dict[str, float] = field(default_factory=dict)
    table: list[tuple[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    evidence: dict[str, Any] = field(default_factory=dict)  # what a label-free choice rests on

    def to_dict(self) -> dict[str, Any]:
        return {
            "fusion": self.config.to_dict(),
            "label": self.config.label(),
            "stored": self.stored,
            "reason": self.reason,
            "tuned_on": self.tuned_on,
            "queries": self.queries,
            "ndcg@10": self.ndcg,
            "grid": [{"config": c, "ndcg@10": v} for c, v in self.table],
            "seconds": round(self.seconds, 2),
            "evidence": self.evidence,
        }


# ----- queries -----------------------------------------------------------------------------------
_STRIP = ".,;:!?¿¡()«»\"'[]"


def _content(text: str) -> list[str]:
    stop = stopwords()
    words = [w.strip(_STRIP) for w in text.split()]
    return [w for w in words if w and w.lower() not in stop and not w.isdigit()]


def harden(text: str, rng: random.Random, keep: float = _WORD_KEEP) -> str:
    """A sentence made into a keyword-like query: no stopwords, a share of words dropped, shuffled."""
    content = _content(text)
    if len(content) < 2:
        return text
    n = max(2, round(keep * len(content)))
    picked = rng.sample(content, min(n, len(content)))
    rng.shuffle(picked)
    return " ".join(picked)


def keywords(text: str, rng: random.Random, lo: int = 2, hi: int = 4) -> str:
    """A few content words of the sentence, shuffled (what people type into a search box)."""
    content = _content(text)
    picked = rng.sample(content, min(len(content), rng.randint(lo, hi)))
    rng.shuffle(picked)
    return " ".join(picked) or text


def gist(text: str, df: dict[str, int]) -> str:
    """The sentence without its rarer half of content words: a paraphrase's lexical handicap
    (the distinctive terms are what a paraphrase replaces), leaving the common-word gist."""
    content = _content(text)
    if len(content) < 4:
        return " ".join(content) or text
    ranked = sorted(content, key=lambda w: -df.get(w.lower(), 0))
    kept = set(ranked[: len(ranked) // 2])
    return " ".join(w for w in content if w in kept)


def _sample_chunks(
    engine: SearchEngine, cap: int, seed: int, style: str
) -> tuple[list[StoredChunk], dict[str, int]]:
    """A uniform sample of at most ``cap`` stored chunks (reservoir sampling, in index order when
    the index is smaller), plus the document frequency of content words over ALL chunks when the
    style needs it. Streams the index: tuning a 10M-chunk index must not hold its text."""
    rng = random.Random(seed)
    sample: list[StoredChunk] = []
    df: dict[str, int] = {}
    seen = 0
    for batch in engine.iter_chunks():
        for c in batch:
            if style in ("gist", "mixed"):
                for w in {w.lower() for w in _content(c.text)}:
                    df[w] = df.get(w, 0) + 1
            seen += 1
            if len(sample) < cap:
                sample.append(c)
            else:
                j = rng.randrange(seen)
                if j < cap:
                    sample[j] = c
    return sample, df


def pseudo_queries(
    engine: SearchEngine, n: int = PSEUDO_QUERIES, seed: int = PSEUDO_SEED, style: str = "cloze"
) -> tuple[dict[str, str], dict[str, dict[str, int]], dict[str, int]]:
    """Label-free queries of the measurement styles (``STYLES`` but "cloze", which is
    ``cloze_set``), their qrels (relevant: the document the text came from) and the chunks to
    leave out of the candidates (none for these styles)."""
    if style not in STYLES or style == "cloze":
        raise InputError(
            f"pseudo-query style must be one of {', '.join(STYLES[1:])}, not '{style}'."
        )
    chunks, df = _sample_chunks(engine, max(SAMPLE_PER_QUERY * n, SAMPLE_MIN), seed, style)
    rng = random.Random(seed)
    picked: list[tuple[str, str]] = []  # (text, doc id)
    exclude: dict[str, int] = {}
    if style == "neighbour":
        # the sentence next to a chosen one: related words, not the same words
        pool = chunks[:]
        rng.shuffle(pool)
        for c in pool:
            spans = [s for s in sentences(c.text) if len(c.text[s[0] : s[1]].split()) >= 6]
            if len(spans) >= 2:
                i = rng.randrange(len(spans) - 1)
                s = spans[i + 1]
                picked.append((c.text[s[0] : s[1]], c.doc_id))
            if len(picked) >= n:
                break
    else:
        pqs = make_pseudo_queries(chunks, n, seed)
        picked = [(p.query, p.doc_id) for p in pqs]
        if len(picked) < n:  # one-sentence chunks (e.g. sentence-level indexes): the whole chunk
            used = {p.chunk_id for p in pqs}
            rest = [c for c in chunks if c.chunk_id not in used and len(c.text.split()) >= 6]
            rng.shuffle(rest)
            picked += [(c.text, c.doc_id) for c in rest[: n - len(picked)]]
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for i, (text, doc_id) in enumerate(picked):
        if style == "mixed":  # half keyword queries, half paraphrase-like ones
            q = keywords(text, rng) if i % 2 == 0 else gist(text, df)
        elif style == "hard":
            q = harden(text, rng)
        elif style == "keywords":
            q = keywords(text, rng)
        elif style == "gist":
            q = gist(text, df)
        else:
            q = " ".join(text.split())
        queries[f"pq{i}"] = q
        qrels[f"pq{i}"] = {doc_id: 1}
    return queries, qrels, exclude


# ----- cloze pseudo-queries for every kind of index ---------------------------------------------
GROUP_MAX = 50  # a title shared by more documents is a label ("FAQ"), not one source's pieces
K1, B = 1.2, 0.75  # SQLite FTS5's bm25() constants


@dataclass
class PseudoSet:
    """Label-free queries and how to score them (see ``cloze_set``)."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    exclude: dict[str, int] = field(default_factory=dict)  # chunk left out of the candidates
    # chunk rescored without the query's sentence: (chunk id, doc id, text, remainder)
    rest: dict[str, tuple[int, str, str, str]] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)


def _groups(engine: SearchEngine, titles: set[str]) -> dict[str, list[str]]:
    """Title -> ids of the documents with that title (titles of at most ``GROUP_MAX``)."""
    out: dict[str, list[str]] = {}
    todo = sorted(titles)
    for i in range(0, len(todo), 500):
        for title, doc_id in engine.store.ids_by_title(todo[i : i + 500]):
            out.setdefault(str(title), []).append(str(doc_id))
    return {t: d for t, d in out.items() if len(d) <= GROUP_MAX}


def cloze_set(engine: SearchEngine, n: int = PSEUDO_QUERIES, seed: int = PSEUDO_SEED) -> PseudoSet:
    """Inverse-cloze pseudo-queries that exist for documents of any length.

    - A chunk of two or more sentences: one sentence is the query, its document the answer, and
      the chunk is scored WITHOUT that sentence (its remainder is encoded for the dense side and
      its BM25 scaled for the lexical one), so no side wins by copying; the document's other
      chunks stay candidates.
    - A one-sentence document (a sentence-level index): its text asks for the other documents of
      its title (the other sentences of its source), and is itself left out of the candidates.
    """
    chunks, _ = _sample_chunks(engine, max(SAMPLE_PER_QUERY * n, SAMPLE_MIN), seed, "cloze")
    pqs = make_pseudo_queries(chunks, n, seed)
    out = PseudoSet({}, {})
    text_of = {c.chunk_id: c.text for c in chunks}
    for i, p in enumerate(pqs):
        qid = f"pq{i}"
        out.queries[qid] = " ".join(p.query.split())
        out.qrels[qid] = {p.doc_id: 1}
        out.rest[qid] = (p.chunk_id, p.doc_id, text_of[p.chunk_id], p.positive)
    out.kinds["sentence of a longer chunk"] = len(pqs)
    if len(pqs) < n:
        used = {p.chunk_id for p in pqs}
        short = [c for c in chunks if c.chunk_id not in used]
        groups = _groups(engine, {c.title for c in short if c.title})
        gqs = group_queries(short, groups, n - len(pqs), seed)
        for g in gqs:
            qid = f"pq{len(out.queries)}"
            out.queries[qid] = g.query
            out.qrels[qid] = {d: 1 for d in g.relevant}
            out.exclude[qid] = g.chunk_id
        if gqs:
            out.kinds["short document, same-title documents"] = len(gqs)
    return out


def _bm25_ratio(engine: SearchEngine, pset: PseudoSet) -> dict[str, float]:
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
    engine: SearchEngine, pset: PseudoSet, depth: int = DEPTH
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


# ----- candidates and scoring ----------------------------------------------------------------------
def candidate_lists(
    engine: SearchEngine, queries: dict[str, str], depth: int = DEPTH
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
        out: list[str] = []
        for n in np.lexsort((self.ids, -scores)):
            if scores[n] == -np.inf:
                break
            doc = key(self.docs[n])
            if doc not in out:
                out.append(doc)
                if len(out) == k:
                    break
        return out


def _score_all(
    queries: dict[str, _Query],
    qrels: dict[str, dict[str, int]],
    variants: list[FusionConfig | str],
    key: Callable[[str], str],
) -> list[dict[str, float]]:
    """Per-query nDCG@10 of every variant, with ONE ir_measures call (query ids tagged by variant)."""
    judged = [
        ir_measures.Qrel(f"{v}|{q}", d, g)
        for v in range(len(variants))
        for q, j in qrels.items()
        for d, g in j.items()
    ]
    run = []
    for v, cfg in enumerate(variants):
        for qid, cand in queries.items():
            docs = cand.top_docs(cand.scores(cfg), key)
            # ranks, not scores, decide the order (as in evaluation.score_run)
            run += [
                ir_measures.ScoredDoc(f"{v}|{qid}", d, float(10 - i)) for i, d in enumerate(docs)
            ]
    out: list[dict[str, float]] = [{q: 0.0 for q in qrels} for _ in variants]
    for m in ir_measures.evaluator([nDCG @ 10], judged).iter_calc(run):
        tag, _, qid = m.query_id.partition("|")
        out[int(tag)][qid] = float(m.value)
    return out


def measure(
    dense: dict[str, dict[int, float]],
    lexical: dict[str, dict[int, float]],
    doc_of: dict[int, str],
    qrels: dict[str, dict[str, int]],
    configs: list[FusionConfig],
    doc_key: Callable[[str], str] | None = None,
) -> tuple[dict[FusionConfig, float], float, float]:
    """Mean nDCG@10 of each config on given candidate lists ({qid: {chunk id: score}}, each
    chunk's document), and of each side alone: what ``tune`` compares, without an index."""
    cands = {q: _Query(dense.get(q, {}), lexical.get(q, {}), doc_of) for q in qrels}
    scored = _score_all(cands, qrels, [*configs, "dense", "lexical"], doc_key or (lambda d: d))
    means = {c: _mean(v) for c, v in zip(configs, scored)}
    return means, _mean(scored[-2]), _mean(scored[-1])


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / max(1, len(values))


def _se_of_difference(a: dict[str, float], b: dict[str, float]) -> float:
    diffs = [a[q] - b[q] for q in a]
    n = len(diffs)
    if n < 2:
        return math.inf
    mean = sum(diffs) / n
    return math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n)


# ----- tuning ----------------------------------------------------------------------------------
def tune(
    engine: SearchEngine,
    queries: dict[str, str] | None = None,
    qrels: dict[str, dict[str, int]] | None = None,
    *,
    n: int = PSEUDO_QUERIES,
    seed: int = PSEUDO_SEED,
    style: str = "cloze",
    store: bool = True,
    configs: list[FusionConfig] | None = None,
    doc_key: Callable[[str], str] | None = None,
    tuned_on: str | None = None,
) -> TuneResult:
    """Choose the fusion that maximises nDCG@10 and (``store``) make it the index's default.

    ``queries`` {qid: text} and ``qrels`` {qid: {doc id: grade}} tune on labels; without them,
    on ``n`` pseudo-queries of the given ``style``. ``doc_key`` maps document ids before scoring
    (e.g. sentence ids to their source document).
    """
    started = time.perf_counter()
    if (queries is None) != (qrels is None):
        raise InputError("give both queries and qrels to tune on labels, or neither.")
    manifest = engine.refresh()
    if manifest is None:
        raise InputError("the index is empty; ingest documents before tuning its fusion.")
    labelled = queries is not None
    pset: PseudoSet | None = None
    if queries is None or qrels is None:
        if style == "cloze":
            pset = cloze_set(engine, n, seed)
            queries, qrels = pset.queries, pset.qrels
            kinds = ", ".join(f"{v} {k}" for k, v in pset.kinds.items() if v)
            what = tuned_on or f"{len(queries)} cloze pseudo-queries ({kinds}; seed {seed})"
        else:
            queries, qrels, exclude = pseudo_queries(engine, n, seed, style)
            pset = PseudoSet(queries, qrels, exclude)
            what = tuned_on or f"{len(queries)} pseudo-queries ({style}, seed {seed})"
        configs = configs or pseudo_grid()
    else:
        keep = [q for q in queries if any(g > 0 for g in qrels.get(q, {}).values())]
        queries = {q: queries[q] for q in keep}
        qrels = {q: qrels[q] for q in keep}
        what = tuned_on or f"{len(queries)} labelled queries"
    configs = configs or grid()
    if len(queries) < MIN_QUERIES:
        reason = (
            f"only {len(queries)} usable queries (at least {MIN_QUERIES} are needed to tell "
            f"configs apart); kept the default {DEFAULT_CONFIG.label()}"
        )
        return TuneResult(
            DEFAULT_CONFIG, False, reason, what, len(queries), seconds=time.perf_counter() - started
        )
    if pset is not None:
        dense, lexical, doc_of = cloze_candidates(engine, pset, DEPTH)
    else:
        dense, lexical, doc_of = candidate_lists(engine, queries, DEPTH)
    cands = {q: _Query(dense[q], lexical[q], doc_of) for q in queries}
    scored = _score_all(cands, qrels, [*configs, "dense", "lexical"], doc_key or (lambda d: d))
    per = dict(zip(configs, scored))
    dense_only, lexical_only = _mean(scored[-2]), _mean(scored[-1])
    means = {cfg: _mean(v) for cfg, v in per.items()}
    best = max(configs, key=lambda c: means[c])
    chosen = next(c for c in configs if means[c] >= means[best] - TOLERANCE)  # simplest tie
    default = configs[0]
    reason = f"highest nDCG@10 (within {TOLERANCE} of the best, simplest first)"
    evidence: dict[str, Any] = {}
    if not labelled:
        chosen, reason = choose_pseudo(means, dense_only, lexical_only)
        if chosen not in means:  # a weight off the measured line: measure it
            extra = _score_all(cands, qrels, [chosen], doc_key or (lambda d: d))[0]
            per[chosen], means[chosen] = extra, _mean(extra)
        n_q = max(1, len(queries))
        evidence = {
            "pseudo_queries": dict(pset.kinds) if pset is not None else {},
            "dense_better": round(sum(scored[-2][q] > scored[-1][q] for q in queries) / n_q, 3),
            "lexical_better": round(sum(scored[-1][q] > scored[-2][q] for q in queries) / n_q, 3),
            "convex_line": {
                f"{c.alpha:g}": round(means[c], 4)
                for c in sorted(
                    (c for c in configs if c.method == "convex" and c.norm == "minmax"),
                    key=lambda c: c.alpha,
                )
            },
        }
    elif chosen != default:
        gain = means[chosen] - means[default]
        se = _se_of_difference(per[chosen], per[default])
        if gain < se:
            reason = (
                f"{chosen.label()} beat the default by {gain:.4f}, less than one standard "
                f"error ({se:.4f}); kept the default"
            )
            chosen = default
    ndcg = {
        "chosen": round(means[chosen], 4),
        "default": round(means[default], 4),
        "best": round(means[best], 4),
        "dense": round(dense_only, 4),
        "lexical": round(lexical_only, 4),
    }
    result = TuneResult(
        chosen,
        False,
        reason,
        what,
        len(queries),
        ndcg,
        [(c.label(), round(means[c], 4)) for c in configs],
        evidence=evidence,
    )
    if store:
        facts = {
            **chosen.to_dict(),
            "tuned_on": what,
            "labels": "labels" if labelled else "pseudo",
            "queries": len(queries),
            "ndcg@10": ndcg,
            "reason": reason,
            **({"evidence": evidence} if evidence else {}),
            "chunks": engine.store.chunk_count(),
            "generation": manifest.generation,
            "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        engine.set_default_fusion(facts)
        result.stored = True
    result.seconds = time.perf_counter() - started
    return result


def maybe_autotune(engine: SearchEngine) -> TuneResult | None:
    """Tune after an ingest/reembed when the index is big enough to tell and the stored choice
    is missing or stale; never replaces a choice made on labels.

    Threshold: ``AUTOTUNE_MIN_CHUNKS`` (200) chunks, so that ``PSEUDO_QUERIES`` pseudo-queries come
    from distinct chunks and each candidate list (``DEPTH`` 100) is a real choice out of the index
    rather than most of it. Stale: tuned under another generation (model), or the index has
    doubled since. ``BETO_SEARCH_AUTOTUNE=0`` turns it off.
    """
    if os.environ.get("BETO_SEARCH_AUTOTUNE", "1").lower() in ("0", "false", "no", "off"):
        return None
    manifest = engine.refresh()  # the facade's view may predate another process's writes
    if manifest is None:
        return None
    m = manifest.to_dict()
    chunks = engine.store.chunk_count()
    if chunks < AUTOTUNE_MIN_CHUNKS:
        return None
    old = m.get("fusion")
    if isinstance(old, dict):
        if old.get("labels") == "labels":
            return None
        fresh = (
            old.get("generation", 0) == m.get("generation", 0) and 2 * old.get("chunks", 0) > chunks
        )
        if fresh:
            return None
    try:
        result = tune(engine)
    except (BetoSearchError, RuntimeError, ValueError, OSError) as exc:
        # tuning is a bonus: never fail the ingest (or re-embed) that triggered it
        log.warning("automatic fusion tuning failed: %s", exc)
        return None
    log.info("fusion tuned: %s (%s)", result.config.label(), result.reason)
    return result


def describe(
    manifest: dict[str, Any] | None, fusion: str | None = None, alpha: float | None = None
) -> dict[str, Any]:
    """What fusion a search with these arguments uses and why (``query --explain``): the config
    (as ``fusion.resolve`` makes it), its label, where it came from ("arguments", "tuned" or
    "default") and the reason (plus the tune's evidence when the index's tuned one is used)."""
    used = resolve(manifest, fusion, alpha)
    f = (manifest or {}).get("fusion")
    out: dict[str, Any] = {**used.to_dict(), "label": used.label()}
    if fusion is not None or alpha is not None:
        given = ", ".join(
            x
            for x in (
                f"--fusion {fusion}" if fusion else "",
                f"--alpha {alpha:g}" if alpha is not None else "",
            )
            if x
        )
        out.update(source="arguments", reason=f"given with the search ({given})")
    elif isinstance(f, dict):
        out.update(source="tuned", reason=explain(manifest))
        if isinstance(f.get("evidence"), dict):
            out["evidence"] = f["evidence"]
    else:
        out.update(source="default", reason=explain(manifest))
    return out

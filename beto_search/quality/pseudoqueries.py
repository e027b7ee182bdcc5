"""Pseudo-queries from an index's own chunks: training and checking data without labels.

Inverse cloze (Lee et al., 2019): a sentence of a chunk plays the query and the chunk without that
sentence is its positive passage. The sentence is removed so that the model cannot win by matching
words verbatim; it has to learn what the rest of the passage is about. Independent cropping
(Izacard et al., Contriever) draws two random word spans of one chunk instead.

Sets drawn from a whole index (streamed, a uniform sample of its chunks) for tuning its fusion:
``cloze_set`` (inverse cloze for every kind of index, group queries for one-sentence documents)
and ``pseudo_queries`` (the measurement styles: keyword-like, gist, neighbour sentences, ...).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..analyzer import stopwords
from ..errors import InputError

if TYPE_CHECKING:
    from ..index.store import StoredChunk
    from ..protocols import EngineLike

MIN_WORDS = 4  # shorter "sentences" are headings, list bullets or abbreviations
MAX_WORDS = 64  # longer ones are run-on text without punctuation: not query-like
PSEUDO_QUERIES = 200  # pseudo-queries drawn when tuning without labels
# chunks sampled to cut them from (at least 10 per query, so most chunks yield none and the
# draw stays random; bounded so tuning a large index streams it instead of holding its text)
SAMPLE_PER_QUERY = 10
SAMPLE_MIN = 2000
PSEUDO_SEED = 1234  # not adapt's seed: these queries are held out from its training
STYLES = ("cloze", "mixed", "hard", "keywords", "gist", "sentence", "neighbour")
_WORD_KEEP = 0.5

# a sentence ends at . ! ? … (plus closing quotes/brackets) before whitespace, or at a line break
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'»”)\]]*\s+|\n+")
_WORD = re.compile(r"\S+")


@dataclass
class PseudoQuery:
    """A query drawn from a stored chunk and the passage it should find."""

    qid: str
    query: str
    doc_id: str
    chunk_id: int
    positive: str


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (whitespace around them excluded)."""
    spans = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        piece = text[s:e]
        left = len(piece) - len(piece.lstrip())
        right = len(piece.rstrip())
        if right > left:
            out.append((s + left, s + right))
    return out


# tuning.py's name for it (the placeholder module it was written against called it so)
sentences = sentence_spans


def _words(text: str) -> int:
    return len(_WORD.findall(text))


def _strip_markup(sentence: str) -> str:
    """Drop markdown heading/list marks so that a query reads like text."""
    return re.sub(r"^\s*(#+|[-*+]|\d+[.)])\s+", "", sentence).strip()


def cloze_pairs(chunk: Any) -> Iterator[PseudoQuery]:
    """Every usable (sentence, chunk without it) pair of one stored chunk, in text order."""
    text = chunk.text
    spans = sentence_spans(text)
    if len(spans) < 2:
        return
    for i, (s, e) in enumerate(spans):
        query = _strip_markup(text[s:e])
        if not MIN_WORDS <= _words(query) <= MAX_WORDS:
            continue
        rest = (text[:s].rstrip() + " " + text[e:].lstrip()).strip()
        if _words(rest) < MIN_WORDS:
            continue
        yield PseudoQuery(
            f"pq-{chunk.chunk_id}-{i}", query, chunk.doc_id, int(chunk.chunk_id), rest
        )


def make_pseudo_queries(chunks: Iterable[Any], n: int, seed: int = 0) -> list[PseudoQuery]:
    """``n`` inverse-cloze pseudo-queries spread over as many chunks as possible (seeded).

    Chunks are visited in a seeded random order, taking one sentence from each before a second
    one from any, so that a few long chunks do not supply all the queries. ``n <= 0`` returns
    every usable pair. ``chunks``: objects with chunk_id, doc_id and text (``StoredChunk``).
    """
    rng = random.Random(seed)
    per_chunk = [list(cloze_pairs(c)) for c in chunks]
    per_chunk = [p for p in per_chunk if p]
    for pairs in per_chunk:
        rng.shuffle(pairs)
    rng.shuffle(per_chunk)
    out: list[PseudoQuery] = []
    depth = 0
    limit = n if n > 0 else sum(len(p) for p in per_chunk)
    while len(out) < limit and any(len(p) > depth for p in per_chunk):
        for pairs in per_chunk:
            if depth < len(pairs):
                out.append(pairs[depth])
                if len(out) == limit:
                    break
        depth += 1
    return out


def crop_pair(
    text: str, rng: random.Random, query_words: tuple[int, int] = (8, 32), min_ratio: float = 0.5
) -> tuple[str, str] | None:
    """Independent cropping: a short random span (the query) and a long one (the positive)."""
    words = text.split()
    n = len(words)
    if n < 2 * MIN_WORDS:
        return None
    q_len = rng.randint(min(query_words[0], n // 2), min(query_words[1], n // 2))
    q_start = rng.randint(0, n - q_len)
    p_len = rng.randint(max(MIN_WORDS, int(n * min_ratio)), n)
    p_start = rng.randint(0, n - p_len)
    return " ".join(words[q_start : q_start + q_len]), " ".join(words[p_start : p_start + p_len])


@dataclass
class GroupQuery:
    """A pseudo-query for a document too short to cut a sentence out of (one sentence, say):
    the document's text asks for the OTHER documents of its group (same title: the sentences of
    one source), and the document itself is left out of the candidates."""

    qid: str
    query: str
    doc_id: str
    chunk_id: int
    relevant: tuple[str, ...]


def group_queries(
    chunks: Iterable[Any], groups: dict[str, list[str]], n: int, seed: int = 0
) -> list[GroupQuery]:
    """Up to ``n`` group pseudo-queries (seeded): every chunk of ``MIN_WORDS`` to ``MAX_WORDS``
    words whose document shares its title with at least one other document (``groups``: title
    -> document ids) asks for those other documents, one query per document at most."""
    rng = random.Random(seed)
    pool = [c for c in chunks if c.title and len(groups.get(c.title, ())) > 1]
    rng.shuffle(pool)
    out: list[GroupQuery] = []
    seen: set[str] = set()
    for c in pool:
        query = " ".join(_strip_markup(c.text).split())
        if c.doc_id in seen or not MIN_WORDS <= _words(query) <= MAX_WORDS:
            continue
        seen.add(c.doc_id)
        others = tuple(d for d in groups[c.title] if d != c.doc_id)
        out.append(GroupQuery(f"gq-{c.chunk_id}", query, c.doc_id, int(c.chunk_id), others))
        if len(out) >= n > 0:
            break
    return out


# ----- pseudo-query sets from an index (tuning) ------------------------------------------------
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
    engine: EngineLike, cap: int, seed: int, style: str
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
    engine: EngineLike, n: int = PSEUDO_QUERIES, seed: int = PSEUDO_SEED, style: str = "cloze"
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


@dataclass
class PseudoSet:
    """Label-free queries and how to score them (see ``cloze_set``)."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    exclude: dict[str, int] = field(default_factory=dict)  # chunk left out of the candidates
    # chunk rescored without the query's sentence: (chunk id, doc id, text, remainder)
    rest: dict[str, tuple[int, str, str, str]] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)


def _groups(engine: EngineLike, titles: set[str]) -> dict[str, list[str]]:
    """Title -> ids of the documents with that title (titles of at most ``GROUP_MAX``)."""
    out: dict[str, list[str]] = {}
    todo = sorted(titles)
    for i in range(0, len(todo), 500):
        for title, doc_id in engine.store.ids_by_title(todo[i : i + 500]):
            out.setdefault(str(title), []).append(str(doc_id))
    return {t: d for t, d in out.items() if len(d) <= GROUP_MAX}


def cloze_set(engine: EngineLike, n: int = PSEUDO_QUERIES, seed: int = PSEUDO_SEED) -> PseudoSet:
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

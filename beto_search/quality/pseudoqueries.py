"""Pseudo-queries from an index's own chunks: training and checking data without labels.

Inverse cloze (Lee et al., 2019): a sentence of a chunk plays the query and the chunk without that
sentence is its positive passage. The sentence is removed so that the model cannot win by matching
words verbatim; it has to learn what the rest of the passage is about. Independent cropping
(Izacard et al., Contriever) draws two random word spans of one chunk instead.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

MIN_WORDS = 4  # shorter "sentences" are headings, list bullets or abbreviations
MAX_WORDS = 64  # longer ones are run-on text without punctuation: not query-like

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

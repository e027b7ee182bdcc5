"""Pseudo-queries from stored chunks (inverse cloze): a sentence of a chunk as the query.

Minimal version on the d2-tune branch so ``tuning`` has something to run on; helper D1 owns the
real module (same interface, CONTRACT.md) and the lead keeps D1's at merge.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_SENTENCE = re.compile(r"[^.!?¿¡\n]*[^.!?\n]*[.!?]+|[^.!?\n]+$", re.MULTILINE)
MIN_WORDS = 6


@dataclass
class PseudoQuery:
    """A query cut from a chunk: its document is the relevant one; ``positive`` is the chunk
    without the sentence."""

    qid: str
    query: str
    doc_id: str
    chunk_id: int
    positive: str


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences of ``text`` (a plain regex split on . ! ? and lines)."""
    out = []
    for m in _SENTENCE.finditer(text):
        start, end = m.start(), m.end()
        while start < end and text[start].isspace():
            start += 1
        if end > start:
            out.append((start, end))
    return out


def make_pseudo_queries(chunks: Iterable[Any], n: int, seed: int = 0) -> list[PseudoQuery]:
    """Up to ``n`` pseudo-queries, at most one per chunk, chunks picked at random with ``seed``."""
    rng = random.Random(seed)
    pool = list(chunks)
    rng.shuffle(pool)
    out: list[PseudoQuery] = []
    for chunk in pool:
        if len(out) >= n:
            break
        spans = [
            s for s in sentences(chunk.text) if len(chunk.text[s[0] : s[1]].split()) >= MIN_WORDS
        ]
        if len(spans) < 2:  # the positive must keep some text
            continue
        start, end = rng.choice(spans)
        query = " ".join(chunk.text[start:end].split())
        positive = (chunk.text[:start] + chunk.text[end:]).strip()
        out.append(PseudoQuery(f"pq{len(out)}", query, chunk.doc_id, chunk.chunk_id, positive))
    return out

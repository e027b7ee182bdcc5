"""Label-free pseudo-queries for documents too short to cut a sentence out of, with no title group.

The fusion tune (``tuning.cloze_set``) cuts a sentence out of a chunk of two or more sentences, and
a one-sentence document asks for the other documents of its title. A one-sentence document with
no title, or a title of its own, had neither, so a sentence-level index without titles kept the
library default. ``crop_queries`` fills that gap with a word-level cloze: a contiguous span of the
sentence is the query and the document is scored on the REST of its words only (the same
rescoring as a sentence cut out of a paragraph: the remainder encoded for the dense side, BM25
scaled for the lexical one), so neither side wins by copying the query's words.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from .pseudoqueries import MAX_WORDS, MIN_WORDS, PseudoQuery

CROP_SHARE = 0.5  # the query takes about half of the document's words, the rest scores it
MIN_CROP_WORDS = 2 * MIN_WORDS  # shorter documents leave too little on either side


def crop_pair(text: str, rng: random.Random) -> tuple[str, str] | None:
    """A contiguous span of about ``CROP_SHARE`` of the words of ``text`` (the query) and the
    words around it (the remainder), each at least ``MIN_WORDS`` long; None for too short a text."""
    words = text.split()
    n = len(words)
    if n < MIN_CROP_WORDS:
        return None
    size = min(MAX_WORDS, max(MIN_WORDS, round(CROP_SHARE * n)))
    size = min(size, n - MIN_WORDS)
    start = rng.randint(0, n - size)
    query = words[start : start + size]
    rest = words[:start] + words[start + size :]
    return " ".join(query), " ".join(rest)


def crop_queries(chunks: Iterable[Any], n: int, seed: int = 0) -> list[PseudoQuery]:
    """Up to ``n`` word-level cloze pseudo-queries (seeded), one per document at most: a span of
    a chunk's words asks for its document, which is scored on the chunk's other words
    (``PseudoQuery.positive``). ``chunks``: objects with chunk_id, doc_id and text."""
    rng = random.Random(seed)
    pool = list(chunks)
    rng.shuffle(pool)
    out: list[PseudoQuery] = []
    seen: set[str] = set()
    for c in pool:
        if c.doc_id in seen:
            continue
        pair = crop_pair(c.text, rng)
        if pair is None:
            continue
        seen.add(c.doc_id)
        out.append(PseudoQuery(f"cq-{c.chunk_id}", pair[0], c.doc_id, int(c.chunk_id), pair[1]))
        if len(out) >= n > 0:
            break
    return out

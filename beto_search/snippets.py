"""Snippets: the best chunk's most relevant sentences, with the query's terms highlighted."""

from __future__ import annotations

import html
from dataclasses import dataclass

from .analyzer import SpanishAnalyzer
from .chunking import split_segments

MAX_CHARS = 320


@dataclass
class Snippet:
    """A passage of a document: text, its char span in the document, highlighted term spans."""

    text: str
    start: int
    end: int
    spans: list[tuple[int, int]]  # document offsets of highlighted words

    def marked(self, before: str = "<mark>", after: str = "</mark>", escape: bool = True) -> str:
        """The text with each highlighted word wrapped (HTML-escaped by default)."""
        esc = html.escape if escape else (lambda s: s)
        out, pos = [], self.start
        for s, e in self.spans:
            out.append(esc(self.text[pos - self.start : s - self.start]))
            out.append(before + esc(self.text[s - self.start : e - self.start]) + after)
            pos = e
        out.append(esc(self.text[pos - self.start :]))
        return "".join(out)


def make_snippet(
    chunk_text: str,
    chunk_start: int,
    query: str,
    analyzer: SpanishAnalyzer,
    max_chars: int = MAX_CHARS,
) -> Snippet:
    """Pick the chunk's sentences that share most terms with the query and mark those terms."""
    wanted = set(analyzer.terms(query))
    segments = split_segments(chunk_text) or [(0, len(chunk_text))]
    best, best_score = 0, -1
    for i, (s, e) in enumerate(segments):
        score = len(wanted & set(analyzer.terms(chunk_text[s:e])))
        if score > best_score:
            best, best_score = i, score
    s, e = segments[best]
    j = best + 1
    while e - s < max_chars // 2 and j < len(segments):
        e = segments[j][1]
        j += 1
    # trim surrounding whitespace and cut long passages at a word boundary
    while s < e and chunk_text[s].isspace():
        s += 1
    while e > s and chunk_text[e - 1].isspace():
        e -= 1
    if e - s > max_chars:
        cut = chunk_text.rfind(" ", s, s + max_chars)
        e = cut if cut > s else s + max_chars
    text = chunk_text[s:e]
    spans = [
        (chunk_start + s + t.start, chunk_start + s + t.end)
        for t in analyzer.tokens(text)
        if t.term in wanted
    ]
    return Snippet(text=text, start=chunk_start + s, end=chunk_start + e, spans=spans)

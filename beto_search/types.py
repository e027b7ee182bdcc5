"""Plain data records passed between components."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    """One searchable document as read from a source."""

    id: str
    text: str
    title: str = ""
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    # (char offset where a part starts, its location, e.g. {"page": 3}); a streamed document's
    # are collected while it is read
    locations: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # a document too large to hold (``text`` is "" then): a re-startable stream of
    # (text part, location) whose concatenation is the text; the indexer chunks it as it reads
    parts: Callable[[], Iterator[tuple[str, dict[str, Any]]]] | None = field(
        default=None, repr=False, compare=False
    )


@dataclass
class Chunk:
    """A window of a document: its char span and, when known, its token ids."""

    ordinal: int
    start: int
    end: int
    text: str
    token_ids: list[int] | None = None


@dataclass
class Hit:
    """One ranked document in a result list."""

    rank: int
    score: float
    doc_id: str
    title: str
    text: str
    start: int
    end: int
    source: str
    metadata: dict[str, Any]
    chunk_id: int = 0
    dense_score: float | None = None
    lexical_score: float | None = None
    snippet: str = ""
    snippet_start: int = 0
    snippet_end: int = 0
    highlight: str = ""
    highlight_spans: list[tuple[int, int]] = field(default_factory=list)
    # where the best passage is: {"page": 3}, {"pages": [3, 4]}, {"section": "A › B"}
    location: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, explain: bool = True) -> dict[str, Any]:
        """The JSON shape of a hit (with its dense, lexical and fused scores unless explain=False)."""
        out: dict[str, Any] = {
            "rank": self.rank,
            "score": self.score,
            "doc_id": self.doc_id,
            "title": self.title,
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "source": self.source,
            "metadata": self.metadata,
            "snippet": {"text": self.snippet, "start": self.snippet_start, "end": self.snippet_end},
            "highlight": self.highlight,
            "highlight_spans": [list(span) for span in self.highlight_spans],
            **self.location,
        }
        if explain:
            out["explain"] = {
                "dense_score": self.dense_score,
                "lexical_score": self.lexical_score,
                "fused_score": self.score,
            }
        return out


def locate(locations: list[tuple[int, dict[str, Any]]], start: int, end: int) -> dict[str, Any]:
    """Where the text span [start, end) lies: the page (``pages`` when it spans several) and the
    section in effect at its start (else the first one inside it)."""
    if not locations:
        return {}
    offsets = [o for o, _ in locations]
    first = max(bisect_right(offsets, start) - 1, 0)
    last = max(bisect_right(offsets, max(start, end - 1)) - 1, 0)
    inside = [loc for _, loc in locations[first : last + 1]]
    if offsets[0] > start:  # the span starts before the first located part
        inside = [loc for o, loc in locations if o < end]
    out: dict[str, Any] = {}
    pages = sorted({int(loc["page"]) for loc in inside if "page" in loc})
    if len(pages) == 1:
        out["page"] = pages[0]
    elif pages:
        out["pages"] = pages
    sections = [loc["section"] for loc in inside if "section" in loc]
    if sections:
        out["section"] = sections[0]
    return out


class SearchResults(list[Hit]):
    """The hits of a search, best first (a plain list of ``Hit``), with ``warnings``: sentences
    about the request that found nothing to act on, such as a filter on a field no document has."""

    def __init__(self, hits: list[Hit] | None = None, warnings: list[str] | None = None) -> None:
        super().__init__(hits or [])
        self.warnings: list[str] = list(warnings or [])

"""Plain data records passed between components."""

from __future__ import annotations

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
    rerank_score: float | None = None  # the cross-encoder's score (reranked hits only)
    snippet: str = ""
    snippet_start: int = 0
    snippet_end: int = 0
    highlight: str = ""
    highlight_spans: list[tuple[int, int]] = field(default_factory=list)

    def to_dict(self, explain: bool = True) -> dict[str, Any]:
        """The JSON shape of a hit (with its dense, lexical and fused scores unless explain=False;
        ``score`` is the fused score, ``rerank_score`` the cross-encoder's or None)."""
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
            "rerank_score": self.rerank_score,
        }
        if explain:
            out["explain"] = {
                "dense_score": self.dense_score,
                "lexical_score": self.lexical_score,
                "fused_score": self.score,
            }
            if self.rerank_score is not None:  # beside the others when a cross-encoder ranked it
                out["explain"]["rerank_score"] = self.rerank_score
        return out

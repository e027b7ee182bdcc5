"""Self-checks of a trained model: held-out queries scored before and after (document level,
as ``eval`` counts: ``scoring.score_run``, a document scored as its best passage)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..pseudoqueries import PseudoQuery
from ..scoring import best_per_document, score_run
from .model_io import embed
from .options import CHECK_CORPUS_MAX

T = TypeVar("T")


# ----- retrieval check (held-out pseudo-queries, or a labelled dev split) -----------------------
@dataclass
class RetrievalCheck:
    """Queries, their graded relevant documents and a corpus of (doc id, text) passages."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    passages: list[tuple[str, str]]

    def score(self, model: Any, max_length: int) -> dict[str, float]:
        """Document-level nDCG@10 and Recall@10 (a document scores as its best passage)."""
        if not self.queries:
            return {}
        qids = list(self.queries)
        q = embed(model, [self.queries[i] for i in qids], max_length)
        p = embed(model, [t for _, t in self.passages], max_length)
        docs = [d for d, _ in self.passages]
        sims = q @ p.T
        run = {
            qid: [(d, float(sims[row, j])) for d, j in best_per_document(sims[row], docs)]
            for row, qid in enumerate(qids)
        }
        means, _ = score_run(self, run)
        return {"ndcg@10": round(means["ndcg@10"], 4), "recall@10": round(means["recall@10"], 4)}


def cap_corpus(items: list[T], keep: Callable[[T], bool], seed: int) -> list[T]:
    """A self-check's corpus of at most ``CHECK_CORPUS_MAX`` passages: every one ``keep`` wants
    (the relevant documents' passages), then a seeded sample of the rest."""
    if len(items) <= CHECK_CORPUS_MAX:
        return items
    kept = [x for x in items if keep(x)]
    rest = [x for x in items if not keep(x)]
    random.Random(seed).shuffle(rest)
    return kept + rest[: max(0, CHECK_CORPUS_MAX - len(kept))]


def cloze_check(held: list[PseudoQuery], chunks: list[Any], seed: int) -> RetrievalCheck:
    """Held-out pseudo-queries against the chunks, with each query's sentence taken out of every
    chunk of its document (overlapping neighbours would otherwise hold it verbatim)."""
    by_doc: dict[str, list[str]] = {}
    for pq in held:
        by_doc.setdefault(pq.doc_id, []).append(pq.query)
    passages = []
    for c in cap_corpus(chunks, lambda c: c.doc_id in by_doc, seed):
        text = c.text
        for sentence in by_doc.get(c.doc_id, ()):
            text = text.replace(sentence, " ")
        passages.append((c.doc_id, text))
    return RetrievalCheck(
        {pq.qid: pq.query for pq in held}, {pq.qid: {pq.doc_id: 1} for pq in held}, passages
    )

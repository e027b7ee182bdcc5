"""``train``: fine-tune an index's model on labelled queries (BEIR/TREC queries + qrels) or pairs.

Pairs files: JSON Lines of ``{"query": ..., "positive": ...[, "negative": ...]}`` or TSV lines
``query<TAB>positive[<TAB>negative]`` (an optional header line naming the columns). With qrels, the
positive passage of a (query, relevant document) is the document's stored chunk closest to the
query under the starting model.

Each training query gets one hard negative mined from the index: the lexical and the dense top 30
interleaved, known positives (their documents, and passages whose words nearly match a positive)
excluded, one drawn from the first five left. Loss: MultipleNegativesRankingLoss over (query,
positive, hard negative) with in-batch negatives. A fifth of the queries (seeded) is held out as a
dev split: scored before training, after every epoch (early stopping: the best weights are kept,
two evaluations without a gain stop the run), and in the model card.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InputError
from ..evaluation.formats import load_eval_set
from .checks import RetrievalCheck, cap_corpus
from .model_io import embed
from .options import TrainReport, train_options
from .session import Session, check_batch_size, every_chunk

if TYPE_CHECKING:
    from ...protocols import EngineLike, Searchable

MINE_DEPTH = 30
MINE_PICK = 5
NEAR_DUPLICATE = 0.7  # word-set Jaccard at or above which a passage counts as a positive


@dataclass
class Example:
    """One labelled (query, positive) pair, with what counts as a known positive for mining."""

    qid: str
    query: str
    positive: str
    negative: str | None = None
    positive_docs: set[str] = field(default_factory=set)
    key: str = ""  # the positive's identity (document id, or a hash of its text)


_WORDS = re.compile(r"\w+")


def _word_set(text: str) -> set[str]:
    return set(_WORDS.findall(text.lower()))


def near_duplicate(a: str, b: str) -> bool:
    """True when two passages share most of their words (or one contains the other)."""
    if a.strip() in b or b.strip() in a:
        return True
    wa, wb = _word_set(a), _word_set(b)
    return bool(wa and wb) and len(wa & wb) / len(wa | wb) >= NEAR_DUPLICATE


def read_pairs(path: str | os.PathLike[str]) -> list[Example]:
    """Pairs from a JSONL or TSV file; a bad line is an error naming the file and line."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"the pairs file {path} does not exist.") from None
    except IsADirectoryError:
        raise InputError(f"the pairs file {path} is a folder, not a file.") from None
    except UnicodeDecodeError:
        raise InputError(f"the pairs file {path} is not UTF-8 text.") from None
    except OSError as exc:
        raise InputError(f"cannot read the pairs file {path} ({exc.strerror}).") from None
    lines = [
        (n, line.rstrip("\r")) for n, line in enumerate(raw.split("\n"), start=1) if line.strip()
    ]
    if not lines:
        raise InputError(f"the pairs file {path} is empty.")
    jsonl = path.suffix.lower() in (".jsonl", ".json") or lines[0][1].lstrip().startswith("{")
    out: list[Example] = []
    for n, line in lines:
        where = f"{path}:{n}"
        if jsonl:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: not valid JSON ({exc.msg}).") from None
            if not isinstance(obj, dict):
                raise InputError(f"{where}: expected a JSON object with 'query' and 'positive'.")
            query, pos, neg = obj.get("query"), obj.get("positive"), obj.get("negative")
        else:
            cells = line.split("\t")
            if n == lines[0][0] and [c.strip().lower() for c in cells[:2]] == ["query", "positive"]:
                continue
            if len(cells) not in (2, 3):
                raise InputError(
                    f"{where}: expected 'query<TAB>positive[<TAB>negative]', got "
                    f"{len(cells)} columns."
                )
            query, pos = cells[0], cells[1]
            neg = cells[2] if len(cells) == 3 else None
        if (
            not isinstance(query, str)
            or not query.strip()
            or not isinstance(pos, str)
            or not pos.strip()
        ):
            raise InputError(f"{where}: 'query' and 'positive' must be non-empty text.")
        if neg is not None and (not isinstance(neg, str) or not neg.strip()):
            raise InputError(f"{where}: 'negative', when given, must be non-empty text.")
        key = "pos-" + hashlib.sha1(pos.strip().encode()).hexdigest()[:12]
        out.append(
            Example(
                f"pair-{n}", query.strip(), pos.strip(), neg.strip() if neg else None, set(), key
            )
        )
    if not out:
        raise InputError(f"the pairs file {path} holds no pair.")
    return out


def qrels_examples(
    engine: EngineLike,
    model: Any,
    chunks: list[Any],
    queries: str | os.PathLike[str],
    qrels: str | os.PathLike[str],
    max_length: int,
) -> tuple[list[Example], dict[str, Any]]:
    """(query, best stored chunk of each relevant document) pairs, and the graded judgements."""
    es = load_eval_set(Path(queries), Path(qrels))
    by_doc: dict[str, list[Any]] = {}
    for c in chunks:
        by_doc.setdefault(c.doc_id, []).append(c)
    wanted = [
        (qid, d) for qid in es.queries for d, g in es.qrels[qid].items() if g > 0 and d in by_doc
    ]
    if not wanted:
        raise InputError(
            f"none of the relevant documents in {qrels} is in the index; check that "
            "the qrels use the index's document ids."
        )
    qids = sorted({q for q, _ in wanted})
    qvec = dict(zip(qids, embed(model, [es.queries[q].text for q in qids], max_length)))
    docs = sorted({d for _, d in wanted})
    texts = [c for d in docs for c in by_doc[d]]
    cvec = dict(zip([c.chunk_id for c in texts], embed(model, [c.text for c in texts], max_length)))
    out = []
    for qid, d in wanted:
        best = max(by_doc[d], key=lambda c: float(cvec[c.chunk_id] @ qvec[qid]))
        positives = {doc for doc, g in es.qrels[qid].items() if g > 0}
        out.append(Example(qid, es.queries[qid].text, best.text, None, positives, d))
    return out, {q: es.qrels[q] for q in qids}


def mine_negative(
    engine: Searchable, ex: Example, positives: list[str], rng: random.Random, fallback: list[Any]
) -> str:
    """A hard negative for ``ex`` from the index's lexical and dense top results."""
    lexical = engine.search(ex.query, k=MINE_DEPTH, mode="lexical", snippets=False)
    dense = engine.search(ex.query, k=MINE_DEPTH, mode="semantic", snippets=False)
    seen: set[int] = set()
    picks: list[str] = []
    for pair in zip(lexical + [None] * MINE_DEPTH, dense + [None] * MINE_DEPTH):
        for hit in pair:
            if hit is None or hit.chunk_id in seen:
                continue
            seen.add(hit.chunk_id)
            if hit.doc_id in ex.positive_docs or any(
                near_duplicate(hit.text, p) for p in positives
            ):
                continue
            picks.append(hit.text)
        if len(picks) >= MINE_PICK:
            break
    if picks:
        return rng.choice(picks[:MINE_PICK])
    others = [
        c.text
        for c in fallback
        if c.doc_id not in ex.positive_docs
        and not any(near_duplicate(c.text, p) for p in positives)
    ]
    return rng.choice(others) if others else fallback[0].text


def _file_hash(path: str | os.PathLike[str] | None) -> str | None:
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def train(
    engine: EngineLike,
    out: str | os.PathLike[str],
    queries: str | os.PathLike[str] | None = None,
    qrels: str | os.PathLike[str] | None = None,
    pairs: str | os.PathLike[str] | None = None,
    **options: Any,
) -> TrainReport:
    """Fine-tune the index's model on labels and write it to ``out`` (see the module doc).

    ``options``: the fields of ``TrainOptions`` as for ``adapt`` (the method is "mnrl-hard";
    epochs default to 3).
    """
    opts = train_options(**{**options, "method": "mnrl-hard"})
    if pairs is not None and (queries is not None or qrels is not None):
        raise InputError("give either --pairs or --queries with --qrels, not both.")
    if pairs is None and (queries is None or qrels is None):
        raise InputError("give --queries and --qrels together, or --pairs.")
    check_batch_size(opts)
    examples_from_pairs = read_pairs(pairs) if pairs is not None else None
    session = Session.begin(out, opts, every_chunk(engine))
    chunks = session.chunks
    model = session.start_model()
    base_len, max_len = session.base_len, session.max_len
    graded: dict[str, dict[str, int]] = {}
    if examples_from_pairs is not None:
        examples = examples_from_pairs
    else:
        examples, graded = qrels_examples(engine, model, chunks, queries, qrels, base_len)  # type: ignore[arg-type]

    # dev split by query, seeded
    qids = sorted({e.qid for e in examples})
    rng = random.Random(opts.seed)
    rng.shuffle(qids)
    n_dev = max(1, round(len(qids) / 5)) if len(qids) >= 5 else 0
    dev_ids = set(qids[:n_dev])
    train_ex = [e for e in examples if e.qid not in dev_ids]
    dev_ex = [e for e in examples if e.qid in dev_ids]
    if len({e.key for e in train_ex}) < 2:
        raise InputError(
            "there are too few labelled pairs to train on (at least two distinct "
            "positives are needed after the dev split)."
        )

    # hard negatives: one per training example, mined with the starting index
    positives_of: dict[str, list[str]] = {}
    for e in examples:
        positives_of.setdefault(e.qid, []).append(e.positive)
    fallback = random.Random(opts.seed).sample(chunks, min(len(chunks), 200))
    mine_rng = random.Random(opts.seed)
    for e in train_ex:
        if e.negative is None:
            e.negative = mine_negative(engine, e, positives_of[e.qid], mine_rng, fallback)

    # the dev check: the dev queries against the stored chunks (+ the dev pairs' positives)
    keep_docs = {d for e in dev_ex for d in e.positive_docs}
    passages = cap_corpus(
        [(c.doc_id, c.text) for c in chunks], lambda p: p[0] in keep_docs, opts.seed
    )
    dev_queries = {e.qid: e.query for e in dev_ex}
    if graded:
        dev_qrels = {q: graded[q] for q in dev_queries}
    else:
        dev_qrels = {e.qid: {e.key: 1} for e in dev_ex}
        passages += [(e.key, e.positive) for e in dev_ex]
    check = RetrievalCheck(dev_queries, dev_qrels, passages)
    batches = session.plan([e.key for e in train_ex], default_epochs=3)

    from sentence_transformers.sentence_transformer import losses

    loss = losses.MultipleNegativesRankingLoss(model)

    def make_batch(step: int, idx: list[int]) -> list[list[str]]:
        return [
            [train_ex[i].query for i in idx],
            [train_ex[i].positive for i in idx],
            [train_ex[i].negative or "" for i in idx],
        ]

    def evaluate() -> float:
        return check.score(model, base_len).get("ndcg@10", 0.0)

    fingerprint = session.fingerprint(
        "train", queries=_file_hash(queries), qrels=_file_hash(qrels), pairs=_file_hash(pairs)
    )
    before, result, after = session.train(
        check,
        loss,
        batches,
        make_batch,
        fingerprint,
        [opts.query_length, max_len, max_len],
        evaluate=evaluate if dev_queries else None,
        eval_every=session.steps_per_epoch,
    )
    source = f"pairs from {pairs}" if pairs is not None else f"queries {queries} with qrels {qrels}"
    report = session.report(
        "train",
        len(train_ex),
        result,
        before,
        after,
        f"dev split of {len(dev_queries)} labelled queries never trained on"
        if dev_queries
        else "no dev split (fewer than 5 queries)",
        len(dev_queries),
        source=source,
    )
    extra = (
        f"Labelled data: {source}; {len(train_ex)} training pairs, one hard negative each "
        f"(lexical and dense top {MINE_DEPTH} of the index, known positives and near-duplicates "
        f"excluded); dev evaluations: {json.dumps(result.evals)}.\n"
    )
    return session.finish(report, model, extra)

"""``adapt``: teach an index's own model to retrieve its own chunks, without labels.

The model is the one that embedded the index (a sentence-transformers folder, or a plain BERT folder
loaded with the index's pooling). Training examples come from the index's stored chunks only
(``pseudoqueries.py``): inverse cloze (a sentence as query, the rest of its chunk as positive),
independent cropping, inverse cloze with a hard negative mined from the index's lexical side, or
TSDAE (denoising auto-encoder) as a baseline. The contrastive methods use in-batch negatives
(``MultipleNegativesRankingLoss``); a batch never holds two examples of one document, whose
overlapping chunks would be false negatives.

A slice of chunks is held out: their pseudo-queries score the model before and after (nDCG@10 and
Recall@10, document level, as ``eval`` counts), and a model that got worse is not written unless
``force``. Training runs under a time budget with atomic checkpoints (model, optimizer, step, RNG
state): a killed run re-run with the same arguments resumes. The steps ``train`` shares
(``session.py``) and the loop (``loop.py``) are this package's other modules.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING, Any

from ...errors import InputError
from ..pseudoqueries import crop_pair, make_pseudo_queries
from .checks import cloze_check
from .distil import check_layers, distil, distillation_card, make_student
from .options import CROPS_PER_CHUNK, METHODS, TrainReport, train_options
from .sampling import sample_index_chunks
from .session import Session, check_batch_size

if TYPE_CHECKING:
    from ...protocols import EngineLike


def _examples(method: str, train_chunks: list[Any], seed: int) -> tuple[list[Any], list[str]]:
    """Training examples and their document ids for the method."""
    if method in ("ict", "ict-hard", "tsdae"):
        pairs = make_pseudo_queries(train_chunks, 0, seed)
        return pairs, [p.doc_id for p in pairs]
    usable = [c for c in train_chunks if len(c.text.split()) >= 8]
    items = [(c, k) for c in usable for k in range(CROPS_PER_CHUNK)]
    return items, [c.doc_id for c, _ in items]


def _tsdae_noise(text: str, rng: random.Random, ratio: float = 0.6) -> str:
    """TSDAE's deletion noise: keep each word with probability 1 - ratio (at least one)."""
    words = text.split()
    kept = [w for w in words if rng.random() > ratio]
    return " ".join(kept or [rng.choice(words)])


def adapt(engine: EngineLike, out: str | os.PathLike[str], **options: Any) -> TrainReport:
    """Adapt the index's model to its chunks (no labels) and write it to ``out``.

    ``options``: the fields of ``TrainOptions`` (method, max_minutes, epochs, max_steps,
    batch_size, seed, device, lr, max_length, query_length, warmup, checkpoint_minutes, force,
    progress, layers, distil_minutes, distil_steps, max_chunks); None keeps a default. At most
    ``max_chunks`` chunks are read (a uniform sample of a larger index: ``sample_index_chunks``);
    a slice of them (a sixth, at most 300) is held out. With ``layers``, a student keeping that many of the
    trained model's transformer layers is distilled from it (``distil``) and written instead.
    """
    opts = train_options(**options)
    if opts.method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, not '{opts.method}'.")
    check_batch_size(opts)
    if opts.layers is not None and opts.layers < 1:
        raise InputError(f"--layers must be at least 1, not {opts.layers}.")
    session = Session.begin(out, opts, sample_index_chunks(engine, opts.max_chunks, opts.seed))
    sampled, chunks = session.sample, session.chunks

    # held-out chunks: never trained on, their pseudo-queries check the model
    rng = random.Random(opts.seed)
    with_pairs = [c for c in chunks if next(iter(make_pseudo_queries([c], 1)), None) is not None]
    n_hold = min(300, max(1, len(with_pairs) // 6)) if len(with_pairs) >= 2 else 0
    held_chunks = {c.chunk_id for c in rng.sample(with_pairs, n_hold)}
    held = make_pseudo_queries([c for c in chunks if c.chunk_id in held_chunks], n_hold, opts.seed)
    train_chunks = [c for c in chunks if c.chunk_id not in held_chunks]
    check = cloze_check(held, chunks, opts.seed)
    examples, docs = _examples(opts.method, train_chunks, opts.seed)
    if len(set(docs)) < 2:
        raise InputError(
            "the index has too little text to adapt on (fewer than two documents "
            "with usable sentences); ingest more documents first."
        )

    model = session.start_model()
    teacher_layers = check_layers(model, opts.layers) if opts.layers is not None else 0
    base_len, max_len = session.base_len, session.max_len
    batches = session.plan(docs, default_epochs=1)

    from sentence_transformers.sentence_transformer import losses

    negatives: dict[int, str] = {}

    def hard_negative(i: int) -> str:
        if i not in negatives:
            pq = examples[i]
            hits = engine.search(pq.query, k=5, mode="lexical", snippets=False)
            other = [h for h in hits if h.doc_id != pq.doc_id]
            negatives[i] = (
                other[0].text if other else examples[(i * 7919 + 1) % len(examples)].positive
            )
        return negatives[i]

    loss: Any
    if opts.method == "tsdae":
        from ...backends.torch import quiet_loading

        with quiet_loading():  # the decoder's load report lists its new cross-attention weights
            loss = losses.DenoisingAutoEncoderLoss(model, tie_encoder_decoder=True)
        lengths = [opts.query_length]
    else:
        loss = losses.MultipleNegativesRankingLoss(model)
        lengths = [opts.query_length, max_len]

    def make_batch(step: int, idx: list[int]) -> list[list[str]]:
        if opts.method == "crop":
            cols: list[list[str]] = [[], []]
            for i in idx:
                chunk, k = examples[i]
                r = random.Random(f"{opts.seed}-{step}-{chunk.chunk_id}-{k}")
                pair = crop_pair(chunk.text, r) or (chunk.text, chunk.text)
                cols[0].append(pair[0])
                cols[1].append(pair[1])
            return cols
        if opts.method == "tsdae":
            noisy = [
                _tsdae_noise(examples[i].query, random.Random(f"{opts.seed}-{step}-{i}"))
                for i in idx
            ]
            return [noisy, [examples[i].query for i in idx]]
        cols = [[examples[i].query for i in idx], [examples[i].positive for i in idx]]
        if opts.method == "ict-hard":
            cols.append([hard_negative(i) for i in idx])
        return cols

    fingerprint = session.fingerprint(
        "adapt",
        generation=session.manifest.generation,
        **({"sample": len(chunks)} if len(chunks) < sampled.total else {}),
    )
    before, result, after = session.train(check, loss, batches, make_batch, fingerprint, lengths)
    report = session.report(
        "adapt",
        len(examples),
        result,
        before,
        after,
        f"held-out inverse-cloze pseudo-queries from {len(held_chunks)} chunks never trained on",
        len(held),
    )
    if opts.layers is None:
        return session.finish(report, model)
    # the student learns the adapted teacher's embeddings of the training chunks and of their
    # sentences (short, query-like texts); held-out chunks stay out, so the self-check is fair
    texts = list(
        dict.fromkeys(
            [c.text for c in train_chunks]
            + [pq.query for pq in make_pseudo_queries(train_chunks, 0, opts.seed)]
        )
    )
    student, keep = make_student(model, opts.layers)
    done = distil(model, student, texts, max_len, opts)
    student.max_seq_length = base_len
    report.distillation = {
        "teacher_layers": teacher_layers,
        "student_layers": len(keep),
        "kept": keep,
        **done,
        "base": before,
        "teacher": after,
        "student": check.score(student, base_len),
    }
    report.after = report.distillation["student"]
    report.options["wall_seconds"] = session.wall_seconds()
    return session.finish(report, student, distillation_card(report.distillation))

"""Re-embed an index with a new model, atomically: the old vectors serve until one switch.

1. Bulk phase (no write lock: ingests and searches go on): every stored chunk's text is encoded
   with the new model, in batches, into the side table ``embeddings_next``; the row of
   ``reembed_state`` names the target model (its manifest facts). A re-run with the same target
   continues where the last one stopped; a different target starts over.
2. Switch phase (under the write lock): chunks written meanwhile (stragglers) are encoded, then ONE
   transaction (``Store.switch_to_next_vectors``) replaces ``embeddings``, updates the manifest
   (encoder, revision, pooling, dimension, precision, max_length, ``generation`` + 1, the tuned
   fusion cleared) and drops the change log. The vector cache's generation rule
   (``vector_cache.py``) then never uses a cache or checkpoint of the old vectors again.

SIGKILL anywhere leaves the old index (phase 1, or phase 2 before its commit) or the new one;
readers in other processes see the new generation at their next query and follow it.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from ..encoder import Encoder, normalize_rows
from ..errors import InputError, ManifestMismatchError
from .indexer import Embedder, local_embedder
from .locking import WriteLock

if TYPE_CHECKING:
    from .context import IndexContext

BATCH = 256  # chunks per encoded batch and per side-table transaction
SWITCH_WAIT = 600.0  # seconds the switch waits for a running ingest: hours of work are at stake


@dataclass
class ReembedResult:
    encoder: str
    generation: int
    chunks: int  # chunks in the index after the switch
    encoded: int  # chunks encoded by this run (bulk and stragglers)
    resumed: int  # vectors a previous, interrupted run had already written
    stragglers: int  # chunks written by others during the bulk phase
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ReembedLock(WriteLock):
    """One re-embed at a time per index (separate from the write lock, held for the whole run)."""

    def __init__(self, folder: Path, wait: float = 0.0) -> None:
        super().__init__(folder, wait)
        self.path = folder / "reembed.lock"


def open_target(
    ctx: IndexContext, model: str | os.PathLike[str] | Encoder, precision: str | None
) -> Encoder:
    """The new model's encoder: an Encoder object as given, else built the way the index builds
    its own (``IndexContext.open_model``: ``backends.open_encoder``)."""
    if not isinstance(model, str | os.PathLike):
        return model
    name = str(model)
    if Path(name).is_dir():
        name = str(Path(name).resolve())  # readers in other folders must find it too
    return ctx.open_model(name, precision)


def _max_length(enc: Any) -> int | None:
    value = getattr(enc, "max_length", None) or getattr(enc, "max_seq_length", None)
    return int(value) if value else None


def target_facts(enc: Encoder) -> dict[str, Any]:
    """The manifest facts of the target model, its dimension checked on a real probe."""
    probe = np.asarray(enc.encode_documents(["prueba de dimensión"]))
    if probe.ndim != 2 or probe.shape[1] != int(enc.dimension):
        raise ManifestMismatchError(
            f"the encoder '{enc.name}' says dimension {enc.dimension} but produced vectors of "
            f"shape {probe.shape}; nothing was changed."
        )
    describe = getattr(enc, "describe", None)
    facts = dict(describe()) if callable(describe) else {}
    return {
        "encoder": enc.name,
        "revision": facts.get("revision", getattr(enc, "revision", None)),
        "pooling": facts.get("pooling", getattr(enc, "pooling", None)),
        "dimension": int(enc.dimension),
        "precision": facts.get("precision", getattr(enc, "precision", "fp32")),
        "max_length": _max_length(enc),
    }


def pending(ctx: IndexContext) -> dict[str, Any] | None:
    """The target of an unfinished re-embed of this index, with how far it got (None: none)."""
    store = ctx.store
    with store.snapshot():
        target = store.reembed_target()
        if target is None:
            return None
        return {**target, "vectors_done": store.next_vector_count(), "chunks": store.chunk_count()}


def _inputs(enc: Any) -> tuple[Callable[[list[str]], Any], bool]:
    """What the embedder gets per batch, and whether it is token ids: the target's token ids
    (without special tokens, the indexer's embedder contract) when it tokenizes, else texts."""
    tok, limit = getattr(enc, "tokenizer", None), _max_length(enc)
    if tok is None or not limit or not hasattr(enc, "encode_token_ids"):
        return (lambda texts: texts), False

    def token_ids(texts: list[str]) -> Any:
        return tok(texts, add_special_tokens=False, truncation=True, max_length=limit - 2)[
            "input_ids"
        ]

    return token_ids, True


def _encode_missing(
    ctx: IndexContext,
    enc: Any,
    dim: int,
    embedder: Embedder | None,
    bar: Any,
    batch_size: int,
) -> int:
    """Encode every chunk without a side vector into ``embeddings_next``; how many were done."""
    store = ctx.store
    to_input, token_ids = _inputs(enc)
    ids_q: deque[list[int]] = deque()

    def batches() -> Iterator[Any]:
        last = -1  # keyset over chunk ids: immune to the rows written meanwhile (pipelining)
        while True:
            with store.snapshot():
                rows = store.chunks_without_next_vector(last, batch_size)
            if not rows:
                return
            last = rows[-1][0]
            ids_q.append([r[0] for r in rows])
            yield to_input([r[1] for r in rows])

    done = 0
    embed = embedder or local_embedder(enc, token_ids)
    for vectors in embed(batches()):
        if not ids_q:
            raise InputError("the embedder yielded more batches than it was given.")
        ids = ids_q.popleft()
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), dim):
            raise ManifestMismatchError(
                f"the new encoder returned vectors of shape {vectors.shape} for {len(ids)} chunks "
                f"of dimension {dim}; the index still uses its old model."
            )
        with store.write():
            store.put_next_vectors(ids, normalize_rows(vectors))
        done += len(ids)
        bar.update(len(ids))
    return done


def reembed(
    ctx: IndexContext,
    model: str | os.PathLike[str] | Encoder,
    precision: str | None = None,
    progress: bool = False,
    embedder: Embedder | None = None,
    batch_size: int = BATCH,
) -> ReembedResult:
    """Re-encode every stored chunk with ``model`` (a folder/hub id, or an Encoder object) and
    switch the index to it in one transaction; see the module docstring."""
    started = time.perf_counter()
    store = ctx.store
    if ctx.refresh() is None:
        raise InputError("the index is empty; there is nothing to re-embed.")
    enc = open_target(ctx, model, precision)
    facts = target_facts(enc)
    dim = facts["dimension"]
    with ReembedLock(ctx.folder, ctx.wait):
        store.ensure_reembed_tables()
        with store.write():
            if store.reembed_target() != facts:  # a new target (or none yet): start over
                store.start_reembed(facts)
            store.drop_orphan_next_vectors()  # chunks deleted since an interrupted run
        resumed = store.next_vector_count()
        bar = tqdm(
            total=store.count_without_next_vector(),
            desc="re-embedding",
            unit="chunk",
            disable=not progress,
            leave=False,
        )
        try:
            encoded = _encode_missing(ctx, enc, dim, embedder, bar, batch_size)
            with WriteLock(ctx.folder, max(ctx.wait, SWITCH_WAIT)):  # no ingest from here
                stragglers = _encode_missing(ctx, enc, dim, embedder, bar, batch_size)
                generation = _switch(ctx, enc, facts)
        finally:
            bar.close()
    return ReembedResult(
        facts["encoder"],
        generation,
        store.chunk_count(),
        encoded + stragglers,
        resumed,
        stragglers,
        time.perf_counter() - started,
    )


def _switch(ctx: IndexContext, enc: Any, facts: dict[str, Any]) -> int:
    """The one transaction that makes the new vectors and manifest current (under the write
    lock), then this context follows at once and writes a checkpoint of the new generation."""
    store = ctx.store
    with store.write():
        if store.count_without_next_vector():  # cannot happen under the write lock
            raise ManifestMismatchError("chunks without a new vector remain; nothing was changed.")
        old = ctx.reload_manifest()
        assert old is not None
        generation = old.generation + 1
        describe = getattr(enc, "describe", None)
        note = (describe() if callable(describe) else {}).get("precision_note")
        update: dict[str, Any] = {
            **facts,
            "precision_note": note or getattr(enc, "precision_note", None),
            "normalized": True,
            "generation": generation,
            "fusion": None,  # tuned for the old model: re-tuned after the switch
        }
        tokenizes = getattr(enc, "tokenizer", None) is not None
        update["tokenizer"] = "model" if tokenizes else "words"
        limit = facts.get("max_length")
        if tokenizes and limit and old.chunk_tokens > limit - 2:
            # future chunks must fit the new window; stored chunks keep their spans
            update["chunk_tokens"] = limit - 2
            update["overlap"] = min(old.overlap, (limit - 2) // 4)
        store.switch_to_next_vectors(update)
    ctx.refresh(encoder=enc)
    vi = ctx.cache.checkpoint()  # the new generation's cache, rebuilt from SQLite, saved
    ctx.cache.drop_checkpoints_below(vi.seq)  # the old generation's files: never used again
    return generation

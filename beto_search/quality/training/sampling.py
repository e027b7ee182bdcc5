"""The index's chunks a run trains on: all of them (``train``), or a uniform sample streamed
from ``iter_chunks`` (``adapt``: memory bounded by its cap, not by the index)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...errors import InputError

if TYPE_CHECKING:
    from ...index.manifest import Manifest
    from ...index.store import StoredChunk
    from ...protocols import EngineLike


def index_chunks(engine: EngineLike) -> tuple[Manifest, list[StoredChunk]]:
    """The index's manifest and every stored chunk (``engine.iter_chunks``); an empty index is an
    error."""
    manifest = engine.manifest
    chunks = [c for batch in engine.iter_chunks() for c in batch] if manifest else []
    if manifest is None or not chunks:
        raise InputError(f"the index at {engine.folder} holds no chunks; ingest documents first.")
    return manifest, chunks


@dataclass
class ChunkSample:
    """What ``adapt`` reads of an index: a uniform sample of its chunks (all of them when they
    are at most the cap), how many the index holds and its highest chunk id."""

    manifest: Manifest
    chunks: list[StoredChunk]
    total: int
    last_id: int


def sample_index_chunks(engine: EngineLike, cap: int, seed: int) -> ChunkSample:
    """Stream ``engine.iter_chunks`` and keep a uniform sample of at most ``cap`` chunks
    (reservoir sampling), sorted by chunk id: memory is bounded by ``cap``, not by the index.
    The same index and seed give the same sample (a resumed run trains on the same examples).
    Metadata is dropped from the kept chunks: training reads only their text."""
    from dataclasses import replace

    manifest = engine.manifest
    if cap < 1:
        raise InputError(f"max_chunks must be at least 1, not {cap}.")
    rng = random.Random(f"adapt-sample-{seed}")
    sample: list[StoredChunk] = []
    total, last_id = 0, -1
    for batch in engine.iter_chunks() if manifest is not None else []:
        for c in batch:
            total += 1
            last_id = max(last_id, c.chunk_id)
            if len(sample) < cap:
                sample.append(replace(c, metadata={}))
            else:
                j = rng.randrange(total)
                if j < cap:
                    sample[j] = replace(c, metadata={})
    if manifest is None or not sample:
        raise InputError(f"the index at {engine.folder} holds no chunks; ingest documents first.")
    sample.sort(key=lambda c: c.chunk_id)
    return ChunkSample(manifest, sample, total, last_id)

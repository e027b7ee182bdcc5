"""The FAISS cache of the stored vectors and its consistency with SQLite, in one place.

The rule: SQLite is the truth. Every change to the set of chunks logs a row in ``changes`` with
an increasing ``seq``; ``compact`` drops the log up to a *history floor*; a re-embedding bumps the
manifest's ``generation``. A cache (in memory, or a checkpoint file ``vectors-<seq>[-g<gen>]``)
reflects exactly one (seq, generation). A search uses a cache only at the SAME seq and generation as
its SQLite snapshot, reached in this order of preference:

1. the object this process already holds, when it matches;
2. that object caught up from the change log, when ``floor <= cache.seq < seq`` and the generation
   is the same (below the floor the changes in between are gone: finding 1 of issue 9);
3. the newest checkpoint file of the generation with ``floor <= file seq <= seq``, then caught up;
4. a full rebuild from the stored embeddings (never the encoder).

If what is available is NEWER than the snapshot (another thread caught up further, or a writer
saved a newer checkpoint), the reader takes a fresh snapshot instead of rebuilding; the writer
also keeps the previous checkpoint, so a reader one step behind still finds one (finding 4).

Threads: the published object is never changed in place. Catching up works on a copy and then
swaps the reference, so a reader keeps searching the object it started with; one lock serialises
loads, catch-ups and rebuilds. A cache that holds a vector count other than SQLite's chunk count
after loading is rebuilt (a checkpoint that lies is not trusted).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..vector_index import VectorIndex, checkpoint_files
from .manifest import Manifest
from .store import CacheState, Store

log = logging.getLogger(__name__)

MAX_FRESH_SNAPSHOTS = 5  # then rebuild rather than chase a writer that keeps moving


class _Newer(Exception):
    """The cache at hand is newer than the caller's snapshot: take a fresh snapshot."""


class VectorCache:
    """The FAISS index of one engine, kept at its SQLite snapshot's sequence and generation."""

    def __init__(self, folder: Path, store: Store, manifest: Callable[[bool], Manifest | None]):
        self.folder = folder
        self.store = store
        self._manifest = manifest  # manifest(reload) -> the engine's manifest, re-read if asked
        self._vi: VectorIndex | None = None
        self._lock = threading.RLock()

    # ----- reading -------------------------------------------------------------------------
    @contextmanager
    def pinned(self) -> Iterator[VectorIndex]:
        """A snapshot of this thread and the cache at exactly its seq and generation."""
        store = self.store
        if store.in_snapshot():  # the caller's transaction decides the state
            yield self._at(store.cache_state(), newer_ok=True)
            return
        for attempt in range(MAX_FRESH_SNAPSHOTS + 1):
            with store.snapshot():
                try:
                    vi = self._at(store.cache_state(), newer_ok=attempt == MAX_FRESH_SNAPSHOTS)
                except _Newer:
                    continue
                yield vi
                return
        raise AssertionError("unreachable")  # the last attempt accepts any usable state

    def current(self) -> VectorIndex:
        """The cache caught up with the current state (its own snapshot if none is open)."""
        with self.pinned() as vi:
            return vi

    def invalidate(self) -> None:
        """Forget the in-memory cache (the next use loads or rebuilds it)."""
        with self._lock:
            self._vi = None

    def _at(self, state: CacheState, newer_ok: bool) -> VectorIndex:
        vi = self._vi
        if vi is not None and vi.seq == state.seq and vi.generation == state.generation:
            return vi
        with self._lock:
            vi = self._vi
            if vi is not None and vi.generation == state.generation:
                if vi.seq == state.seq:
                    return vi
                if vi.seq > state.seq:
                    if newer_ok:
                        return self._rebuild(
                            state, "no cache at the snapshot's state", publish=False
                        )
                    raise _Newer
                if vi.seq >= state.floor:
                    new = self._caught_up_copy(vi, state)
                    self._vi = new
                    return new
            # nothing usable in memory: a checkpoint, else a rebuild
            new = self._load(state, newer_ok)
            self._vi = new
            return new

    def _load(self, state: CacheState, newer_ok: bool) -> VectorIndex:
        m = self._manifest(False)
        if m is None or m.generation != state.generation:
            m = self._manifest(True)  # a re-embedding moved the index on: read it again
        if m is None:
            raise InputError("the index holds no vectors yet.")
        newer = own_generation = False
        for file_seq, gen, path in checkpoint_files(self.folder):
            if gen != state.generation:
                continue
            own_generation = True
            if file_seq > state.seq:
                newer = True
                continue
            if file_seq < state.floor:
                break
            try:
                vi = VectorIndex.load(path, file_seq, m.dimension, m.spec, gen)
            except (RuntimeError, ValueError, OSError) as exc:
                why = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
                log.warning("the vector index file %s is unreadable (%s)", path.name, why)
                continue
            if vi.kind == "hnsw":  # HNSW cannot remove: ids SQLite lacks are tombstones
                vi.tombstones = set(vi.ids().tolist()) - set(self.store.chunk_ids().tolist())
            self._catch_up(vi, state)
            live = self.store.chunk_count()
            if vi.live != live:
                return self._rebuild(
                    state, f"the vector index holds {vi.ntotal} vectors for {live} chunks"
                )
            return vi
        if newer and not newer_ok:
            raise _Newer
        if not own_generation and state.generation > 0:
            # the first load after a re-embedding switched generations: expected, not a fault
            log.info("building the vector index of generation %d from SQLite", state.generation)
            return self._rebuild(state, None, publish=False)
        return self._rebuild(
            state, "no usable vector index file" if state.seq else None, publish=False
        )

    def _caught_up_copy(self, vi: VectorIndex, state: CacheState) -> VectorIndex:
        """A copy of ``vi`` caught up to ``state``. The changes are read here (in the caller's
        snapshot); the copy is made and changed on one dedicated thread, so that its many
        list-sized allocations always come from the same malloc arena: made by whichever
        request thread happened to catch up, every arena ended up holding its own freed copy of
        the index (a server's RSS grew by ~700 MB at 100k chunks under 8 clients)."""
        removed, ids, vecs = self._changes(vi, state)

        def copy() -> VectorIndex:
            new = vi.clone()
            new.remove(removed)
            new.add(ids, vecs)
            new.seq = state.seq
            return new

        return _copier().submit(copy).result()

    def _changes(
        self, vi: VectorIndex, state: CacheState
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The chunk ids removed since ``vi.seq``, and the ids and vectors added."""
        changes = self.store.changes_since(vi.seq)
        added = {c for _, op, c in changes if op == "add"}
        removed = {c for _, op, c in changes if op == "del"}
        ids, vecs = self.store.embeddings(sorted(added - removed), vi.dim)
        return np.fromiter(removed - added, dtype=np.int64), ids, vecs

    def _catch_up(self, vi: VectorIndex, state: CacheState) -> None:
        """Apply the changes logged since ``vi.seq`` (inside the caller's snapshot)."""
        if vi.seq == state.seq:
            return
        removed, ids, vecs = self._changes(vi, state)
        vi.remove(removed)
        vi.add(ids, vecs)
        vi.seq = state.seq

    # ----- rebuilding and saving -----------------------------------------------------------
    def _rebuild(self, state: CacheState, reason: str | None, publish: bool = False) -> VectorIndex:
        """Build the FAISS index from the embeddings in SQLite (no encoder involved)."""
        if reason:
            log.warning("rebuilding the vector index from SQLite: %s", reason)
        m = self._manifest(False)
        if m is None or m.generation != state.generation:
            m = self._manifest(True)
        if m is None:
            raise InputError("the index holds no vectors yet.")
        spec, dim = m.spec, m.dimension
        with self.store.snapshot():
            n = self.store.counts()["embeddings"]
            train = None
            if spec.concrete(n) != "flat":
                train = self.store.sample_embeddings(dim, spec.train_size(n))
            vi = VectorIndex.build(spec, dim, n, train)
            for ids, vecs in self.store.iter_embeddings(dim):
                vi.add(ids, vecs)
            vi.seq, vi.generation = state.seq, state.generation
        if publish:
            self._vi = vi
        return vi

    def rebuild(self, reason: str | None = None) -> VectorIndex:
        """A fresh cache from SQLite at the current state, published to readers."""
        with self._lock, self.store.snapshot():
            return self._rebuild(self.store.cache_state(), reason, publish=True)

    def checkpoint(self) -> VectorIndex:
        """After a write (under the write lock): catch up, rebuild if the index type should change
        or tombstones/list lengths call for it, and save a checkpoint if there is none for it."""
        with self._lock:
            vi = self.current()
            if vi.spec.concrete(vi.live) != vi.kind or vi.needs_rebuild():
                vi = self.rebuild()
            files = [(s, g) for s, g, _ in checkpoint_files(self.folder)]
            if (vi.seq, vi.generation) not in files[:1]:
                vi.save(self.folder)
            return vi

    def save(self) -> VectorIndex:
        """Write a checkpoint of the current cache (under the write lock)."""
        vi = self.current()
        vi.save(self.folder)
        return vi

    def drop_checkpoints_below(self, floor: int) -> None:
        """Checkpoints below the history floor can never be caught up: remove them (compact)."""
        for seq, _, path in checkpoint_files(self.folder):
            if seq < floor:
                path.unlink(missing_ok=True)


_COPIER: ThreadPoolExecutor | None = None
_COPIER_LOCK = threading.Lock()


def _copier() -> ThreadPoolExecutor:
    """The one thread that copies vector indexes (see ``VectorCache._caught_up_copy``)."""
    global _COPIER
    with _COPIER_LOCK:
        if _COPIER is None:
            _COPIER = ThreadPoolExecutor(1, thread_name_prefix="beto-search-cache")
        return _COPIER

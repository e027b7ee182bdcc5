"""``ShardedStore``: the read-only part of ``Store`` that tuning and evaluation use, over every
shard (chunk ids global)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Protocol

from .callers import LocalShard
from .layout import global_id, shard_of


class _Shards(Protocol):
    @property
    def shards(self) -> Sequence[LocalShard]: ...
    def counts(self) -> dict[str, int]: ...


class ShardedStore:
    """The shards' stores as one (a ``StoreView``)."""

    def __init__(self, engine: _Shards) -> None:
        self.engine = engine

    @property
    def _shards(self) -> Sequence[LocalShard]:
        return self.engine.shards

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction on every shard (each shard's state is one snapshot)."""
        with ExitStack() as stack:
            for s in self._shards:
                stack.enter_context(s.store.snapshot())
            yield

    def hashes(self, ids: Iterable[str]) -> dict[str, str]:
        count = len(self._shards)
        routed: dict[int, list[str]] = {}
        for doc_id in ids:
            routed.setdefault(shard_of(doc_id, count), []).append(doc_id)
        out: dict[str, str] = {}
        for i, part in routed.items():
            out.update(self._shards[i].store.hashes(part))
        return out

    def doc_chunk_ids(self, doc_id: str) -> list[int]:
        count = len(self._shards)
        i = shard_of(doc_id, count)
        return [global_id(i, c, count) for c in self._shards[i].store.doc_chunk_ids(doc_id)]

    def ids_by_title(self, titles: list[str]) -> list[tuple[str, str]]:
        rows = [r for s in self._shards for r in s.store.ids_by_title(titles)]
        return sorted(rows, key=lambda r: r[1])

    def chunk_count(self) -> int:
        return sum(s.store.chunk_count() for s in self._shards)

    def counts(self) -> dict[str, int]:
        return self.engine.counts()

"""Sharded indexes: N ordinary index folders behind one engine with ``SearchEngine``'s methods.

Layout::

    PATH/shards.json     {"format": 1, "shards": N, "routing": "blake2b-64 mod N", "folders": [...]}
    PATH/shard-000/      an ordinary index folder (index.db, FAISS cache, locks)
    ...

A document lives in shard ``shard_of(id, N)``, so a re-ingest, an upsert and a delete of one id
all reach the same shard. Modules: ``layout`` (shards.json, routing), ``bm25`` (global term
statistics), ``callers`` (the shard-caller seam: requests, answers, ``answer``, the local
caller), ``merge`` (searches merged before fusion over any caller), ``writers`` (N writers),
``store_view`` (``ShardedStore``), ``engine`` (``ShardedEngine``). Nothing here imports
``engine.py``; ``server.ray_serve`` reaches remote shards through the same seam.
"""

from .engine import ShardedEngine
from .layout import MANIFEST_NAME, ROUTING, read_layout, shard_name, shard_of, write_layout
from .store_view import ShardedStore

__all__ = [
    "MANIFEST_NAME",
    "ROUTING",
    "ShardedEngine",
    "ShardedStore",
    "read_layout",
    "shard_name",
    "shard_of",
    "write_layout",
]

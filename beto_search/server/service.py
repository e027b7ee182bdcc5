"""The engine, the query batcher and the write lock behind the routes (``app.state.service``)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request

from ..encoder import Encoder
from ..errors import LockTimeoutError
from ..protocols import Served
from .batcher import QueryBatcher
from .errors import ApiError
from .settings import ServerSettings


class Sources:
    """Turns stored absolute sources into paths relative to the folder that was ingested.

    A file's document id is its path relative to the ingested folder (plus ``#line`` for records
    without an id), so ``source`` minus that id is the folder; other sources under a folder learnt
    that way are made relative to it, and anything else is shown by its file name only.
    """

    def __init__(self) -> None:
        self.roots: set[str] = set()

    def relative(self, doc_id: str, source: str) -> str:
        if not source or not os.path.isabs(source):
            return source
        rel = doc_id.split("#", 1)[0]
        if rel and not rel.startswith("/") and source.endswith("/" + rel):
            root = source[: -len(rel)]
            if root not in self.roots:  # a new set, swapped whole: readers in other threads
                self.roots = self.roots | {root}  # iterate over the one they took
            return rel
        for root in sorted(self.roots, key=len, reverse=True):
            if source.startswith(root):
                return source[len(root) :]
        return os.path.basename(source)


class Service:
    """The engine, the query batcher and the in-process write lock behind the routes.

    One ``SearchEngine`` serves every request: its reads are safe from many threads at once (a
    SQLite connection per thread, the FAISS cache swapped whole), so the routes read it without a
    lock. Writes go through ``write`` (one at a time here, the flock across processes).
    """

    def __init__(
        self, settings: ServerSettings, encoder: Encoder | None = None, engine: Served | None = None
    ) -> None:
        from ..engine import SearchEngine

        self.settings = settings
        self.folder = Path(settings.index)
        # ``engine``: an engine-like object with SearchEngine's serving methods (the Ray Serve
        # ingress passes one whose shard calls go to deployment handles: ray_serve.py)
        self.engine: Served = engine or SearchEngine.open(
            self.folder,
            encoder=encoder,
            model=settings.model,
            precision=settings.precision,
            device=settings.device,
            batch_size=settings.batch_size,
            create=False,
            wait=settings.write_wait,  # a write waits this long for another process's lock
        )
        self.write_lock = threading.Lock()  # one writer in this process; WriteLock across processes
        self.sources = Sources()
        self.batcher = QueryBatcher(
            self._encode, settings.batch_window_ms / 1000, settings.max_batch
        )
        # loaded (its graph built) now, so a bad model stops the start
        self.reranker = (
            self.engine.reranker(settings.rerank, settings.rerank_precision)
            if settings.rerank
            else None
        )

    def _encode(self, texts: list[str]) -> np.ndarray:
        # the light query encoder (no torch when the index allows it; the given encoder if any)
        return np.asarray(self.engine.query_encoder.encode_queries(texts), dtype=np.float32)

    def warm_up(self) -> None:
        """Load the encoders now, not on the first query or write."""
        if self.engine.manifest is None:
            return
        if self.settings.api_key and not self.settings.read_only:
            # writes are possible: the full encoder (torch where the index needs it) takes seconds
            # to load, which a first write (or one cut short by a graceful shutdown) should not pay
            self.engine.encoder  # noqa: B018
        # the first calls of a model (int8 above all) can be many times slower than the rest
        first = None
        for _ in range(8):
            started = time.perf_counter()
            self._encode(["calentamiento del modelo"])
            took = time.perf_counter() - started
            first = first or took
            if took < first / 4 or took < 0.01:
                break

    def write(self, op: Callable[[Any], Any]) -> Any:
        """Run a write on the engine: one at a time here, bounded wait, then 409."""
        if not self.write_lock.acquire(timeout=self.settings.write_wait):
            raise ApiError(409, "Another write is in progress; try again shortly.")
        try:
            return op(self.engine)
        except LockTimeoutError:
            # the library's sentence names the lock file and a CLI flag: neither helps an API client
            raise ApiError(
                409, "The index is being written by another process; try again in a moment."
            ) from None
        finally:
            self.write_lock.release()

    def hit(self, h: Any) -> dict[str, Any]:
        out: dict[str, Any] = h.to_dict()
        out["source"] = self.sources.relative(h.doc_id, h.source)
        return out

    def close(self) -> None:
        self.batcher.close()
        with self.write_lock:  # a write under way finishes first
            self.engine.close()


async def service(request: Request) -> Service:
    """The dependency every route takes its ``Service`` from (async: no thread hop)."""
    svc: Service = request.app.state.service
    return svc

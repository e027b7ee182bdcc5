"""Micro-batching of query encodings: concurrent queries share one encoder call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class QueryBatcher:
    """Collects the queries that arrive within ``window`` seconds and encodes them together.

    The encoder is the bound under load (one forward pass per query otherwise); a batch of n short
    queries costs little more than one. While a batch is being encoded the next one gathers, so a
    lone client waits at most ``window`` extra.
    """

    def __init__(
        self, encode: Callable[[list[str]], np.ndarray], window: float = 0.002, max_batch: int = 32
    ) -> None:
        self._encode = encode
        self.window = window
        self.max_batch = max_batch
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="beto-search-encoder")
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[np.ndarray]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.calls = 0  # encoder calls made
        self.queries = 0  # queries encoded

    async def encode(self, text: str) -> np.ndarray:
        """The normalised embedding of one query, shape (dimension,)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._run())
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        assert self._queue is not None
        self._queue.put_nowait((text, fut))
        return await fut

    async def _run(self) -> None:
        assert self._queue is not None
        queue, loop = self._queue, asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.window
            while len(batch) < self.max_batch:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), left))
                except asyncio.TimeoutError:
                    break
            texts = list(dict.fromkeys(t for t, _ in batch))  # the same query encoded once
            try:
                vectors = await loop.run_in_executor(self._executor, self._encode, texts)
            except Exception as exc:  # handed to every waiting request
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.calls += 1
            self.queries += len(batch)
            row = {t: i for i, t in enumerate(texts)}
            for text, fut in batch:
                if not fut.done():
                    fut.set_result(np.asarray(vectors[row[text]], dtype=np.float32))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

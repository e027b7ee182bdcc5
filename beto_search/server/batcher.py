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
            vectors = await self._encode_isolated(texts)
            self.queries += len(batch)
            for text, fut in batch:
                if fut.done():
                    continue
                result = vectors[text]
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    async def _encode_isolated(self, texts: list[str]) -> dict[str, np.ndarray | BaseException]:
        """Each text's vector, or the error that encoding it alone raised.

        One batch holds other people's queries: when the batch fails, each text is encoded on
        its own, so a bad one fails alone and the rest are answered.
        """
        loop = asyncio.get_running_loop()
        try:
            vectors = await loop.run_in_executor(self._executor, self._encode, texts)
            self.calls += 1
            return {t: np.asarray(vectors[i], dtype=np.float32) for i, t in enumerate(texts)}
        except Exception as exc:
            if len(texts) == 1:
                return {texts[0]: exc}
        out: dict[str, np.ndarray | BaseException] = {}
        for text in texts:
            out.update(await self._encode_isolated([text]))
        return out

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

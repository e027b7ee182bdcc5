"""What the HTTP layer costs per request, in process (no sockets, no model).

Ingests ``corpora/es`` (``--copies`` times) with the tests' hashed bag-of-words encoder, then
times API calls through ``httpx.ASGITransport``: lexical searches by GET and POST (half of them
filtered), hybrid searches, and a document read. Each figure is the best of ``--rounds`` rounds
of ``--requests`` calls, in ms per request. Run it in two checkouts, alternately, to compare
versions of the server on one machine:

    python benchmarks/api_overhead.py --copies 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from encoders import HashEncoder  # noqa: E402

from beto_search import SearchEngine  # noqa: E402
from beto_search.server import ServerSettings, create_app  # noqa: E402

QUERIES = ["economía precios", "contrato de arrendamiento", "cien años de soledad", "el gato"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=20, help="copies of corpora/es to ingest")
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="beto-api-bench-"))
    try:
        src = tmp / "src"
        for i in range(args.copies):
            shutil.copytree(ROOT / "corpora" / "es", src / f"c{i}")
        encoder = HashEncoder()
        started = time.perf_counter()
        with SearchEngine.open(tmp / "idx", encoder=encoder) as engine:
            engine.ingest([src])
        figures: dict[str, Any] = {"ingest_s": round(time.perf_counter() - started, 2)}
        app = create_app(ServerSettings(index=str(tmp / "idx")), encoder=encoder)
        figures.update(asyncio.run(_requests(app, args.requests, args.rounds)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(figures))


async def _requests(app: Any, n: int, rounds: int) -> dict[str, float]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:

        def search(i: int, mode: str, post: bool) -> Awaitable[httpx.Response]:
            where = {"categoria": "economía"} if i % 2 else {}
            if post:
                return c.post(
                    "/api/search", json={"q": QUERIES[i % 4], "mode": mode, "where": where}
                )
            params = {"q": QUERIES[i % 4], "mode": mode}
            if where:
                params["where"] = "categoria:economía"
            return c.get("/api/search", params=params)

        calls: dict[str, Callable[[int], Awaitable[httpx.Response]]] = {
            "get_lexical_ms": lambda i: search(i, "lexical", False),
            "post_lexical_ms": lambda i: search(i, "lexical", True),
            "get_hybrid_ms": lambda i: search(i, "hybrid", False),
            "document_ms": lambda i: c.get("/api/documents/c0/literatura/cien-anos-de-soledad.txt"),
        }
        out = {}
        for name, call in calls.items():
            assert (await call(0)).status_code == 200, name
            best = float("inf")
            for _ in range(rounds):
                started = time.perf_counter()
                for i in range(n):
                    await call(i)
                best = min(best, (time.perf_counter() - started) / n * 1000)
            out[name] = round(best, 2)
    return out


if __name__ == "__main__":
    main()

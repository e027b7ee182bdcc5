"""Ingest throughput: local encoding vs encoding on Ray with 1 and 2 workers (or one GPU actor).

The same documents go into a fresh index each time, in one process and back to back:

* local: ``SearchEngine.add`` with the engine's own encoder (all the machine's cores);
* ray-N: ``SearchEngine.add(..., embedder=RayEmbedder(...))`` with N actors of ``--cpus-per-worker``
  CPUs (or ``--gpus-per-worker`` GPUs) on a Ray instance started here (or ``--address``).

Each Ray run includes what a user pays: the actor pool starting and loading the model once per run,
and the token ids and vectors crossing the object store. It prints chunks/s and tokens/s, the ratio
to local, the time to the first written batch, and the lowest cosine between the Ray and the local
vectors (the same model and precision must give the same vectors).

The model: ``--model PATH`` or, by default, a full-size BETO (12 layers, 768 hidden, BETO's
vocabulary shipped in beto_search/data/beto/uncased) with random weights (``common.full_beto``): the real
model's cost per token. ``--precision`` is the index's (a concrete one: the actors build exactly
that encoder with ``backends.open_encoder``; the default fp32 is the local reference's too).

    python benchmarks/ray_ingest.py --docs 24                       # this machine, CPU
    python benchmarks/ray_ingest.py --docs 2000 --device cuda --workers 1 --gpus-per-worker 1

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from beto_search import SearchEngine
from beto_search.distributed import RayEmbedder, require_ray

from common import emit, full_beto, paragraphs


def gpu_description() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def documents(n: int, paras_per_doc: int) -> list[dict[str, Any]]:
    """N documents of a few corpus paragraphs each (cycling through corpora/es)."""
    paras = paragraphs()
    return [
        {
            "id": f"d{i}",
            "title": f"Documento {i}",
            "text": "\n\n".join(
                paras[(i * paras_per_doc + j) % len(paras)] for j in range(paras_per_doc)
            ),
        }
        for i in range(n)
    ]


def vectors(index: Path) -> np.ndarray:
    """The stored vectors in (document, chunk) order, read through the documented SQLite layout."""
    con = sqlite3.connect(index / "index.db")
    try:
        rows = con.execute(
            "SELECT e.vector FROM chunks c JOIN embeddings e ON e.chunk_id = c.rowid "
            "ORDER BY c.doc_id, c.ordinal"
        ).fetchall()
    finally:
        con.close()
    return np.stack([np.frombuffer(r[0], dtype=np.float32) for r in rows])


class FirstBatch:
    """Wraps an embedder to note when its first batch of vectors arrives."""

    def __init__(self, embedder: RayEmbedder) -> None:
        self.embedder, self.at = embedder, None

    def __call__(self, batches):
        for out in self.embedder(batches):
            if self.at is None:
                self.at = time.perf_counter()
            yield out


def run(
    args: argparse.Namespace, docs: list[dict], folder: Path, label: str, workers: int | None
) -> dict:
    index = folder / label
    opts = {
        "model": str(args.model),
        "precision": args.precision,
        "device": args.device,
        "batch_size": args.batch_size,
    }
    with SearchEngine.open(index, **opts) as engine:
        engine.encoder  # noqa: B018  (load the driver's model outside the timing)
        started = time.perf_counter()
        if workers is None:
            summary = engine.add(docs)
            first, actors = None, 0
        else:
            embedder = RayEmbedder.for_engine(
                engine,
                address=args.address,
                workers=workers,
                cpus_per_worker=args.cpus_per_worker,
                gpus_per_worker=args.gpus_per_worker,
            )
            wrapped = FirstBatch(embedder)
            summary = engine.add(docs, embedder=wrapped)
            first = None if wrapped.at is None else wrapped.at - started
            actors = len(embedder.pids)
        seconds = time.perf_counter() - started
        tokenizer = engine.encoder.tokenizer
    with SearchEngine.open(index, create=False) as engine:
        texts = [c.text for batch in engine.iter_chunks() for c in batch]
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"])
    return {
        "label": label,
        "workers": workers,
        "chunks": summary.chunks,
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "chunks_per_s": round(summary.chunks / seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "first_batch_s": None if first is None else round(first, 2),
        "actors_that_encoded": actors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=24)
    ap.add_argument("--paras", type=int, default=3, help="corpus paragraphs per document")
    ap.add_argument("--model", type=Path, default=None, help="default: a random full-size BETO")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", default="1,2", help="Ray actor counts to try, comma separated")
    ap.add_argument("--cpus-per-worker", type=float, default=1.0)
    ap.add_argument("--gpus-per-worker", type=float, default=None)
    ap.add_argument("--address", default=None, help="an existing cluster (default: start one here)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "beto-search-bench")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    args.model = args.model or full_beto(args.cache / "beto-random")
    ray = require_ray()
    if args.address is None:
        ray.init(
            num_cpus=len(os.sched_getaffinity(0)),
            include_dashboard=False,
            logging_level="WARNING",
            log_to_driver=False,
        )
    else:
        ray.init(address=args.address, logging_level="WARNING", log_to_driver=False)
    docs = documents(args.docs, args.paras)
    results = []
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        folder = Path(tmp)
        results.append(run(args, docs, folder, "local", None))
        for w in [int(x) for x in args.workers.split(",") if x]:
            results.append(run(args, docs, folder, f"ray-{w}", w))
        ref = vectors(folder / "local")
        for r in results[1:]:
            r["min_cosine_to_local"] = round(
                float((vectors(folder / r["label"]) * ref).sum(axis=1).min()), 6
            )
    ray.shutdown()
    base = results[0]["tokens_per_s"]
    for r in results:
        r["vs_local"] = round(r["tokens_per_s"] / base, 3)
        print(
            f"{r['label']:>8}: {r['chunks']} chunks, {r['tokens']} tokens in {r['seconds']} s = "
            f"{r['tokens_per_s']} tokens/s ({r['vs_local']}x local)"
            + (f", {r['actors_that_encoded']} actors encoded" if r["workers"] else "")
            + (f", first batch after {r['first_batch_s']} s" if r["first_batch_s"] else "")
            + (
                f", min cosine to local {r['min_cosine_to_local']}"
                if "min_cosine_to_local" in r
                else ""
            )
        )
    emit(
        {
            "benchmark": "ray_ingest",
            "gpu": gpu_description(),
            "model": str(args.model),
            "precision": args.precision,
            "device": args.device,
            "docs": args.docs,
            "results": results,
        }
    )


if __name__ == "__main__":
    main()

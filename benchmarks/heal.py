"""Time to heal a lost FAISS cache: rebuild the vector index of an N-chunk index from SQLite.

Builds an index of ``--chunks`` one-chunk documents with synthetic 768-d vectors through
``SearchEngine.add_embeddings`` (no model needed), deletes its ``vectors-*.faiss`` file, then times
``SearchEngine.open(...).vectors()``, which rebuilds the cache from the embeddings stored in SQLite
without calling the encoder. The last line printed is a JSON object with the figures.

    .venv/bin/python benchmarks/heal.py --chunks 100000 [--index-type auto|flat|ivf|hnsw]
        [--folder DIR --keep] [--reuse] [--repair]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from beto_search import SearchEngine
from beto_search.testing import SPANISH_WORDS
from beto_search.vector_index import checkpoints

from common import emit, rss_mib


class SyntheticEncoder:
    """Creates the manifest (a 768-d encoder); never asked to encode anything else."""

    name = "synthetic-768"
    dimension = 768
    pooling = "mean"

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        rng = np.random.default_rng(len(texts))
        return rng.standard_normal((len(texts), self.dimension)).astype(np.float32)

    encode_queries = encode_documents


class NoEncoder(SyntheticEncoder):
    """Raises if healing tried to encode: the rebuild must come from SQLite alone."""

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        raise AssertionError("the encoder was called while healing")

    encode_queries = encode_documents


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--index-type", default="auto", choices=["auto", "flat", "ivf", "hnsw"])
    ap.add_argument("--folder", default=None, help="where to build (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the index folder")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="reuse an index already built in --folder (skip the build)",
    )
    ap.add_argument("--repair", action="store_true", help="also time SearchEngine.repair()")
    args = ap.parse_args()
    SyntheticEncoder.dimension = NoEncoder.dimension = args.dim

    base = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="heal-bench-"))
    folder = base / "idx"
    reuse = args.reuse and (folder / "index.db").exists()
    if folder.exists() and not reuse:
        shutil.rmtree(folder)
    rng = np.random.default_rng(0)
    words = list(SPANISH_WORDS)

    t0 = time.perf_counter()
    with SearchEngine.open(folder, SyntheticEncoder(), index_type=args.index_type) as engine:
        if not reuse:
            engine.add([{"id": "seed", "text": "documento inicial"}])
        step = 20_000
        for start in range(0, 0 if reuse else args.chunks - 1, step):
            n = min(step, args.chunks - 1 - start)
            recs = [
                {"id": f"d{start + i}", "text": " ".join(rng.choice(words, 8)) + f" {start + i}"}
                for i in range(n)
            ]
            vecs = rng.standard_normal((n, args.dim)).astype(np.float32)
            engine.add_embeddings(recs, vecs)
        chunks = engine.counts()["chunks"]
    build_s = time.perf_counter() - t0

    files = checkpoints(folder)
    faiss_bytes = sum(p.stat().st_size for _, p in files)
    for _, p in files:
        p.unlink()

    rss0 = rss_mib()
    t0 = time.perf_counter()
    with SearchEngine.open(folder, NoEncoder(), create=False) as engine:
        vi = engine.vectors()
        heal_s = time.perf_counter() - t0
        ntotal, kind = vi.ntotal, vi.kind
        t1 = time.perf_counter()
        if args.repair:
            engine.repair()  # the same rebuild, plus writing the checkpoint file
        else:
            vi.save(folder)
        repair_s = time.perf_counter() - t1 if args.repair else None
    t0 = time.perf_counter()
    with SearchEngine.open(folder, NoEncoder(), create=False) as engine:
        engine.vectors()
    load_s = time.perf_counter() - t0
    db_bytes = sum(p.stat().st_size for p in folder.glob("index.db*"))
    if not args.keep and not args.folder:
        shutil.rmtree(base)

    emit(
        {
            "benchmark": "heal",
            "chunks": chunks,
            "dim": args.dim,
            "index_type": kind,
            "vectors": ntotal,
            "heal_seconds": round(heal_s, 2),
            "repair_seconds": None if repair_s is None else round(repair_s, 2),
            "load_checkpoint_seconds": round(load_s, 3),
            "build_seconds": None if reuse else round(build_s, 1),
            "faiss_bytes": faiss_bytes,
            "db_bytes": db_bytes,
            "rss_growth_mb": round(rss_mib() - rss0, 1),
        }
    )


if __name__ == "__main__":
    main()

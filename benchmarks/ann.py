"""Approximate nearest-neighbour benchmark of the project's own ``VectorIndex``.

Builds a ``VectorIndex`` (through ``IndexSpec``, exactly as the engine does) on N clustered
synthetic unit vectors, then measures recall@10 against exact inner-product search, single-query
latency, the size of the saved checkpoint per vector and the build time.

The synthetic vectors imitate sentence embeddings: a mixture of ``--clusters`` centres, a shared
low-rank (``--latent``-dimensional) spread around each centre, and a little isotropic noise, then
L2-normalised. Queries are fresh draws from the same distribution (not vectors of the index).

    python benchmarks/ann.py --vectors 200000 --index-type auto

The last line printed is one JSON object:
``{"index_type", "vectors", "recall_at_10", "ms_per_query", "bytes_per_vector", "build_seconds"}``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from beto_search.vector_index import IndexSpec, SearchParams, VectorIndex

from common import emit

K = 10


class Clustered:
    """A reproducible generator of clustered unit vectors, produced in blocks."""

    def __init__(
        self, dim: int, clusters: int, latent: int, spread: float, noise: float, seed: int
    ) -> None:
        rng = np.random.default_rng(seed)
        self.dim, self.spread, self.noise = dim, spread, noise
        self.centres = rng.standard_normal((clusters, dim)).astype(np.float32)
        self.centres /= np.linalg.norm(self.centres, axis=1, keepdims=True)
        basis, _ = np.linalg.qr(rng.standard_normal((dim, latent)))
        self.basis = basis.T.astype(np.float32)  # (latent, dim), orthonormal rows
        self.latent = latent

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        which = rng.integers(0, len(self.centres), n)
        z = rng.standard_normal((n, self.latent), dtype=np.float32) * (
            self.spread / np.sqrt(self.latent)
        )
        x = self.centres[which] + z @ self.basis
        x += rng.standard_normal((n, self.dim), dtype=np.float32) * (self.noise / np.sqrt(self.dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--index-type", default="auto", choices=["auto", "flat", "hnsw", "ivf"])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2, help="faiss OpenMP threads")
    ap.add_argument("--clusters", type=int, default=0, help="0: vectors // 1000, at least 64")
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--spread", type=float, default=0.8)
    ap.add_argument("--noise", type=float, default=0.25)
    ap.add_argument("--nlist", type=int, default=None)
    ap.add_argument("--nprobe", type=int, default=None, help="per-query nprobe (IVF)")
    ap.add_argument("--ef-search", type=int, default=None, help="per-query efSearch (HNSW)")
    ap.add_argument("--hnsw-m", type=int, default=None)
    ap.add_argument("--quantizer", default=None, choices=["SQ8", "Flat"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    faiss.omp_set_num_threads(args.threads)
    n, dim = args.vectors, args.dim
    gen = Clustered(
        dim, args.clusters or max(64, n // 1000), args.latent, args.spread, args.noise, args.seed
    )
    rng = np.random.default_rng(args.seed + 1)

    spec = IndexSpec(type=args.index_type)
    if args.nlist is not None:
        spec.nlist = args.nlist
    if args.hnsw_m is not None:
        spec.hnsw_m = args.hnsw_m
    if args.quantizer is not None:
        spec.quantizer = args.quantizer
    kind = spec.concrete(n)
    print(
        f"{n} x {dim} vectors, index {args.index_type} -> {kind} ({spec.factory(n)}), "
        f"{args.threads} faiss threads",
        flush=True,
    )

    t0 = time.perf_counter()
    data = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):
        data[start : start + 50_000] = gen.draw(min(50_000, n - start), rng)
    queries = gen.draw(args.queries, np.random.default_rng(args.seed + 2))
    print(f"generated in {time.perf_counter() - t0:.1f}s", flush=True)

    # the engine trains on a sample of spec.train_size(n) stored vectors
    train = None
    if kind != "flat":
        take = spec.train_size(n)
        train = data[np.random.default_rng(args.seed + 3).choice(n, take, replace=False)]
    t0 = time.perf_counter()
    vi = VectorIndex.build(spec, dim, n, train)
    t_train = time.perf_counter() - t0
    ids = np.arange(n, dtype=np.int64) + 1  # chunk ids start at 1
    for start in range(0, n, 100_000):
        vi.add(ids[start : start + 100_000], data[start : start + 100_000])
    build_seconds = time.perf_counter() - t0
    print(f"build {build_seconds:.1f}s (train {t_train:.1f}s)", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        path = vi.save(Path(tmp))
        bytes_per_vector = path.stat().st_size / n

    _, truth = faiss.knn(queries, data, K, metric=faiss.METRIC_INNER_PRODUCT)  # exact, no copy
    truth += 1

    params = SearchParams(ef_search=args.ef_search, nprobe=args.nprobe)
    vi.search(queries[:5], K, params=params)  # warm-up
    got = np.empty((len(queries), K), dtype=np.int64)
    lat = []
    for i in range(len(queries)):
        t = time.perf_counter()
        _, found = vi.search(queries[i : i + 1], K, params=params)
        lat.append(time.perf_counter() - t)
        got[i] = found[0]
    recall = float(np.mean([len(set(got[i]) & set(truth[i])) / K for i in range(len(queries))]))
    lat_ms = np.array(lat) * 1000
    print(
        f"recall@10 {recall:.4f}  ms/query mean {lat_ms.mean():.3f} p50 {np.percentile(lat_ms, 50):.3f} "
        f"p95 {np.percentile(lat_ms, 95):.3f}  bytes/vector {bytes_per_vector:.0f}"
    )
    emit(
        {
            "index_type": kind,
            "vectors": n,
            "recall_at_10": round(recall, 4),
            "ms_per_query": round(float(lat_ms.mean()), 3),
            "bytes_per_vector": round(bytes_per_vector, 1),
            "build_seconds": round(build_seconds, 2),
            "dim": dim,
            "factory": spec.factory(n),
            "nprobe": args.nprobe or spec.nprobe,
            "ef_search": args.ef_search or spec.ef_search,
            "threads": args.threads,
            "p95_ms": round(float(np.percentile(lat_ms, 95)), 3),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

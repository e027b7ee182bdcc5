"""Rerank latency per query at depth 10 / 30 / 100, per precision, side by side in one run.

A full-size cross-encoder with RANDOM weights (BETO's shapes and real vocabulary: 12 layers,
768 hidden, a one-label classification head; built once with
``beto_search.testing.build_cross_encoder_folder`` from the shipped beto_search/data/beto/uncased) stands in for a
real multilingual reranker, which cannot be downloaded here: the latency is representative of a
BERT-base cross-encoder, the scores are not. Each query reranks ``depth`` Spanish paragraphs of
corpora/es (the best passages a search would hand over), through ``beto_search.rerank``'s
reranker of each precision this CPU runs (fp32 always; bf16 with native bf16; onnx-fp32 and
onnx-int8 with onnxruntime; ov-int8 with openvino + nncf). Rounds interleave the precisions so
that a change of load touches all of them alike. Also printed: each compiled precision's build
time and its agreement with fp32 (Spearman / top-10 overlap on the build's Spanish check pairs
and on this run's own pairs), the CPU model and the load.

    python benchmarks/rerank.py [--queries 3] [--depths 10,30,100] [--precisions fp32,...]
                                [--beto beto_search/data/beto/uncased]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from beto_search.encoder import cpu_supports_bf16
from beto_search.rerank import agreement, open_reranker

from common import BETO_DIR, emit, loadavg, paragraphs, pick, queries_from


def full_cross_encoder(folder: Path, source: Path | None = None) -> Path:
    """A full-size random BETO cross-encoder in ``folder`` (built once, reused after)."""
    import json

    from beto_search.testing import build_cross_encoder_folder

    if (folder / "config.json").exists():
        return folder
    beto = source or BETO_DIR / "uncased"
    cfg = json.loads((beto / "config.json").read_text())
    t = time.perf_counter()
    build_cross_encoder_folder(
        folder,
        beto / "vocab.txt",
        hidden=cfg["hidden_size"],
        layers=cfg["num_hidden_layers"],
        heads=cfg["num_attention_heads"],
        intermediate=cfg["intermediate_size"],
        max_positions=cfg["max_position_embeddings"],
    )
    print(f"built a full-size random cross-encoder in {folder} ({time.perf_counter() - t:.1f}s)")
    return folder


def available(asked: str) -> list[str]:
    import importlib.util

    def has(*mods: str) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in mods)

    out = ["fp32"]
    if cpu_supports_bf16():
        out.append("bf16")
    if has("onnxruntime", "onnx"):
        out += ["onnx-fp32", "onnx-int8"]
    if has("openvino", "nncf"):
        out.append("ov-int8")
    if asked:
        wanted = [p.strip() for p in asked.split(",") if p.strip()]
        out = [p for p in wanted if p in out]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "beto-rerank-bench"))
    ap.add_argument("--queries", type=int, default=3, help="timed queries per depth and precision")
    ap.add_argument("--depths", default="10,30,100")
    ap.add_argument("--precisions", default="", help="comma-separated (default: all available)")
    ap.add_argument("--words", type=int, default=120, help="passages cut to this many words")
    ap.add_argument(
        "--beto",
        default=str(BETO_DIR / "uncased"),
        help="folder with BETO's config.json and vocab.txt (default: the copy shipped in beto_search/data/beto/uncased)",
    )
    args = ap.parse_args()

    work = Path(args.workdir)
    os.environ.setdefault("BETO_SEARCH_CACHE", str(work / "cache"))
    model = full_cross_encoder(work / "cross-encoder", Path(args.beto))
    depths = [int(d) for d in args.depths.split(",")]
    paras = [" ".join(p.split()[: args.words]) for p in paragraphs()]
    passages = pick(paras, max(depths))
    queries = pick(queries_from(paras), args.queries + 1)  # the first one warms up
    precisions = available(args.precisions)
    print(f"CPU: {_cpu()}; load before: {loadavg()}", flush=True)
    print(f"precisions: {', '.join(precisions)}; {len(passages)} passages", flush=True)

    rerankers, builds = {}, {}
    for p in precisions:
        t = time.perf_counter()
        rerankers[p] = open_reranker(model, p)
        builds[p] = round(time.perf_counter() - t, 1)
        rerankers[p].score(queries[0], passages[:8])  # warm-up (first-call allocations)
        print(f"{p}: ready in {builds[p]}s (built or loaded)", flush=True)

    times: dict[str, dict[int, list[float]]] = {p: {d: [] for d in depths} for p in precisions}
    deepest: dict[str, np.ndarray] = {}  # the first timed query's scores at the largest depth
    for n, q in enumerate(queries[1:]):
        for d in depths:
            for p in precisions:
                t = time.perf_counter()
                scores = rerankers[p].score(q, passages[:d])
                times[p][d].append(time.perf_counter() - t)
                print(f"  {p} depth {d}: {times[p][d][-1]:.3f}s", flush=True)
                if n == 0 and d == max(depths):
                    deepest[p] = scores
        print(f"round {n + 1} done; load {loadavg()}", flush=True)
        _table(precisions, depths, times)  # so far: a cut-short run still says something

    result: dict[str, object] = {"depths": depths, "queries": args.queries, "load": loadavg()}
    table = {}
    for p in precisions:
        row: dict[str, object] = {
            f"depth_{d}_s": round(float(np.median(times[p][d])), 3) for d in depths
        }
        if "fp32" in deepest:  # the same pairs as fp32 scored: how far the ranking moved
            row["agreement_fp32"] = agreement(deepest["fp32"], deepest[p])
        row["build_agreement"] = getattr(rerankers[p], "agreement", None)
        row["ready_s"] = builds[p]
        table[p] = row
    result["precisions"] = table
    print(f"load after: {loadavg()}")
    emit(result)
    return 0


def _table(precisions: list[str], depths: list[int], times: dict) -> None:
    print("precision".ljust(11) + "".join(f"depth {d} (s)".rjust(16) for d in depths))
    for p in precisions:
        print(p.ljust(11) + "".join(f"{np.median(times[p][d]):16.3f}" for d in depths), flush=True)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())

"""How fast a cached query graph loads: ONNX Runtime session creation and first queries.

For a graph folder built by the library (``$BETO_SEARCH_CACHE/onnx/<key>/``: the ORT-optimised
``model.onnx`` with its weights in ``model.onnx.data``), each variant runs in a fresh process:
``import onnxruntime``, session creation, the first and the next 10-token queries. Variants:
pre-packed (the default), ``fast_start`` (no weight pre-packing), and re-optimising on load.

    python benchmarks/graph_load.py FOLDER [--repeats 3]

The last line printed is one JSON object (medians in seconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

PROBE = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from beto_search.backends.onnx import make_session
t1 = time.perf_counter()
prepack, optimise = sys.argv[2] == "1", sys.argv[3] == "1"
s = make_session(sys.argv[1] + "/model.onnx", prepack=prepack, optimise_on_load=optimise)
t2 = time.perf_counter()
ids = np.array([[4, 100, 200, 300, 400, 500, 600, 700, 800, 5]], dtype=np.int64)
feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
s.run(None, feed)
t3 = time.perf_counter()
for _ in range(5):
    s.run(None, feed)
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "session": t2 - t1, "first": t3 - t2, "next": (t4 - t3) / 5}))
"""
VARIANTS = {"pre-packed": ("1", "0"), "fast_start": ("0", "0"), "re-optimise on load": ("1", "1")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):  # interleaved: machine load hits every variant alike
        for name, (prepack, optimise) in VARIANTS.items():
            out = subprocess.run(
                [sys.executable, "-c", PROBE, args.folder, prepack, optimise],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            rows[name].append(json.loads(out.strip().splitlines()[-1]))
    result = {
        name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for name, runs in rows.items()
    }
    for name, r in result.items():
        print(
            f"{name:20s} import {r['import']:.2f} s  session {r['session']:.2f} s  "
            f"first query {r['first']:.3f} s  next {r['next']:.3f} s"
        )
    print(json.dumps({"benchmark": "graph_load", "folder": args.folder, "medians": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

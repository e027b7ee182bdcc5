"""Memory that ``adapt`` holds per kept chunk: the chunk and its training examples.

Cuts ``--chunks`` random windows of ``--chars`` characters (about a 510-token BETO chunk) out of
``corpora/es``, then measures with tracemalloc what the chunks and their examples (``--method``,
inverse cloze by default: one per sentence) hold. ``adapt`` keeps at most ``--max-chunks`` chunks
(default 5,000), so this per-chunk figure times the cap bounds its memory, whatever the index size.

    python benchmarks/adapt_memory.py --chunks 2000 --chars 2300
"""

from __future__ import annotations

import argparse
import random
import tracemalloc

from beto_search.adapt import ADAPT_CHUNKS_MAX, _examples
from beto_search.store import StoredChunk

from common import CORPUS, emit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=2000)
    ap.add_argument("--chars", type=int, default=2300)
    ap.add_argument("--method", default="ict")
    args = ap.parse_args()
    text = " ".join(p.read_text(encoding="utf-8") for p in sorted(CORPUS.rglob("*.txt")))
    rng = random.Random(0)
    tracemalloc.start()
    chunks = []
    for i in range(args.chunks):
        start = rng.randrange(0, len(text) - args.chars)
        window = text[start : start + args.chars]
        chunks.append(StoredChunk(i, f"d{i // 2}", 0, 0, args.chars, window, "t", "s", {}))
    held_chunks = tracemalloc.get_traced_memory()[0]
    examples, _ = _examples(args.method, chunks, 0)
    total, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per_chunk = peak / args.chunks / 1024
    print(
        f"{args.chunks} chunks of {args.chars} characters, {len(examples)} {args.method} examples: "
        f"chunks alone {held_chunks / args.chunks / 1024:.1f} KB each, with their examples "
        f"{total / args.chunks / 1024:.1f} KB each (peak {per_chunk:.1f} KB); at the default cap "
        f"of {ADAPT_CHUNKS_MAX} chunks: ~{per_chunk * ADAPT_CHUNKS_MAX / 1024:.0f} MB"
    )
    emit(
        {
            "benchmark": "adapt_memory",
            "chunks": args.chunks,
            "chars": args.chars,
            "examples": len(examples),
            "kb_per_chunk": round(per_chunk, 1),
            "mb_at_cap": round(per_chunk * ADAPT_CHUNKS_MAX / 1024),
        }
    )


if __name__ == "__main__":
    main()

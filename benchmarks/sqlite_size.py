"""Bytes on disk per chunk of an index: SQLite (by table) and the FAISS file, measured.

Builds an index of ``--chunks`` one-chunk documents of about ``--chars`` characters (sentences
drawn from corpora/es, so the full-text index sees Spanish vocabulary) with random unit vectors of
``--dim`` dimensions stored through ``engine.add_embeddings`` (no encoder runs), then reports the
size of index.db per table (SQLite's ``dbstat``) and per million chunks.

    python benchmarks/sqlite_size.py --chunks 100000

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import random
import re
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from beto_search import SearchEngine

from common import CORPUS, emit


class RandomEncoder:
    """Creates the index (manifest, dimension); its vectors are random unit vectors."""

    name = "random-768"
    pooling = None

    def __init__(self, dim: int) -> None:
        self.dimension = dim
        self.rng = np.random.default_rng(0)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        v = self.rng.standard_normal((len(texts), self.dimension)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    encode_queries = encode_documents


def sentences() -> list[str]:
    out = []
    for p in sorted(CORPUS.rglob("*")):
        if p.is_file() and p.suffix in (".md", ".txt"):
            out += [
                s.strip()
                for s in re.split(r"(?<=[.!?])\s+", p.read_text(encoding="utf-8"))
                if len(s.split()) >= 5
            ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--chars", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--index-type", default="flat")
    ap.add_argument("--step", type=int, default=10_000)
    args = ap.parse_args()
    rng = random.Random(0)
    pool = sentences()
    enc = RandomEncoder(args.dim)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "idx"
        with SearchEngine.open(index, encoder=enc, index_type=args.index_type) as engine:
            engine.add([{"id": "seed", "text": "Documento inicial del índice."}])
            for start in range(0, args.chunks, args.step):
                records = []
                for i in range(start, min(start + args.step, args.chunks)):
                    parts: list[str] = []
                    while sum(len(s) + 1 for s in parts) < args.chars:
                        parts.append(rng.choice(pool))
                    records.append(
                        {
                            "id": f"c{i}",
                            "title": f"Documento {i}",
                            "text": " ".join(parts)[: args.chars + 200],
                        }
                    )
                engine.add_embeddings(records, enc.encode_documents([""] * len(records)))
        con = sqlite3.connect(index / "index.db")
        try:
            tables = dict(
                con.execute(
                    "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
                ).fetchall()
            )
            text_chars = con.execute("SELECT sum(length(text)) FROM documents").fetchone()[0]
        except sqlite3.OperationalError:  # SQLite built without dbstat
            tables, text_chars = {}, None
        finally:
            con.close()
        files = {p.name: p.stat().st_size for p in index.iterdir() if p.is_file()}
    n = args.chunks + 1
    db = files.get("index.db", 0)
    faiss_bytes = sum(v for k, v in files.items() if k.endswith(".faiss"))

    def per_million(b: int) -> float:  # GiB per million chunks
        return round(b / n * 1e6 / 2**30, 2)

    print(
        f"{n} chunks of ~{args.chars} characters, {args.dim}-d float32 vectors "
        f"({time.perf_counter() - started:.0f} s to build)"
    )
    print(
        f"index.db: {db / 2**20:.0f} MiB = {db / n:.0f} bytes/chunk = "
        f"{per_million(db)} GiB per million chunks"
    )
    for name, size in list(tables.items())[:12]:
        print(f"  {name:<28} {size / 2**20:8.1f} MiB  {size / n:7.0f} bytes/chunk")
    print(f"FAISS file ({args.index_type}): {faiss_bytes / n:.0f} bytes/chunk")
    emit(
        {
            "benchmark": "sqlite_size",
            "chunks": n,
            "chars": args.chars,
            "dim": args.dim,
            "index_db_bytes": db,
            "bytes_per_chunk": round(db / n),
            "gib_per_million": per_million(db),
            "text_chars": text_chars,
            "tables": tables,
            "faiss_bytes_per_chunk": round(faiss_bytes / n),
        }
    )


if __name__ == "__main__":
    main()

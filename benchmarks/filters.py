"""Cost of metadata filters that match text without regard to case and accents.

Builds an index of ``--docs`` documents (random vectors: no model) whose metadata
holds accented categories, then times, side by side in one run: the store's filter query with
the folded comparison (``beto_filter_match``) against the former exact SQL comparison
(``CAST(json_extract(...) AS TEXT) = ?``), and whole searches with and without the filter.

    python benchmarks/filters.py --docs 10000 --repeats 20
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from beto_search import SearchEngine
from beto_search.store import Filter

from common import cpu_description, emit, loadavg

CATEGORIES = ["economía", "Economía", "política", "ciencia", "educación", "música", "deportes"]
WORDS = [
    "precio",
    "banco",
    "inflación",
    "gobierno",
    "ley",
    "escuela",
    "canción",
    "partido",
    "gol",
    "estrella",
]


class RandomEncoder:
    """Random unit vectors (the benchmark measures filters, not meaning)."""

    name = "random-encoder"
    dimension = 64
    pooling = None

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.random.default_rng(len(texts)).standard_normal((len(texts), 64))
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    encode_documents = encode_queries = _encode


def best(fn, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    rng = random.Random(0)
    records = [
        {
            "id": f"d{i}",
            "title": f"Documento {i}",
            "text": " ".join(rng.choice(WORDS) for _ in range(30)),
            "metadata": {"categoria": rng.choice(CATEGORIES), "anio": 2000 + i % 25},
        }
        for i in range(args.docs)
    ]
    with (
        tempfile.TemporaryDirectory() as tmp,
        SearchEngine.open(Path(tmp) / "idx", encoder=RandomEncoder()) as engine,
    ):
        engine.add(records)
        store = engine.store
        flt = Filter({"categoria": "economia"})
        clause, params = flt.sql()
        folded_sql = f"SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE {clause}"
        exact_sql = (
            "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE"
            " CAST(json_extract(d.metadata, ?) AS TEXT) = ?"
        )
        n_folded = len(store.conn.execute(folded_sql, params).fetchall())
        n_exact = len(store.conn.execute(exact_sql, ['$."categoria"', "economía"]).fetchall())
        rows = {
            "filter query, exact (before)": best(
                lambda: store.conn.execute(exact_sql, ['$."categoria"', "economía"]).fetchall(),
                args.repeats,
            ),
            "filter query, folded (now)": best(
                lambda: store.conn.execute(folded_sql, params).fetchall(), args.repeats
            ),
        }
        qvec = RandomEncoder().encode_queries(["x"])[0]
        for mode in ("lexical", "semantic"):
            kw = {"mode": mode, "k": 10}
            if mode == "semantic":
                kw["query_vector"] = qvec
            rows[f"{mode} search, no filter"] = best(
                lambda kw=kw: engine.search("precio del banco", **kw), args.repeats
            )
            rows[f"{mode} search, where categoria=economia"] = best(
                lambda kw=kw: engine.search(
                    "precio del banco", where={"categoria": "economia"}, **kw
                ),
                args.repeats,
            )
            rows[f"{mode} search, where categori=economia (warning)"] = best(
                lambda kw=kw: engine.search(
                    "precio del banco", where={"categori": "economia"}, **kw
                ),
                args.repeats,
            )
    print(f"{args.docs} documents; matches: folded {n_folded}, exact {n_exact}")
    print(f"CPU: {cpu_description().get('model')}; load average {loadavg()}")
    for label, (lo, med) in rows.items():
        print(f"{label:50s} best {lo * 1000:8.2f} ms   median {med * 1000:8.2f} ms")
    emit(
        {
            "benchmark": "filters",
            "docs": args.docs,
            "ms": {k: round(v[0] * 1000, 2) for k, v in rows.items()},
        }
    )


if __name__ == "__main__":
    main()

"""The cost of global term statistics for sharded bm25 (``shards.merge.gather``), in one run.

On a bare FTS5 table like an index's ``chunks_fts`` (es-qa's analyzed documents, copied
``--copies`` times), per query of es-qa's 240: the document frequency of each query term
counted with FTS5's own MATCH (one statement per query: what ``Store.doc_frequencies`` does),
the same from an ``fts5vocab`` 'row' table (the alternative, which needs one more virtual
table per connection and sees single tokens only), and the lexical search itself
(``Store.lexical``'s statement, top 50), alternating ``--repeats`` times.

    python benchmarks/dfs.py --copies 100

The last line printed is one JSON object (milliseconds per query, best of the repeats).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from beto_search.analyzer import SpanishAnalyzer
from beto_search.index.store import RAW_SCHEMA

QA = Path(__file__).resolve().parents[1] / "corpora" / "es-qa"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    analyzer = SpanishAnalyzer()
    docs = [json.loads(line) for line in (QA / "corpus.jsonl").read_text("utf-8").splitlines()]
    terms = [analyzer.analyze(d["title"] + " " + d["text"]) for d in docs]
    lines = (QA / "queries.jsonl").read_text("utf-8").splitlines()
    queries = [list(dict.fromkeys(analyzer.terms(json.loads(q)["text"]))) for q in lines]
    queries = [q for q in queries if q]

    db = sqlite3.connect(Path(tempfile.mkdtemp()) / "dfs.db", isolation_level=None)
    db.executescript(RAW_SCHEMA)
    db.execute("BEGIN")
    rows = [(t,) for _ in range(args.copies) for t in terms]
    db.executemany("INSERT INTO chunks_fts(terms) VALUES (?)", rows)
    db.execute("COMMIT")
    db.execute("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, chunks_fts, row)")

    def quoted(ts: list[str]) -> list[str]:
        return ['"' + t.replace('"', '""') + '"' for t in ts]

    def match(ts: list[str]) -> object:
        one = "(SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?)"
        return db.execute("SELECT " + ", ".join([one] * len(ts)), quoted(ts)).fetchone()

    def vocab(ts: list[str]) -> object:
        marks = ",".join("?" * len(ts))
        return db.execute(
            f"SELECT term, doc FROM temp.vocab WHERE term IN ({marks})", ts
        ).fetchall()

    def search(ts: list[str]) -> object:
        return db.execute(
            "SELECT rowid, -bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ?"
            " ORDER BY bm25(chunks_fts) LIMIT 50",
            [" OR ".join(quoted(ts))],
        ).fetchall()

    ways: dict[str, Callable[[list[str]], object]] = {
        "df_match": match,
        "df_fts5vocab": vocab,
        "lexical_search": search,
    }
    best = {name: float("inf") for name in ways}
    for _ in range(args.repeats):
        for name, fn in ways.items():
            start = time.perf_counter()
            for q in queries:
                fn(q)
            best[name] = min(best[name], (time.perf_counter() - start) / len(queries) * 1000)
    for name, ms in best.items():
        print(f"{name:16s} {ms:7.2f} ms/query")
    print(json.dumps({"rows": len(rows), **{k: round(v, 3) for k, v in best.items()}}))


if __name__ == "__main__":
    main()

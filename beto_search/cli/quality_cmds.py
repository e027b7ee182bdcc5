"""Commands that measure or improve an index's quality: eval, tune, adapt, train.

Importing this module must not import the training code (torch, sentence-transformers, the
training loop): adapt's method names and chunk cap are read from it when click first needs them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..encoder import DEVICES
from ..fusion import DEFAULT_ALPHA, DEFAULT_FUSION, FUSIONS
from ..index.candidates import MODES
from ..quality.training.options import ADAPT_CHUNKS_MAX, DEFAULT_METHOD, METHODS
from .options import (
    count,
    encoder_options,
    eval_inputs,
    index_option,
    json_option,
    one_line_errors,
    open_index,
    rerank_model,
    rerank_options,
    stack,
    wait_option,
)


@click.command("eval")
@index_option
@encoder_options
@eval_inputs(
    "Queries: BEIR queries.jsonl (_id, text) or TREC topics (qid<TAB>text).",
    "Judgements: BEIR TSV (query-id, corpus-id, score) or TREC (qid 0 docid rel).",
    required=True,
)
@click.option(
    "--mode",
    type=click.Choice([*MODES, "all"]),
    default="hybrid",
    show_default=True,
    help="Search mode; 'all' shows the three side by side.",
)
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Documents retrieved per query.",
)
@click.option(
    "--fusion",
    type=click.Choice(FUSIONS),
    default=None,
    help=f"Fusion method (default: the index's tuned one, see 'info'; else {DEFAULT_FUSION}).",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1),
    default=None,
    help="Weight of the dense side in convex fusion (default: the index's tuned one; else "
    f"{DEFAULT_ALPHA}).",
)
@json_option()
@click.option(
    "--per-query",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE",
    help="Write per-query metrics: JSON Lines (one object per mode and query, with the "
    "query's text and metadata), or TSV when FILE ends in .tsv.",
)
@click.option(
    "--run",
    "run_file",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE",
    help="Write a TREC run file (qid Q0 docid rank score tag); with --mode all, one file "
    "per mode named STEM.MODE.SUFFIX.",
)
@rerank_options
@one_line_errors
def eval_(
    index: Path,
    queries: Path,
    qrels: Path,
    mode: str,
    k: int,
    fusion: str | None,
    alpha: float | None,
    as_json: bool,
    per_query: Path | None,
    run_file: Path | None,
    rerank: str | None,
    rerank_depth: int,
    rerank_precision: str,
    **enc: Any,
) -> None:
    """Score the index on a judged query set: nDCG@10, MRR@10, R@1, R@10, R@100, MAP@100."""
    from ..quality.evaluation import load_eval_set, run_evaluation

    reranker = rerank_model(rerank)
    eval_set = load_eval_set(queries, qrels)
    with open_index(index, **enc) as engine:
        report = run_evaluation(
            engine,
            eval_set,
            mode,
            k,
            fusion,
            alpha,
            per_query,
            run_file,
            rerank=reranker,
            rerank_depth=rerank_depth,
            rerank_precision=rerank_precision,
        )
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False))
        return
    for line in report.warning_lines():
        click.echo(f"warning: {line}", err=True)
    click.echo(report.table())


@click.command()
@index_option
@eval_inputs(
    "Tune on labels: queries as 'eval' reads them (with --qrels).",
    "Judgements as 'eval' reads them (with --queries).",
)
@wait_option()
@json_option()
@one_line_errors
def tune(index: Path, queries: Path | None, qrels: Path | None, wait: float, as_json: bool) -> None:
    """Choose the index's default fusion of dense and lexical results (pseudo-queries or labels)."""
    if (queries is None) != (qrels is None):
        raise click.UsageError("give both --queries and --qrels, or neither.")
    q = r = None
    if queries is not None and qrels is not None:
        from ..quality.evaluation import load_eval_set

        eval_set = load_eval_set(queries, qrels)
        q = {qid: x.text for qid, x in eval_set.queries.items()}
        r = eval_set.qrels
        for line in eval_set.warnings[:20]:
            click.echo(f"warning: {line}", err=True)
    with open_index(index, wait=wait) as engine:
        result = engine.tune(q, r, tuned_on=f"{queries} / {qrels}" if queries else None)
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    s = result.ndcg
    stored = "stored as the index default" if result.stored else "not stored"
    click.echo(f"fusion: {result.config.label()}  ({stored})")
    click.echo(f"tuned on: {result.tuned_on}")
    if s:
        click.echo(
            f"nDCG@10: chosen {s['chosen']:.4f}  default {s['default']:.4f}  best "
            f"{s['best']:.4f}  dense only {s['dense']:.4f}  lexical only {s['lexical']:.4f}"
        )
    click.echo(f"why: {result.reason}")


# ----- adapt and train ------------------------------------------------------------------------
_training_options = stack(
    click.option(
        "--out",
        required=True,
        type=click.Path(path_type=Path),
        metavar="DIR",
        help="Folder for the trained sentence-transformers model.",
    ),
    click.option(
        "--max-minutes",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Training time budget (checkpoints every few minutes; re-run to resume).",
    ),
    click.option(
        "--epochs",
        type=click.IntRange(min=1),
        default=None,
        help="Passes over the examples (default: adapt 1, train 3; with --max-minutes as "
        "many as fit).",
    ),
    click.option(
        "--max-steps", type=click.IntRange(min=1), default=None, help="Stop after N steps."
    ),
    click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True),
    click.option(
        "--lr",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Peak learning rate (default 1e-4; warmup 10%, then linear decay).",
    ),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True),
    click.option(
        "--checkpoint-minutes",
        type=click.FloatRange(min=0),
        default=3.0,
        show_default=True,
        help="Training minutes between checkpoints.",
    ),
    click.option(
        "--force", is_flag=True, help="Write the model even if it scores worse than before."
    ),
    click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    json_option("Print the report as JSON."),
)


def _print_training(report: Any, as_json: bool, reembedded: Any = None) -> None:
    if as_json:
        extra = {"reembed": reembedded.to_dict()} if reembedded is not None else {}
        click.echo(json.dumps({**report.to_dict(), **extra}, ensure_ascii=False))
        return
    b, a = report.before, report.after
    click.echo(
        f"wrote {report.out}: {report.method}, {count(report.steps, 'step')} over "
        f"{count(report.examples, 'example')} in {report.seconds / 60:.1f} min ({report.stopped})"
    )
    if 0 < getattr(report, "chunks_sampled", 0) < getattr(report, "index_chunks", 0):
        click.echo(
            f"read a uniform sample of {report.chunks_sampled} of the index's "
            f"{count(report.index_chunks, 'chunk')} (--max-chunks)"
        )
    for key in ("ndcg@10", "recall@10"):
        if key in b and key in a:
            click.echo(
                f"{key}: {b[key]:.4f} -> {a[key]:.4f} ({a[key] - b[key]:+.4f}) on "
                f"{report.check_queries} queries: {report.check}"
            )
    d = getattr(report, "distillation", None)
    if d:
        click.echo(
            f"student: {d['student_layers']} of {d['teacher_layers']} layers, {d['steps']} "
            f"distillation steps in {d['seconds'] / 60:.1f} min; self-check nDCG@10 base "
            f"{d['base'].get('ndcg@10', 0):.4f}, teacher {d['teacher'].get('ndcg@10', 0):.4f}, "
            f"student {d['student'].get('ndcg@10', 0):.4f}"
        )
    if reembedded is not None:
        click.echo(
            f"re-embedded {count(reembedded.chunks, 'chunk')} with {reembedded.encoder} "
            f"(generation {reembedded.generation})"
        )


@click.command()
@index_option
@_training_options
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default=DEFAULT_METHOD,
    show_default=True,
    help="ict: inverse cloze; ict-hard: plus a lexical hard negative; crop: independent "
    "cropping; tsdae: denoising baseline.",
)
@click.option("--reembed", "then_reembed", is_flag=True, help="Then re-embed the index with it.")
@click.option(
    "--layers",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Then distil a faster student keeping N of the model's transformer layers (MSE on the "
    "adapted model's embeddings of the index's chunks); the student is what --out holds.",
)
@click.option(
    "--distil-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    show_default=True,
    help="Time budget of the --layers distillation (on top of --max-minutes).",
)
@click.option(
    "--distil-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Stop the --layers distillation after N steps (default: its time budget).",
)
@click.option(
    "--max-chunks",
    type=click.IntRange(min=1),
    default=ADAPT_CHUNKS_MAX,
    show_default=True,
    help="Chunks read into memory; a larger index is sampled uniformly (bounds memory: "
    "~50 KB per 510-token chunk with its training examples).",
)
@one_line_errors
def adapt(
    index: Path, quiet: bool, as_json: bool, then_reembed: bool, out: Path, **kw: Any
) -> None:
    """Adapt the index's model to its own chunks, without labels; writes a model folder."""
    progress = not quiet and sys.stderr.isatty()
    with open_index(index, device=kw["device"]) as engine:
        report = engine.adapt(out, progress=progress, **kw)
        done = engine.reembed(str(out), progress=progress) if then_reembed else None
    _print_training(report, as_json, done)


@click.command()
@index_option
@_training_options
@eval_inputs(
    "Labelled queries as eval reads them (BEIR queries.jsonl or TREC).",
    "Judgements as eval reads them (BEIR TSV or TREC).",
)
@click.option(
    "--pairs",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE",
    help="JSONL {query, positive[, negative]} or TSV query<TAB>positive[<TAB>negative].",
)
@one_line_errors
def train(index: Path, quiet: bool, as_json: bool, out: Path, **kw: Any) -> None:
    """Fine-tune the index's model on labelled queries or pairs; writes a model folder."""
    with open_index(index, device=kw["device"]) as engine:
        report = engine.train(out, progress=not quiet and sys.stderr.isatty(), **kw)
    _print_training(report, as_json)


COMMANDS = (eval_, tune, adapt, train)

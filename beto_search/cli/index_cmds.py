"""Commands that write or inspect an index: ingest, info, delete, verify, repair, compact, reembed."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from ..encoder import DEVICES, PRECISIONS
from ..progress import MODES as PROGRESS_MODES
from ..vector_index import INDEX_TYPES
from .options import (
    RayRequest,
    count,
    encoder_options,
    index_option,
    json_option,
    one_line_errors,
    open_index,
    ray_embedder_for,
    ray_options,
    size_option_value,
    wait_option,
)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@index_option
@encoder_options
@click.option("--id-field", default="id", show_default=True, help="Id field of JSON/CSV records.")
@click.option(
    "--text-field", default="text", show_default=True, help="Text field of JSON/CSV records."
)
@click.option(
    "--title-field", default="title", show_default=True, help="Title field of JSON/CSV records."
)
@click.option(
    "--encoding", default=None, help="Force a text encoding (e.g. cp1252) instead of detecting."
)
@click.option(
    "--chunk-tokens",
    type=click.IntRange(min=8),
    default=None,
    help="Tokens per chunk (new indexes; default: the model's maximum length minus 2; "
    "200 words for an encoder without a tokenizer).",
)
@click.option(
    "--overlap",
    type=click.IntRange(min=0),
    default=None,
    help="Tokens shared by consecutive chunks (new indexes; default 64, at most a quarter "
    "of a chunk).",
)
@click.option(
    "--index-type",
    type=click.Choice(INDEX_TYPES),
    default=None,
    help="FAISS index type (new indexes; default auto).",
)
@click.option(
    "--prune", is_flag=True, help="Remove documents whose files are gone from the folders."
)
@click.option(
    "--include",
    multiple=True,
    metavar="GLOB",
    help="Only read files matching GLOB (path under the folder or name; repeatable).",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="GLOB",
    help="Leave out files and folders matching GLOB (repeatable).",
)
@click.option(
    "--max-file-size",
    default=None,
    metavar="SIZE",
    help="Skip files larger than SIZE (e.g. 50MB, 500k).",
)
@click.option("--strict", is_flag=True, help="Exit non-zero when any input was skipped.")
@wait_option()
@click.option("--quiet", "-q", is_flag=True, help="No progress (same as --progress none).")
@click.option(
    "--progress",
    "progress_mode",
    type=click.Choice(PROGRESS_MODES),
    default="auto",
    show_default=True,
    help="Chunks embedded with an ETA on stderr: a bar, a line every few seconds (log), JSON "
    "lines, or none; auto: a bar on a terminal, else log.",
)
@click.option(
    "--progress-every",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Seconds between progress lines (log, json).",
)
@click.option(
    "--stream-over",
    default="4MB",
    show_default=True,
    help="Text files larger than this are read as a stream (bounded memory; a killed run "
    "resumes where it stopped), e.g. 500KB, 4MB.",
)
@json_option("Print the summary as JSON.")
@click.option(
    "--shards",
    type=click.IntRange(1, 256),
    default=None,
    help="Create a sharded index of N shards, written by N writers (new indexes).",
)
@ray_options
@one_line_errors
def ingest(
    paths: tuple[Path, ...],
    index: Path,
    id_field: str,
    text_field: str,
    title_field: str,
    encoding: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    max_file_size: str | None,
    stream_over: str,
    strict: bool,
    wait: float,
    quiet: bool,
    progress_mode: str,
    progress_every: float,
    prune: bool,
    as_json: bool,
    ray: RayRequest | None,
    **open_options: Any,  # the encoder's, --chunk-tokens, --overlap, --index-type, --shards
) -> None:
    """Read, chunk, embed and store documents from files or folders."""
    from ..readers import ReaderOptions, parse_size

    opts = ReaderOptions(
        id_field,
        text_field,
        title_field,
        encoding,
        include=include,
        exclude=exclude,
        max_file_size=parse_size(max_file_size) if max_file_size is not None else None,
        stream_over=size_option_value(stream_over, "--stream-over"),
    )
    with contextlib.ExitStack() as exits:
        engine = exits.enter_context(open_index(index, create=True, wait=wait, **open_options))
        summary = engine.ingest(
            paths,
            opts,
            prune=prune,
            progress="none" if quiet else progress_mode,
            embedder=ray_embedder_for(exits, ray, engine=engine),
            progress_every=progress_every,
        )
    _print_ingest(summary, as_json)
    if strict and summary.skipped:
        n = len(summary.skipped)
        raise click.ClickException(
            f"{count(n, 'input')} {'was' if n == 1 else 'were'} skipped (--strict)."
        )


def _print_ingest(summary: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary.to_dict(), ensure_ascii=False))
        return
    click.echo(
        f"files: {summary.files}  documents added: {summary.added}  updated: "
        f"{summary.updated}  unchanged: {summary.unchanged}  pruned: {summary.pruned}  "
        f"duplicate ids: {summary.duplicates}  skipped: {len(summary.skipped)}  chunks: "
        f"{summary.chunks}  seconds: {summary.seconds:.1f}"
        + (f"  resumed chunks: {summary.resumed}" if summary.resumed else "")
    )
    for reason, n in sorted(summary.reasons().items()):
        click.echo(f"skipped ({n}): {reason}")
    if summary.excluded:
        click.echo(f"left out by --include/--exclude: {summary.excluded}")
    for skip in summary.skipped:
        if not skip.reason.startswith("hidden"):  # counted above, not listed one by one
            click.echo(f"  {skip.where}: {skip.reason}", err=True)


@click.command()
@index_option
@json_option()
@one_line_errors
def info(index: Path, as_json: bool) -> None:
    """Documents, chunks, encoder, index type and sizes on disk."""
    with open_index(index) as engine:
        facts = engine.info()
    if as_json:
        click.echo(json.dumps(facts, ensure_ascii=False))
        return
    if facts.get("encoder") is None:  # no manifest: nothing was ever stored
        click.echo(
            f"empty index: nothing has been ingested yet; fill it with 'beto-search ingest "
            f"FOLDER --index {index}' (the model, precision and chunking are fixed then)"
        )
    for key, value in facts.items():
        if key not in ("files", "per_shard") and value is not None:  # unknown: left out
            click.echo(f"{key}: {value}")
    for shard in facts.get("per_shard", []):  # a sharded index: each shard's counts
        click.echo("  " + "  ".join(f"{k}: {v}" for k, v in shard.items()))


@click.command()
@click.argument("doc_ids", nargs=-1, required=True)
@index_option
@wait_option()
@one_line_errors
def delete(doc_ids: tuple[str, ...], index: Path, wait: float) -> None:
    """Delete documents by id."""
    with open_index(index, wait=wait) as engine:
        found = engine.delete(doc_ids)
    missing = sorted(set(doc_ids) - set(found))
    click.echo(f"deleted {count(len(found), 'document')}")
    if missing:
        word = "document" if len(missing) == 1 else "documents"
        raise click.ClickException(f"no such {word}: {', '.join(missing)}.")


@click.command()
@index_option
@one_line_errors
def verify(index: Path) -> None:
    """Check the index (healing the FAISS cache from SQLite); exit 1 if anything is wrong."""
    with open_index(index) as engine:
        problems = engine.verify()
        facts = engine.info()
    if problems:
        for p in problems:
            click.echo(f"problem: {p}", err=True)
        raise click.ClickException(f"{count(len(problems), 'problem')} found in {index}.")
    click.echo(
        f"ok: {count(facts['documents'], 'document')}, {count(facts['chunks'], 'chunk')}, "
        "vectors consistent"
    )
    for d in facts["staged"]:
        click.echo(
            f"staged: {d['doc_id']} ({count(d['chunks'], 'chunk')} written by an ingest that did "
            f"not finish; not searchable until the same ingest is run again and resumes it)"
        )


@click.command()
@index_option
@wait_option()
@one_line_errors
def repair(index: Path, wait: float) -> None:
    """Rebuild the FAISS file from the vectors stored in SQLite."""
    with open_index(index, wait=wait) as engine:
        out = engine.repair()
    click.echo(
        f"rebuilt the vector index: {count(out['vectors'], 'vector')}; re-encoded "
        f"{count(out['reencoded'], 'document')} whose chunks had lost their vectors"
    )


@click.command()
@index_option
@wait_option()
@one_line_errors
def compact(index: Path, wait: float) -> None:
    """Reclaim the space of deleted documents (VACUUM and a fresh FAISS file)."""
    with open_index(index, wait=wait) as engine:
        out = engine.compact()
    click.echo(f"compacted: {out['bytes_before']} -> {out['bytes_after']} bytes")
    if out["staged_chunks_dropped"]:
        click.echo(
            f"dropped {out['staged_chunks_dropped']} staged chunks of documents whose files "
            f"changed or are gone since an ingest was stopped"
        )


@click.command()
@index_option
@click.option("--model", required=True, help="The new encoder: a model folder or hub id.")
@click.option(
    "--precision",
    type=click.Choice(list(PRECISIONS)),
    default=None,
    help="Encoder arithmetic (default: the index's).",
)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@wait_option("Seconds to wait for another re-embed to finish.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option()
@ray_options
@one_line_errors
def reembed(
    index: Path,
    model: str,
    precision: str | None,
    device: str,
    batch_size: int,
    wait: float,
    quiet: bool,
    as_json: bool,
    ray: RayRequest | None,
) -> None:
    """Re-encode every stored chunk with MODEL and switch the index to it atomically (resumable)."""
    with contextlib.ExitStack() as exits:
        engine = exits.enter_context(
            open_index(index, wait=wait, device=device, batch_size=batch_size)
        )
        # with Ray, the driver's copy of the target tokenizes and the actors encode
        target = engine.open_target(model, precision) if ray is not None else model
        embedder = ray_embedder_for(exits, ray, encoder=target)
        progress = not quiet and sys.stderr.isatty()
        result = engine.reembed(target, precision, progress=progress, embedder=embedder)
        fusion = engine.info()["fusion_explained"]
    extra = {"ray_nodes": dict(embedder.nodes)} if embedder is not None else {}
    if as_json:
        click.echo(json.dumps({**result.to_dict(), "fusion": fusion, **extra}, ensure_ascii=False))
        return
    click.echo(
        f"re-embedded {count(result.chunks, 'chunk')} with {result.encoder} (generation "
        f"{result.generation}): {result.encoded} encoded now, {result.resumed} resumed, "
        f"{result.stragglers} written meanwhile; {result.seconds:.1f} s"
    )
    click.echo(f"fusion: {fusion}")
    if extra:
        click.echo(f"encoded on Ray nodes (chunks per node): {extra['ray_nodes']}")


COMMANDS = (ingest, info, delete, verify, repair, compact, reembed)

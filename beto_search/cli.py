"""The ``beto-search`` command line: thin click commands over ``SearchEngine``."""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .encoder import DEFAULT_MODEL, DEVICES, POOLINGS, PRECISIONS
from .errors import BetoSearchError
from .fusion import DEFAULT_ALPHA, DEFAULT_FUSION, FUSIONS, resolve
from .index.searcher import MODES
from .progress import MODES as PROGRESS_MODES
from .quality.adapt import ADAPT_CHUNKS_MAX, DEFAULT_METHOD, METHODS
from .rerank import DEFAULT_DEPTH
from .rerank import PRECISIONS as RERANK_PRECISIONS
from .types import Hit
from .vector_index import INDEX_TYPES

F = TypeVar("F", bound=Callable[..., Any])


def _errors(func: F) -> F:
    """Turn library errors into one-line click errors (exit code 1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BetoSearchError as exc:
            msg = str(exc)
            raise click.ClickException(msg[:1].upper() + msg[1:]) from None

    return wrapper  # type: ignore[return-value]


def _index_option(func: F) -> F:
    return click.option(
        "--index",
        "index",
        type=click.Path(path_type=Path),
        envvar="BETO_SEARCH_INDEX",
        default="indexes/default",
        show_default=True,
        help="Index folder (env BETO_SEARCH_INDEX).",
    )(func)


def _encoder_options(func: F) -> F:
    opts = [
        click.option(
            "--model",
            default=None,
            help="Hub id or local folder of the encoder (env BETO_SEARCH_MODEL; default "
            f"{DEFAULT_MODEL}).",
        ),
        click.option(
            "--pooling",
            type=click.Choice(POOLINGS),
            default=None,
            help="Pooling of token vectors (new indexes; default: the one a saved "
            "sentence-transformers folder declares, else mean).",
        ),
        click.option(
            "--precision",
            type=click.Choice(PRECISIONS),
            default=None,
            help="Encoder arithmetic (default: the index's; a new index: auto, the fastest "
            "that keeps quality on this CPU, or env BETO_SEARCH_PRECISION).",
        ),
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _rerank_options(func: F) -> F:
    """--rerank [MODEL], --rerank-depth, --rerank-precision: shared by query, eval and serve."""
    opts = [
        click.option(
            "--rerank",
            "rerank",
            default=None,
            is_flag=False,
            flag_value="",
            metavar="[MODEL]",
            help="Rescore the top documents with a cross-encoder (hub id or folder; alone: env "
            "BETO_SEARCH_RERANKER).",
        ),
        click.option(
            "--rerank-depth",
            type=click.IntRange(min=1),
            default=DEFAULT_DEPTH,
            show_default=True,
            help="How many of the top documents the cross-encoder rescores.",
        ),
        click.option(
            "--rerank-precision",
            type=click.Choice(RERANK_PRECISIONS),
            default="auto",
            show_default=True,
            help="Cross-encoder arithmetic (auto: chosen for this machine, as for the encoder).",
        ),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _rerank_model(rerank: str | None) -> str | None:
    """None (no rerank), or the model a given --rerank names (a bare one: the env's)."""
    if rerank is None:
        return None
    from .rerank import rerank_model

    return rerank_model(rerank or None)


def _open(index: Path, create: bool = False, wait: float = 0.0, **enc: Any) -> Any:
    """THE place commands open an index: a ``SearchEngine``, or a ``ShardedEngine`` (the same
    methods) for a sharded folder."""
    from .engine import SearchEngine

    return SearchEngine.open(index, create=create, wait=wait, **enc)


@click.group()
@click.version_option(package_name="beto-search")
@click.option("--verbose", "-v", is_flag=True, help="Log what happens (skips, heals).")
def cli(verbose: bool) -> None:
    """Spanish semantic search with BETO: ingest documents, then query them by meaning."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )


def _ray_options(func: F) -> F:
    """--ray [ADDRESS], --ray-workers, --ray-gpus, --ray-window: shared by ingest and reembed."""
    for option in reversed(_RAY_OPTIONS):
        func = option(func)
    return func


def _ray_embedder(
    address: str, workers: int | None, gpus: float | None, window: int | None, **source: Any
) -> Any:
    """A RayEmbedder for ``engine=`` (ingest) or ``encoder=`` (a re-embedding's target)."""
    from .distributed import RayEmbedder

    options: dict[str, Any] = {
        "address": None if address == "local" else address,
        "workers": workers,
        "gpus_per_worker": gpus,
        **({"window_chunks": window} if window else {}),
    }
    if "engine" in source:
        return RayEmbedder.for_engine(source["engine"], **options)
    return RayEmbedder.for_encoder(source["encoder"], **options)


_RAY_OPTIONS = [
    click.option(
        "--ray",
        "ray_address",
        is_flag=False,
        flag_value="local",
        default=None,
        metavar="[ADDRESS]",
        help="Encode on Ray: alone a local Ray instance, 'auto' the cluster this machine is "
        "part of, or a cluster address (needs beto-search[ray]).",
    ),
    click.option(
        "--ray-workers",
        type=click.IntRange(min=1),
        default=None,
        help="Encoding actors on Ray (default: one per GPU, else one per 4 CPUs of each node).",
    ),
    click.option(
        "--ray-gpus",
        type=click.FloatRange(min=0),
        default=None,
        help="GPUs per encoding actor (default: 1 when the cluster has GPUs; 0: CPUs only).",
    ),
    click.option(
        "--ray-window",
        type=click.IntRange(min=1),
        default=None,
        help="Chunks per Ray Data run; the actors load the model once per run (default 32768).",
    ),
]


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@_index_option
@_encoder_options
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
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds to wait for another writer to finish.",
)
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
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--shards",
    type=click.IntRange(1, 256),
    default=None,
    help="Create a sharded index of N shards, written by N writers (new indexes).",
)
@_ray_options
@_errors
def ingest(
    paths: tuple[Path, ...],
    index: Path,
    id_field: str,
    text_field: str,
    title_field: str,
    encoding: str | None,
    chunk_tokens: int | None,
    overlap: int | None,
    index_type: str | None,
    prune: bool,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    max_file_size: str | None,
    strict: bool,
    wait: float,
    quiet: bool,
    progress_mode: str,
    progress_every: float,
    stream_over: str,
    as_json: bool,
    ray_address: str | None,
    ray_workers: int | None,
    ray_gpus: float | None,
    ray_window: int | None,
    shards: int | None,
    **enc: Any,
) -> None:
    """Read, chunk, embed and store documents from files or folders."""
    import contextlib

    from .readers import ReaderOptions, parse_size

    opts = ReaderOptions(
        id_field,
        text_field,
        title_field,
        encoding,
        include=include,
        exclude=exclude,
        max_file_size=parse_size(max_file_size) if max_file_size is not None else None,
        stream_over=_size(stream_over, "--stream-over"),
    )
    if ray_address is not None:
        from .distributed import require_ray

        require_ray()  # before the index is opened or the model loaded
    with contextlib.ExitStack() as stack:
        engine = stack.enter_context(
            _open(
                index,
                create=True,
                wait=wait,
                chunk_tokens=chunk_tokens,
                overlap=overlap,
                index_type=index_type,
                shards=shards,
                **enc,
            )
        )
        embedder = None
        if ray_address is not None:
            embedder = stack.enter_context(
                _ray_embedder(ray_address, ray_workers, ray_gpus, ray_window, engine=engine)
            )
        summary = engine.ingest(
            paths,
            opts,
            prune=prune,
            progress="none" if quiet else progress_mode,
            embedder=embedder,
            progress_every=progress_every,
        )
    if as_json:
        click.echo(json.dumps(summary.to_dict(), ensure_ascii=False))
    else:
        click.echo(
            f"files: {summary.files}  documents added: {summary.added}  updated: "
            f"{summary.updated}  unchanged: {summary.unchanged}  pruned: {summary.pruned}  "
            f"duplicate ids: {summary.duplicates}  skipped: {len(summary.skipped)}  chunks: "
            f"{summary.chunks}  seconds: {summary.seconds:.1f}"
            + (f"  resumed chunks: {summary.resumed}" if summary.resumed else "")
        )
        for reason, count in sorted(summary.reasons().items()):
            click.echo(f"skipped ({count}): {reason}")
        if summary.excluded:
            click.echo(f"left out by --include/--exclude: {summary.excluded}")
        for skip in summary.skipped:
            if not skip.reason.startswith("hidden"):  # counted above, not listed one by one
                click.echo(f"  {skip.where}: {skip.reason}", err=True)
    if strict and summary.skipped:
        n = len(summary.skipped)
        raise click.ClickException(
            f"{_count(n, 'input')} {'was' if n == 1 else 'were'} skipped (--strict)."
        )


def _count(n: int, word: str) -> str:
    """ "1 document", "2 documents" (the nouns this CLI counts take an s)."""
    return f"{n} {word}{'' if n == 1 else 's'}"


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?i?b?)\s*", re.IGNORECASE)


def _size(text: str, option: str) -> int:
    """Bytes from '4MB', '500k', '1.5GiB' or a plain number (powers of 1024)."""
    m = _SIZE.fullmatch(text)
    if not m:
        raise click.BadParameter(f"'{text}' is not a size like 4MB or 500KB.", param_hint=option)
    unit = m.group(2)[:1].lower()
    return int(float(m.group(1)) * {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}[unit])


def _where(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE.", param_hint="--where")
        out[key.strip()] = value
    return out


def _where_in_document(location: dict[str, Any]) -> str:
    """``p. 12``, ``pp. 3-4``, ``§ Capítulo 1 › Artículo 2``: where a hit's passage is."""
    parts = []
    if "page" in location:
        parts.append(f"p. {location['page']}")
    elif "pages" in location:
        pages = location["pages"]
        parts.append(f"pp. {pages[0]}-{pages[-1]}")
    if "section" in location:
        parts.append(f"§ {location['section']}")
    return ", ".join(parts)


def _print_hits(hits: list[Hit], explain: bool) -> None:
    if not hits:
        click.echo("No results.")
    for h in hits:
        where = _where_in_document(h.location)
        shown = h.score if h.rerank_score is None else h.rerank_score  # what the order follows
        click.echo(
            f"{h.rank:>3}. {shown:.4f}  {click.style(h.doc_id, fg='cyan')}  {h.title}"
            + (f"  ({where})" if where else "")
        )
        if explain:
            dense = "-" if h.dense_score is None else f"{h.dense_score:.4f}"
            lex = "-" if h.lexical_score is None else f"{h.lexical_score:.4f}"
            rr = "" if h.rerank_score is None else f"  rerank {h.rerank_score:.4f}"
            click.echo(f"     dense {dense}  lexical {lex}  fused {h.score:.4f}{rr}")
        from .snippets import Snippet

        snippet = Snippet(h.snippet, h.snippet_start, h.snippet_end, h.highlight_spans)
        bold = click.style("\x00", bold=True).split("\x00")
        text = snippet.marked(bold[0], bold[1], escape=False).replace("\n", " ")
        click.echo(f"     {text}")


@cli.command()
@click.argument("text")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of documents.")
@_index_option
@_encoder_options
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True)
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
@click.option(
    "--where",
    multiple=True,
    metavar="KEY=VALUE",
    help="Filter on a metadata field, title, source or id (repeatable; all must hold). Text "
    "matches whole values without regard to case or accents (economia finds Economía); "
    "numbers match exactly.",
)
@click.option(
    "--source", "source_glob", default=None, help="Only documents whose source matches GLOB."
)
@click.option("--ef-search", type=click.IntRange(min=1), default=None, help="HNSW search depth.")
@click.option("--nprobe", type=click.IntRange(min=1), default=None, help="IVF lists to visit.")
@click.option("--explain", is_flag=True, help="Show dense, lexical, fused (and rerank) scores.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_rerank_options
@_errors
def query(
    text: str,
    k: int,
    index: Path,
    mode: str,
    fusion: str | None,
    alpha: float | None,
    where: tuple[str, ...],
    source_glob: str | None,
    ef_search: int | None,
    nprobe: int | None,
    explain: bool,
    as_json: bool,
    rerank: str | None,
    rerank_depth: int,
    rerank_precision: str,
    **enc: Any,
) -> None:
    """Search the index for TEXT; prints ranked documents with snippets."""
    filters = _where(where)
    reranker = _rerank_model(rerank)
    with _open(index, **enc) as engine:
        _require_documents(engine, index)
        hits = engine.search(
            text,
            k=k,
            mode=mode,
            fusion=fusion,
            alpha=alpha,
            where=filters,
            source=source_glob,
            ef_search=ef_search,
            nprobe=nprobe,
            rerank=reranker,
            rerank_depth=rerank_depth,
            rerank_precision=rerank_precision,
        )
        used = resolve(engine.manifest, fusion, alpha)  # what the search used
        why = None
        if explain and mode == "hybrid":
            from .quality.tuning import describe

            m = engine.manifest
            why = describe(m.to_dict() if m is not None else None, fusion, alpha)
    if as_json:
        out = {
            "query": text,
            "mode": mode,
            "fusion": used.method,
            "alpha": used.alpha,
            "rerank": reranker,
            "rerank_depth": rerank_depth if reranker else None,
            "results": [h.to_dict() for h in hits],
        }
        if why is not None:
            out["fusion_explained"] = why
        out["warnings"] = hits.warnings
        click.echo(json.dumps(out, ensure_ascii=False))
    else:
        for line in hits.warnings:
            click.echo(f"warning: {line}", err=True)
        if why is not None:
            click.echo(f"fusion: {why['label']} ({why['source']}): {why['reason']}")
        _print_hits(hits, explain)


def _require_documents(engine: Any, index: Path) -> None:
    """An index that was never filled (say its first ingest could not load the model) is an
    error to report, not a query with no results."""
    if engine.manifest is None:
        from .errors import IndexNotFoundError

        raise IndexNotFoundError(
            f"the index at {index} is empty (it was never built, or its first ingest failed); "
            f"fill it with 'beto-search ingest FOLDER --index {index}'."
        )


@cli.command()
@click.argument("doc_id")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of documents.")
@_index_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_errors
def similar(doc_id: str, k: int, index: Path, as_json: bool) -> None:
    """Documents closest to the stored document DOC_ID (no re-encoding)."""
    with _open(index) as engine:
        hits = engine.similar(doc_id, k)
    if as_json:
        click.echo(
            json.dumps(
                {"doc_id": doc_id, "results": [h.to_dict() for h in hits]}, ensure_ascii=False
            )
        )
    else:
        _print_hits(hits, False)


@cli.command()
@_index_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_errors
def info(index: Path, as_json: bool) -> None:
    """Documents, chunks, encoder, index type and sizes on disk."""
    with _open(index) as engine:
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


@cli.command()
@click.argument("doc_ids", nargs=-1, required=True)
@_index_option
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds to wait for another writer to finish.",
)
@_errors
def delete(doc_ids: tuple[str, ...], index: Path, wait: float) -> None:
    """Delete documents by id."""
    with _open(index, wait=wait) as engine:
        found = engine.delete(doc_ids)
    missing = sorted(set(doc_ids) - set(found))
    click.echo(f"deleted {_count(len(found), 'document')}")
    if missing:
        word = "document" if len(missing) == 1 else "documents"
        raise click.ClickException(f"no such {word}: {', '.join(missing)}.")


@cli.command()
@_index_option
@_errors
def verify(index: Path) -> None:
    """Check the index (healing the FAISS cache from SQLite); exit 1 if anything is wrong."""
    with _open(index) as engine:
        problems = engine.verify()
        facts = engine.info()
    if problems:
        for p in problems:
            click.echo(f"problem: {p}", err=True)
        raise click.ClickException(f"{_count(len(problems), 'problem')} found in {index}.")
    click.echo(
        f"ok: {_count(facts['documents'], 'document')}, {_count(facts['chunks'], 'chunk')}, "
        "vectors consistent"
    )
    for d in facts["staged"]:
        click.echo(
            f"staged: {d['doc_id']} ({_count(d['chunks'], 'chunk')} written by an ingest that did "
            f"not finish; not searchable until the same ingest is run again and resumes it)"
        )


@cli.command()
@_index_option
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds to wait for another writer to finish.",
)
@_errors
def repair(index: Path, wait: float) -> None:
    """Rebuild the FAISS file from the vectors stored in SQLite."""
    with _open(index, wait=wait) as engine:
        out = engine.repair()
    click.echo(
        f"rebuilt the vector index: {_count(out['vectors'], 'vector')}; re-encoded "
        f"{_count(out['reencoded'], 'document')} whose chunks had lost their vectors"
    )


@cli.command()
@_index_option
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds to wait for another writer to finish.",
)
@_errors
def compact(index: Path, wait: float) -> None:
    """Reclaim the space of deleted documents (VACUUM and a fresh FAISS file)."""
    with _open(index, wait=wait) as engine:
        out = engine.compact()
    click.echo(f"compacted: {out['bytes_before']} -> {out['bytes_after']} bytes")
    if out["staged_chunks_dropped"]:
        click.echo(
            f"dropped {out['staged_chunks_dropped']} staged chunks of documents whose files "
            f"changed or are gone since an ingest was stopped"
        )


@cli.command("eval")
@_index_option
@_encoder_options
@click.option(
    "--queries",
    required=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Queries: BEIR queries.jsonl (_id, text) or TREC topics (qid<TAB>text).",
)
@click.option(
    "--qrels",
    required=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Judgements: BEIR TSV (query-id, corpus-id, score) or TREC (qid 0 docid rel).",
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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
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
@_rerank_options
@_errors
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
    from .quality.evaluation import load_eval_set, run_evaluation

    reranker = _rerank_model(rerank)
    eval_set = load_eval_set(queries, qrels)
    with _open(index, **enc) as engine:
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


@cli.command()
@_index_option
@click.option(
    "--queries",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE",
    help="Tune on labels: queries as 'eval' reads them (with --qrels).",
)
@click.option(
    "--qrels",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE",
    help="Judgements as 'eval' reads them (with --queries).",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds to wait for another writer to finish.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_errors
def tune(index: Path, queries: Path | None, qrels: Path | None, wait: float, as_json: bool) -> None:
    """Choose the index's default fusion of dense and lexical results (pseudo-queries or labels)."""
    if (queries is None) != (qrels is None):
        raise click.UsageError("give both --queries and --qrels, or neither.")
    q = r = None
    if queries is not None and qrels is not None:
        from .quality.evaluation import load_eval_set

        eval_set = load_eval_set(queries, qrels)
        q = {qid: x.text for qid, x in eval_set.queries.items()}
        r = eval_set.qrels
        for line in eval_set.warnings[:20]:
            click.echo(f"warning: {line}", err=True)
    with _open(index, wait=wait) as engine:
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


@cli.command()
@_index_option
@click.option("--model", required=True, help="The new encoder: a model folder or hub id.")
@click.option(
    "--precision",
    type=click.Choice(list(PRECISIONS)),
    default=None,
    help="Encoder arithmetic (default: the index's).",
)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds to wait for another re-embed to finish.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_ray_options
@_errors
def reembed(
    index: Path,
    model: str,
    precision: str | None,
    device: str,
    batch_size: int,
    wait: float,
    quiet: bool,
    as_json: bool,
    ray_address: str | None,
    ray_workers: int | None,
    ray_gpus: float | None,
    ray_window: int | None,
) -> None:
    """Re-encode every stored chunk with MODEL and switch the index to it atomically (resumable)."""
    import contextlib

    if ray_address is not None:
        from .distributed import require_ray

        require_ray()  # before the index is opened or the model loaded
    with contextlib.ExitStack() as stack:
        engine = stack.enter_context(_open(index, wait=wait, device=device, batch_size=batch_size))
        target: Any = model
        embedder = None
        if ray_address is not None:  # the driver's copy tokenizes; the actors encode
            target = engine.open_target(model, precision)
            embedder = stack.enter_context(
                _ray_embedder(ray_address, ray_workers, ray_gpus, ray_window, encoder=target)
            )
        progress = not quiet and sys.stderr.isatty()
        result = engine.reembed(target, precision, progress=progress, embedder=embedder)
        fusion = engine.info()["fusion_explained"]
    extra = {"ray_nodes": dict(embedder.nodes)} if embedder is not None else {}
    if as_json:
        click.echo(json.dumps({**result.to_dict(), "fusion": fusion, **extra}, ensure_ascii=False))
        return
    click.echo(
        f"re-embedded {_count(result.chunks, 'chunk')} with {result.encoder} (generation "
        f"{result.generation}): {result.encoded} encoded now, {result.resumed} resumed, "
        f"{result.stragglers} written meanwhile; {result.seconds:.1f} s"
    )
    click.echo(f"fusion: {fusion}")
    if extra:
        click.echo(f"encoded on Ray nodes (chunks per node): {extra['ray_nodes']}")


def main() -> None:
    cli(prog_name="beto-search")


@cli.command()
@_index_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; a non-loopback one needs --api-key or --read-only.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--api-key",
    envvar="BETO_SEARCH_API_KEY",
    default=None,
    help="Key for 'Authorization: Bearer KEY' (env BETO_SEARCH_API_KEY); writes need it.",
)
@click.option("--public-read", is_flag=True, help="With a key set, let searches go without it.")
@click.option("--read-only", is_flag=True, help="Refuse every write.")
@click.option(
    "--cors", multiple=True, metavar="ORIGIN", help="Allow this browser origin (repeatable)."
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer requests whose Host is NAME ('*.example.org' for subdomains; repeatable). "
    "Loopback names and the bound host are always allowed.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Server processes (each loads the model).",
)
@click.option("--model", default=None, help="Encoder folder or hub id (default: the index's).")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default=None,
    help="Query encoder arithmetic (default: the index's).",
)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@_rerank_options
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Serve on Ray Serve: one deployment per shard, alone a local Ray instance, 'auto' the "
    "cluster this machine is part of, or a cluster address (needs beto-search[ray]).",
)
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="With --ray: replicas of each shard.",
)
@_errors
def serve(
    index: Path,
    host: str,
    port: int,
    api_key: str | None,
    public_read: bool,
    read_only: bool,
    cors: tuple[str, ...],
    allowed_hosts: tuple[str, ...],
    workers: int,
    model: str | None,
    precision: str | None,
    device: str,
    rerank: str | None,
    rerank_depth: int,
    rerank_precision: str,
    ray_address: str | None,
    replicas: int,
) -> None:
    """Serve the index over HTTP: a JSON API and a search page at http://HOST:PORT/."""
    try:
        from .server import ServerSettings
        from .server import serve as run_server
    except ImportError:
        raise click.ClickException(
            "the server needs its extra: pip install 'beto-search[server]'."
        ) from None
    settings = ServerSettings(
        index=str(index),
        api_key=api_key or None,
        read_only=read_only,
        public_read=public_read,
        cors=list(cors),
        allowed_hosts=list(allowed_hosts),
        model=model,
        precision=precision,
        device=device,
        # the server's reranker (a client may switch it off, never name another model)
        rerank=_rerank_model(rerank),
        rerank_depth=rerank_depth,
        rerank_precision=rerank_precision,
    )
    if ray_address is not None:
        from .server.ray_serve import serve_on_ray  # Ray only on this path

        settings.index = str(index.resolve())  # every replica opens the same absolute folder
        serve_on_ray(settings, ray_address, host=host, port=port, replicas=replicas)
        return
    if replicas != 1:
        raise click.UsageError("--replicas needs --ray.")
    run_server(settings, host=host, port=port, workers=workers)


# ----- adapt and train (issue 10; adapt.py, training.py) ---------------------------------------
def _training_options(func: F) -> F:
    opts = [
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
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _print_training(report: Any, as_json: bool, reembedded: Any = None) -> None:
    if as_json:
        extra = {"reembed": reembedded.to_dict()} if reembedded is not None else {}
        click.echo(json.dumps({**report.to_dict(), **extra}, ensure_ascii=False))
        return
    b, a = report.before, report.after
    click.echo(
        f"wrote {report.out}: {report.method}, {_count(report.steps, 'step')} over "
        f"{_count(report.examples, 'example')} in {report.seconds / 60:.1f} min ({report.stopped})"
    )
    if 0 < getattr(report, "chunks_sampled", 0) < getattr(report, "index_chunks", 0):
        click.echo(
            f"read a uniform sample of {report.chunks_sampled} of the index's "
            f"{_count(report.index_chunks, 'chunk')} (--max-chunks)"
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
            f"re-embedded {_count(reembedded.chunks, 'chunk')} with {reembedded.encoder} "
            f"(generation {reembedded.generation})"
        )


@cli.command()
@_index_option
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
@_errors
def adapt(
    index: Path, quiet: bool, as_json: bool, then_reembed: bool, out: Path, **kw: Any
) -> None:
    """Adapt the index's model to its own chunks, without labels; writes a model folder."""
    progress = not quiet and sys.stderr.isatty()
    with _open(index, device=kw["device"]) as engine:
        report = engine.adapt(out, progress=progress, **kw)
        done = engine.reembed(str(out), progress=progress) if then_reembed else None
    _print_training(report, as_json, done)


@cli.command()
@_index_option
@_training_options
@click.option(
    "--queries",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE",
    help="Labelled queries as eval reads them (BEIR queries.jsonl or TREC).",
)
@click.option(
    "--qrels",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE",
    help="Judgements as eval reads them (BEIR TSV or TREC).",
)
@click.option(
    "--pairs",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE",
    help="JSONL {query, positive[, negative]} or TSV query<TAB>positive[<TAB>negative].",
)
@_errors
def train(index: Path, quiet: bool, as_json: bool, out: Path, **kw: Any) -> None:
    """Fine-tune the index's model on labelled queries or pairs; writes a model folder."""
    with _open(index, device=kw["device"]) as engine:
        report = engine.train(out, progress=not quiet and sys.stderr.isatty(), **kw)
    _print_training(report, as_json)


# keep last: `python -m beto_search.cli` runs only the commands defined above this line

if __name__ == "__main__":
    main()

"""Commands that search an index: query and similar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..fusion import DEFAULT_ALPHA, DEFAULT_FUSION, FUSIONS, resolve
from ..index.candidates import MODES
from ..types import Hit
from .options import (
    encoder_options,
    index_option,
    json_option,
    one_line_errors,
    open_index,
    rerank_model,
    rerank_options,
)


@click.command()
@click.argument("text")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of documents.")
@index_option
@encoder_options
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
@json_option()
@rerank_options
@one_line_errors
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
    reranker = rerank_model(rerank)
    with open_index(index, **enc) as engine:
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
            from ..quality.tuning import describe

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


@click.command()
@click.argument("doc_id")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of documents.")
@index_option
@json_option()
@one_line_errors
def similar(doc_id: str, k: int, index: Path, as_json: bool) -> None:
    """Documents closest to the stored document DOC_ID (no re-encoding)."""
    with open_index(index) as engine:
        hits = engine.similar(doc_id, k)
    if as_json:
        click.echo(
            json.dumps(
                {"doc_id": doc_id, "results": [h.to_dict() for h in hits]}, ensure_ascii=False
            )
        )
    else:
        _print_hits(hits, False)


def _require_documents(engine: Any, index: Path) -> None:
    """An index that was never filled (say its first ingest could not load the model) is an
    error to report, not a query with no results."""
    if engine.manifest is None:
        from ..errors import IndexNotFoundError

        raise IndexNotFoundError(
            f"the index at {index} is empty (it was never built, or its first ingest failed); "
            f"fill it with 'beto-search ingest FOLDER --index {index}'."
        )


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
    from ..snippets import Snippet

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
        snippet = Snippet(h.snippet, h.snippet_start, h.snippet_end, h.highlight_spans)
        bold = click.style("\x00", bold=True).split("\x00")
        text = snippet.marked(bold[0], bold[1], escape=False).replace("\n", " ")
        click.echo(f"     {text}")


COMMANDS = (query, similar)

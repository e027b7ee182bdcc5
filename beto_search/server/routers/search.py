"""``GET`` and ``POST /api/search``."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from ...fusion import resolve
from ...index.candidates import check_search
from ...readers import clean_text
from ..auth import ServiceDep, read_access
from ..errors import ApiError
from ..models import FilterValue, JsonRoute, SearchBody, Text
from ..service import Service

router = APIRouter(route_class=JsonRoute, dependencies=[Depends(read_access)], tags=["search"])


@router.get("/api/search", summary="Search (query parameters)")
async def search_get(
    svc: ServiceDep,
    q: Annotated[Text, Query(description="the query")],
    k: Annotated[int, Query(description="results to return (1 to the limit, 100 by default)")] = 10,
    offset: Annotated[int, Query(description="results to skip (pagination)")] = 0,
    mode: Annotated[Text, Query(description="hybrid, semantic or lexical")] = "hybrid",
    fusion: Annotated[
        Text | None, Query(description="rrf or convex (default: the index's)")
    ] = None,
    alpha: Annotated[
        float | None, Query(description="weight of the dense score (convex)", allow_inf_nan=False)
    ] = None,
    where: Annotated[
        list[Text] | None, Query(description="metadata filter key:value, repeatable")
    ] = None,
    source: Annotated[Text | None, Query(description="glob over the relative source")] = None,
    rerank: Annotated[
        bool | None,
        Query(description="rerank with the server's cross-encoder (default: on if it has one)"),
    ] = None,
) -> dict[str, Any]:
    return await run_search(
        svc,
        SearchBody(
            q=q,
            k=k,
            offset=offset,
            mode=mode,
            fusion=fusion,
            alpha=alpha,
            where=where,
            source=source,
            rerank=rerank,
        ),
    )


@router.post("/api/search", summary="Search (JSON body)")
async def search_post(svc: ServiceDep, body: SearchBody) -> dict[str, Any]:
    return await run_search(svc, body)


def parse_where(where: dict[str, FilterValue] | list[str] | None) -> dict[str, str]:
    """``{"key": value}`` or ``["key:value"]`` as the library's ``where``."""
    if isinstance(where, dict):
        pairs = {str(a): str(b) for a, b in where.items()}
    else:
        pairs = {}
        for pair in where or []:
            key, sep, value = pair.partition(":")
            if not sep or not key:
                raise ApiError(400, f"The filter '{pair[:60]}' is not key:value.")
            pairs[key.strip()] = value
    if "source" in pairs:  # an exact absolute path would tell which folders hold the corpus
        raise ApiError(400, "Filter sources with the 'source' glob (relative paths), not 'where'.")
    return pairs


def source_glob(source: str | None) -> str | None:
    """The stored-source GLOB that preselects documents for a relative ``source`` glob.

    Stored sources are absolute; the API speaks paths relative to the ingested folder. The SQL
    glob (``*/`` + glob) may also match through the absolute part, so ``run_search`` then keeps
    only hits whose relative source matches: an absolute prefix can never be probed.
    """
    if not source:
        return None
    if source.startswith("/"):
        raise ApiError(
            400,
            "'source' is a glob over paths relative to the ingested folder (such as "
            "'derecho/*'); it may not start with '/'.",
        )
    return source if source.startswith("*") else "*/" + source


async def run_search(svc: Service, body: SearchBody) -> dict[str, Any]:
    settings = svc.settings
    q, k, offset, mode = body.q, body.k, body.offset, body.mode
    if len(q) > settings.max_query_chars:
        raise ApiError(400, f"The query is longer than {settings.max_query_chars} characters.")
    if not 1 <= k <= settings.max_k:
        raise ApiError(400, f"k must be between 1 and {settings.max_k}.")
    if offset < 0 or offset + k > settings.max_k:
        raise ApiError(400, f"offset + k must be at most {settings.max_k}.")
    check_search(q, k, mode, body.fusion, body.alpha)  # the library's own checks, before encoding
    where = parse_where(body.where)
    glob = source_glob(body.source)
    kwargs: dict[str, Any] = {"mode": mode, "where": where, "source": glob}
    if body.fusion is not None:
        kwargs["fusion"] = body.fusion
    if body.alpha is not None:
        kwargs["alpha"] = body.alpha
    # the server's cross-encoder: on by default when it has one
    rerank = svc.reranker is not None if body.rerank is None else body.rerank
    if rerank and svc.reranker is None:
        raise ApiError(400, "This server has no reranker; start it with --rerank MODEL.")
    if rerank:
        kwargs["rerank"], kwargs["rerank_depth"] = svc.reranker, settings.rerank_depth
    if mode != "lexical" and svc.engine.manifest is not None:
        # concurrent queries share one encoder call; the search itself then skips the encoder
        kwargs["query_vector"] = await svc.batcher.encode(clean_text(q))

    def search() -> tuple[list[dict[str, Any]], Any, list[str], Any]:
        wanted = offset + k
        depth = wanted
        while True:
            hits = svc.engine.search(q, k=depth, **kwargs)
            found = [svc.hit(h) for h in hits]
            if body.source:
                found = [h for h in found if fnmatchcase(h["source"], body.source)]
            if len(found) >= wanted or len(hits) < depth or depth >= 8 * wanted:
                break
            depth *= 4  # hits matched only through the absolute part: look further
        for rank, h in enumerate(found, start=1):
            h["rank"] = rank
        used = resolve(svc.engine.manifest, body.fusion, body.alpha)
        # an engine over remote shards names the shards that did not answer (ray_serve.py)
        failed = getattr(hits, "failed_shards", None)
        return found[:wanted], used, list(getattr(hits, "warnings", [])), failed

    results, used, warnings, failed = await run_in_threadpool(search)
    out = {
        "query": q,
        "mode": mode,
        "fusion": used.method,  # what the search used: the index's default unless given
        "alpha": used.alpha,
        "rerank": bool(rerank),
        "k": k,
        "offset": offset,
        "results": results[offset:],
        "warnings": warnings,  # e.g. a filter on a field that no document has
    }
    if failed is not None:  # as Elasticsearch's _shards.failed: results without those shards
        out["partial"] = bool(failed)
        out["failed_shards"] = list(failed)
    return out

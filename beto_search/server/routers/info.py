"""Facts about the index: ``/api/info``, ``/api/facets``, ``/api/health``."""

from __future__ import annotations

import math
import os
from typing import Any

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from ..auth import ServiceDep, read_access
from ..errors import ApiError

router = APIRouter(tags=["index"])


@router.get(
    "/api/info", summary="Counts and the index's settings", dependencies=[Depends(read_access)]
)
async def info(svc: ServiceDep) -> dict[str, Any]:
    def get() -> dict[str, Any]:
        facts: dict[str, Any] = svc.engine.info()
        facts["index"] = svc.folder.name  # never the server's absolute path
        for key, value in facts.items():  # nor the model folder's, say: its name only
            if isinstance(value, str) and os.path.isabs(value):
                facts[key] = os.path.basename(value.rstrip("/"))
        return facts

    return await run_in_threadpool(get)


@router.get(
    "/api/facets",
    summary="Document counts per metadata value",
    dependencies=[Depends(read_access)],
)
async def facets(svc: ServiceDep, limit: int = Query(20)) -> dict[str, Any]:
    """At most ``limit`` values per field and ``max_facet_fields`` fields (those whose most
    common value has the most documents); ``fields`` counts them all, ``truncated`` says whether
    some were left out."""
    if not 1 <= limit <= 100:
        raise ApiError(400, "limit must be between 1 and 100.")
    cap = svc.settings.max_facet_fields

    def get() -> dict[str, Any]:
        raw = svc.engine.facets(limit=limit)
        kept = sorted(raw, key=lambda f: (-max((c for _, c in raw[f]), default=0), f))[:cap]
        kept.sort()
        return {
            "facets": {f: [{"value": _finite(v), "count": c} for v, c in raw[f]] for f in kept},
            "fields": len(raw),
            "truncated": len(raw) > cap,
        }

    return await run_in_threadpool(get)


def _finite(value: Any) -> Any:
    """A hand-written 1e400 in stored JSON reads as infinity, which JSON cannot carry."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


@router.get("/api/health", summary="Liveness (no key needed)")
async def health() -> dict[str, str]:
    return {"status": "ok"}

"""Documents: read one, its nearest neighbours, upsert and delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from ..auth import ServiceDep, read_access, write_access
from ..errors import ApiError
from ..models import DocumentsBody, JsonRoute

router = APIRouter(route_class=JsonRoute, tags=["documents"])
NOT_FOUND = "There is no document with that id."


@router.get(
    "/api/documents/{doc_id:path}",
    summary="One document with its chunks' spans",
    dependencies=[Depends(read_access)],
)
async def document(doc_id: str, svc: ServiceDep) -> dict[str, Any]:
    doc = await run_in_threadpool(svc.engine.get_document, doc_id)
    if doc is None:
        raise ApiError(404, NOT_FOUND)
    doc["source"] = svc.sources.relative(doc["id"], doc.get("source") or "")
    return doc


@router.get(
    "/api/similar/{doc_id:path}",
    summary="Documents closest to a stored one",
    dependencies=[Depends(read_access)],
)
async def similar(doc_id: str, svc: ServiceDep, k: int = Query(10)) -> dict[str, Any]:
    if not 1 <= k <= svc.settings.max_k:
        raise ApiError(400, f"k must be between 1 and {svc.settings.max_k}.")

    def get() -> list[dict[str, Any]] | None:
        if svc.engine.get_document(doc_id) is None:
            return None
        return [svc.hit(h) for h in svc.engine.similar(doc_id, k)]

    results = await run_in_threadpool(get)
    if results is None:
        raise ApiError(404, NOT_FOUND)
    return {"doc_id": doc_id, "results": results}


@router.post(
    "/api/documents",
    summary="Upsert documents (needs the key)",
    dependencies=[Depends(write_access)],
)
async def add_documents(svc: ServiceDep, documents: DocumentsBody) -> dict[str, Any]:
    """A JSON list of ``{id, text, title, metadata}`` (or ``{"documents": [...]}``)."""
    if len(documents) > svc.settings.max_documents:
        raise ApiError(413, f"At most {svc.settings.max_documents} documents per request.")
    records = [d.model_dump() for d in documents]
    summary = await run_in_threadpool(svc.write, lambda e: e.add(records))
    out: dict[str, Any] = summary.to_dict()
    out.pop("skipped", None)
    return out


@router.delete(
    "/api/documents/{doc_id:path}",
    summary="Delete one document (needs the key)",
    dependencies=[Depends(write_access)],
)
async def delete_document(doc_id: str, svc: ServiceDep) -> dict[str, Any]:
    found = await run_in_threadpool(svc.write, lambda e: e.delete([doc_id]))
    if not found:
        raise ApiError(404, NOT_FOUND)
    return {"deleted": found}

"""The search page (``/`` and ``/static``) and the offline API docs (``/docs``, ``/redoc``)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import logging
import re
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from ..middleware import page_headers

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parents[1] / "static"
DOCS_FILES = "/static-offline-docs"  # Swagger UI's and ReDoc's files, from fastapi-offline
# The docs pages run their library from this server and one inline script (allowed by its hash);
# Swagger UI and ReDoc style their elements inline and ReDoc runs a worker from a blob: URL.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=page_headers())


def _with_csp(response: HTMLResponse) -> HTMLResponse:
    """The docs page with a CSP that allows exactly its own inline scripts (by hash)."""
    html = bytes(response.body).decode()
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _INLINE_SCRIPT.findall(html)
    )
    response.headers.update(page_headers(DOCS_CSP.format(hashes=hashes).replace("  ", " ")))
    return response


async def swagger_page(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    root = request.scope.get("root_path", "")
    return _with_csp(
        get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_FILES}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_FILES}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_FILES}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
    )


async def redoc_page(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    root = request.scope.get("root_path", "")
    return _with_csp(
        get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_FILES}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_FILES}/favicon.png",
            with_google_fonts=False,
        )
    )


def add_page(app: FastAPI) -> None:
    """The page, its files, and /docs and /redoc when fastapi-offline (the server extra) is
    installed: stock FastAPI loads both pages' files from a CDN, so without it they are left
    out (/openapi.json stays)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if importlib.util.find_spec("fastapi_offline") is None:
        log.warning("fastapi-offline is not installed: /docs and /redoc are off")
        return
    docs_files = StaticFiles(packages=[("fastapi_offline", "static")])
    app.mount(DOCS_FILES, docs_files, name="static-offline-docs")
    app.add_api_route("/docs", swagger_page, include_in_schema=False)
    app.add_api_route("/redoc", redoc_page, include_in_schema=False)

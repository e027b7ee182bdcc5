"""The HTTP API and the search page over one index (FastAPI); see docs/serve.md.

``create_app`` assembles the parts: ``Service`` (engine, batcher, write lock) in
``app.state.service``, the routers (``routers/``: search, documents, index facts, the page),
auth as dependencies (``auth.py``), typed bodies (``models.py``), errors as one JSON sentence
(``errors.py``) and the middleware (``middleware.py``). ``serve`` runs it under uvicorn with the
read deadline of ``protocol.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from ..encoder import Encoder
from ..errors import IndexNotFoundError
from ..protocols import Served
from .errors import add_error_handlers
from .middleware import BodyLimit, HostCheck, security_headers
from .protocol import protocol_class
from .routers import documents, info, page, search
from .service import Service
from .settings import CONFIG_ENV, ServerSettings, check_bind

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    svc: Service = app.state.service
    await run_in_threadpool(svc.warm_up)
    yield
    await run_in_threadpool(svc.close)


def create_app(
    settings: ServerSettings, encoder: Encoder | None = None, engine: Served | None = None
) -> FastAPI:
    """The FastAPI application for ``settings`` (the index must exist); ``engine``: an
    engine-like object to serve instead of opening ``settings.index`` here (``ray_serve.py``)."""
    app = FastAPI(
        title="beto-search",
        version=_version(),
        lifespan=lifespan,
        description="Spanish semantic and hybrid search over one index.",
        docs_url=None,  # served by routers/page.py from this server, not from a CDN
        redoc_url=None,
        swagger_ui_parameters={"validatorUrl": None},  # no badge from the validator's site
    )
    app.state.service = Service(settings, encoder, engine)
    add_error_handlers(app)
    for router in (search.router, documents.router, info.router):
        app.include_router(router)
    page.add_page(app)
    # the last added runs first: the Host check, the security headers, CORS, the body limit
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.middleware("http")(security_headers)
    app.add_middleware(HostCheck, settings=settings)
    return app


def _version() -> str:
    from .._version import __version__

    return __version__


def app_from_env() -> FastAPI:
    """uvicorn factory for ``--workers N``: each worker process builds its own app."""
    return create_app(ServerSettings.from_env())


def uvicorn_options(settings: ServerSettings, log_level: str = "info") -> dict[str, Any]:
    """uvicorn's settings for ``settings``: the bound address, timeouts, no Server header."""
    return {
        "host": settings.host,
        "log_level": log_level,
        "timeout_graceful_shutdown": 30,
        "timeout_keep_alive": settings.keep_alive,
        "http": protocol_class(settings.read_timeout),
        "server_header": False,
    }


def serve(
    settings: ServerSettings,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Check the settings, then run uvicorn until SIGINT/SIGTERM (in-flight requests finish)."""
    import uvicorn

    settings = dataclasses.replace(settings, host=host)
    warning = check_bind(host, settings)
    if warning:
        log.warning(warning)
        print(f"warning: {warning}", flush=True)
    if not (Path(settings.index) / "index.db").exists():
        raise IndexNotFoundError(
            f"there is no index at {settings.index}; create one with 'beto-search ingest FOLDER "
            f"--index {settings.index}' first."
        )
    options = {**uvicorn_options(settings, log_level), "port": port}
    if workers > 1:
        os.environ[CONFIG_ENV] = settings.to_env()
        uvicorn.run("beto_search.server.app:app_from_env", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)

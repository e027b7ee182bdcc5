"""The HTTP API and the search page over one index (FastAPI); see docs/serve.md."""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..encoder import Encoder
from ..errors import (
    BetoSearchError,
    IndexCorruptError,
    IndexNotFoundError,
    InputError,
    LockTimeoutError,
    ManifestMismatchError,
    ModelLoadError,
    StorageError,
)
from .batcher import QueryBatcher

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MODES = ("hybrid", "semantic", "lexical")
CONFIG_ENV = "BETO_SEARCH_SERVE_CONFIG"  # settings handed to uvicorn's worker processes
# the page's own files only: no inline script, no other origin (a stored <script> cannot run)
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class ServeError(BetoSearchError):
    """The server cannot start with these settings."""


@dataclass
class ServerSettings:
    """What ``beto-search serve`` was started with (limits included)."""

    index: str
    api_key: str | None = None
    read_only: bool = False
    public_read: bool = False
    cors: list[str] = field(default_factory=list)
    model: str | None = None
    precision: str | None = None
    device: str = "auto"
    batch_size: int = 16
    max_query_chars: int = 1000
    max_k: int = 100
    max_body_bytes: int = 2_000_000
    max_documents: int = 500
    write_wait: float = 5.0  # seconds a write waits for the one-writer lock before 409
    batch_window_ms: float = 2.0
    max_batch: int = 32

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServerSettings:
        return cls(**json.loads(os.environ[CONFIG_ENV]))


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'; anything else may be reachable from outside."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, settings: ServerSettings) -> str | None:
    """Refuse an exposed, keyless server that could be written to; return a warning to print."""
    if is_loopback(host):
        return None
    if settings.api_key:
        return None
    if not settings.read_only:
        raise ServeError(
            f"binding to {host} without an API key would let anyone on the network use the index; "
            "set --api-key (or BETO_SEARCH_API_KEY), or pass --read-only to serve it read-only."
        )
    return f"serving on {host} READ-ONLY and without a key: anyone who can reach it can search."


# ----- errors ------------------------------------------------------------------------------------
class ApiError(Exception):
    """An error response: status and one sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_PATHS = re.compile(r"(?<![\w.:/])/(?:[^\s'\"/]+/)*[^\s'\",;)]*")


def _sentence(message: str, folder: Path | None = None) -> str:
    """One sentence without any server path (the index folder becomes 'the index')."""
    if folder is not None:
        for p in {str(folder), str(folder.resolve())}:
            message = re.sub(re.escape(p) + r"(/[^\s'\",;)]*)?", "the index", message)
            message = message.replace("index at the index", "index")
    message = _PATHS.sub("[path]", message)
    message = message.strip()
    return message[:1].upper() + message[1:]


def _library_status(exc: BetoSearchError) -> int:
    if isinstance(exc, LockTimeoutError):
        return 409
    if isinstance(exc, StorageError | ModelLoadError | IndexNotFoundError | IndexCorruptError):
        return 503
    if isinstance(exc, InputError | ManifestMismatchError):
        return 400
    return 400


class BodyLimit:
    """Pure ASGI middleware: 413 for a body larger than ``limit`` bytes (declared or streamed)."""

    class TooLarge(Exception):
        pass

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(self.limit, send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyLimit.TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyLimit.TooLarge:
            if not started:
                await _too_large(self.limit, send)


async def _too_large(limit: int, send: Send) -> None:
    body = json.dumps({"error": f"The request body is larger than the limit of {limit} bytes."})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


# ----- sources: relative to the ingested folder, never the server's absolute paths -------------
class Sources:
    """Turns stored absolute sources into paths relative to the folder that was ingested.

    A file's document id is its path relative to the ingested folder (plus ``#line`` for records
    without an id), so ``source`` minus that id is the folder; other sources under a folder learnt
    that way are made relative to it, and anything else is shown by its file name only.
    """

    def __init__(self) -> None:
        self.roots: set[str] = set()

    def relative(self, doc_id: str, source: str) -> str:
        if not source or not os.path.isabs(source):
            return source
        rel = doc_id.split("#", 1)[0]
        if rel and not rel.startswith("/") and source.endswith("/" + rel):
            root = source[: -len(rel)]
            if root not in self.roots:  # a new set, swapped whole: readers in other threads
                self.roots = self.roots | {root}  # iterate over the one they took
            return rel
        for root in sorted(self.roots, key=len, reverse=True):
            if source.startswith(root):
                return source[len(root) :]
        return os.path.basename(source)


# ----- the application ---------------------------------------------------------------------------
class Service:
    """The engine, the query batcher and the in-process write lock behind the routes.

    One ``SearchEngine`` serves every request: its reads are safe from many threads at once (a
    SQLite connection per thread, the FAISS cache swapped whole), so the routes read it without a
    lock. Writes go through ``write`` (one at a time here, the flock across processes).
    """

    def __init__(
        self, settings: ServerSettings, encoder: Encoder | None = None, engine: Any = None
    ) -> None:
        from ..engine import SearchEngine

        self.settings = settings
        self.folder = Path(settings.index)
        # ``engine``: an engine-like object with SearchEngine's serving methods (the Ray Serve
        # ingress passes one whose shard calls go to deployment handles: server/ray_serve.py)
        self.engine = engine or SearchEngine.open(
            self.folder,
            encoder=encoder,
            model=settings.model,
            precision=settings.precision,
            device=settings.device,
            batch_size=settings.batch_size,
            create=False,
            wait=settings.write_wait,  # a write waits this long for another process's lock
        )
        self.write_lock = threading.Lock()  # one writer in this process; WriteLock across processes
        self.sources = Sources()
        self.batcher = QueryBatcher(
            self._encode, settings.batch_window_ms / 1000, settings.max_batch
        )

    def _encode(self, texts: list[str]) -> np.ndarray:
        # the light query encoder (no torch when the index allows it; the given encoder if any)
        return np.asarray(self.engine.query_encoder.encode_queries(texts), dtype=np.float32)

    def warm_up(self) -> None:
        """Load the encoders now, not on the first query or write."""
        if self.engine.manifest is None:
            return
        if self.settings.api_key and not self.settings.read_only:
            # writes are possible: the full encoder (torch where the index needs it) takes seconds
            # to load, which a first write (or one cut short by a graceful shutdown) should not pay
            self.engine.encoder  # noqa: B018
        # the first calls of a model (int8 above all) can be many times slower than the rest
        first = None
        for _ in range(8):
            started = time.perf_counter()
            self._encode(["calentamiento del modelo"])
            took = time.perf_counter() - started
            first = first or took
            if took < first / 4 or took < 0.01:
                break

    def write(self, op: Callable[[Any], Any]) -> Any:
        """Run a write on the engine: one at a time here, bounded wait, then 409."""
        if not self.write_lock.acquire(timeout=self.settings.write_wait):
            raise ApiError(409, "Another write is in progress; try again shortly.")
        try:
            return op(self.engine)
        except LockTimeoutError:
            # the library's sentence names the lock file and a CLI flag: neither helps an API client
            raise ApiError(
                409, "The index is being written by another process; try again in a moment."
            ) from None
        finally:
            self.write_lock.release()

    def hit(self, h: Any) -> dict[str, Any]:
        out: dict[str, Any] = h.to_dict()
        out["source"] = self.sources.relative(h.doc_id, h.source)
        return out

    def close(self) -> None:
        self.batcher.close()
        with self.write_lock:  # a write under way finishes first
            self.engine.close()


def create_app(
    settings: ServerSettings, encoder: Encoder | None = None, engine: Any = None
) -> FastAPI:
    """The FastAPI application for ``settings`` (the index must exist); ``engine``: an
    engine-like object to serve instead of opening ``settings.index`` here."""
    svc = Service(settings, encoder, engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        await run_in_threadpool(svc.warm_up)
        yield
        await run_in_threadpool(svc.close)

    app = _fastapi(
        title="beto-search",
        version=_version(),
        lifespan=lifespan,
        description="Spanish semantic and hybrid search over one index.",
        # no badge image fetched from the Swagger validator's site
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.service = svc
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )

    # ----- errors as {"error": "one sentence"} -----
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.message}, exc.status, headers=headers)

    @app.exception_handler(BetoSearchError)
    async def _library_error(request: Request, exc: BetoSearchError) -> JSONResponse:
        return JSONResponse({"error": _sentence(str(exc), svc.folder)}, _library_status(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        messages = {
            404: "There is no such page or endpoint.",
            405: "This endpoint does not accept that method.",
        }
        msg = messages.get(exc.status_code) or _sentence(str(exc.detail))
        return JSONResponse({"error": msg}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body", "path"))
        what = str(first.get("msg", "is invalid")).rstrip(".")
        msg = (
            f"The parameter '{where}' is invalid: {what}." if where else f"Invalid request: {what}."
        )
        return JSONResponse({"error": msg}, 400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": "The server failed on this request; see its log."}, 500)

    # ----- auth -----
    def allowed(request: Request, write: bool) -> None:
        key = settings.api_key
        if write and (settings.read_only or not key):
            why = "read-only" if settings.read_only else "started without an API key"
            raise ApiError(403, f"Writes are disabled: the server was {why}.")
        if not key or (not write and settings.public_read):
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "This endpoint needs 'Authorization: Bearer KEY'.")
        if not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise ApiError(401, "The API key is wrong.")

    async def run(func: Callable[..., Any], *args: Any) -> Any:
        return await run_in_threadpool(func, *args)

    # ----- search -----
    def check_query(q: str, k: int, offset: int, mode: str) -> str:
        if len(q) > settings.max_query_chars:
            raise ApiError(400, f"The query is longer than {settings.max_query_chars} characters.")
        if not q.strip():
            raise ApiError(400, "The query is empty; give some text to search for.")
        if not 1 <= k <= settings.max_k:
            raise ApiError(400, f"k must be between 1 and {settings.max_k}.")
        if offset < 0 or offset + k > settings.max_k:
            raise ApiError(400, f"offset + k must be at most {settings.max_k}.")
        if mode not in MODES:
            raise ApiError(400, f"mode must be one of {', '.join(MODES)}, not '{mode[:40]}'.")
        return q

    def parse_where(pairs: list[str] | dict[str, Any] | None) -> dict[str, str]:
        if isinstance(pairs, dict):
            return {str(a): str(b) for a, b in pairs.items()}
        out = {}
        for pair in pairs or []:
            key, sep, value = pair.partition(":")
            if not sep or not key:
                raise ApiError(400, f"The filter '{pair[:60]}' is not key:value.")
            out[key.strip()] = value
        return out

    async def do_search(
        q: str,
        k: int,
        offset: int,
        mode: str,
        fusion: str | None,
        alpha: float | None,
        where: dict[str, str],
        source: str | None,
        request: Request,
    ) -> dict[str, Any]:
        allowed(request, write=False)
        check_query(q, k, offset, mode)
        if source and not source.startswith(("/", "*")):
            source = "*/" + source  # stored sources are absolute; the API speaks relative ones
        kwargs: dict[str, Any] = {"k": offset + k, "mode": mode, "where": where, "source": source}
        if fusion is not None:
            kwargs["fusion"] = fusion
        if alpha is not None:
            kwargs["alpha"] = alpha
        if mode != "lexical" and svc.engine.manifest is not None:
            # concurrent queries share one encoder call; the search itself then skips the encoder
            kwargs["query_vector"] = await svc.batcher.encode(q)

        def search() -> tuple[list[Any], Any]:
            hits = svc.engine.search(q, **kwargs)
            # an engine over remote shards says which shards did not answer (``failed_shards``)
            return [svc.hit(h) for h in hits], getattr(hits, "failed_shards", None)

        results, failed = await run(search)
        out = {
            "query": q,
            "mode": mode,
            "fusion": fusion,
            "alpha": alpha,
            "k": k,
            "offset": offset,
            "results": results[offset:],
        }
        if failed is not None:  # as Elasticsearch's _shards.failed: results without them
            out["partial"] = bool(failed)
            out["failed_shards"] = list(failed)
        return out

    @app.get("/api/search", summary="Search (query parameters)")
    async def search_get(
        request: Request,
        q: Annotated[str, Query(description="the query")],
        k: Annotated[
            int, Query(description="results to return (1 to the limit, 100 by default)")
        ] = 10,
        offset: Annotated[int, Query(description="results to skip (pagination)")] = 0,
        mode: Annotated[str, Query(description="hybrid, semantic or lexical")] = "hybrid",
        fusion: Annotated[
            str | None, Query(description="rrf or convex (default: the index's)")
        ] = None,
        alpha: Annotated[
            float | None, Query(description="weight of the dense score (convex)")
        ] = None,
        where: Annotated[
            list[str] | None, Query(description="metadata filter key:value, repeatable")
        ] = None,
        source: Annotated[str | None, Query(description="glob over the relative source")] = None,
    ) -> dict[str, Any]:
        return await do_search(
            q, k, offset, mode, fusion, alpha, parse_where(where), source, request
        )

    @app.post("/api/search", summary="Search (JSON body)")
    async def search_post(request: Request) -> dict[str, Any]:
        allowed(request, write=False)
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("q", body.get("query")), str):
            raise ApiError(400, "The body must be a JSON object with a string 'q'.")
        where = body.get("where")
        if where is not None and not isinstance(where, dict | list):
            raise ApiError(400, "'where' must be an object of key: value or a list of key:value.")
        try:
            k, offset = int(body.get("k", 10)), int(body.get("offset", 0))
            alpha = None if body.get("alpha") is None else float(body["alpha"])
        except (TypeError, ValueError):
            raise ApiError(400, "'k', 'offset' and 'alpha' must be numbers.") from None
        return await do_search(
            str(body.get("q", body.get("query"))),
            k,
            offset,
            str(body.get("mode", "hybrid")),
            body.get("fusion"),
            alpha,
            parse_where(where),
            body.get("source"),
            request,
        )

    # ----- documents -----
    @app.get("/api/documents/{doc_id:path}", summary="One document with its chunks' spans")
    async def document(doc_id: str, request: Request) -> dict[str, Any]:
        allowed(request, write=False)

        doc = await run(svc.engine.get_document, doc_id)
        if doc is None:
            raise ApiError(404, "There is no document with that id.")
        doc["source"] = svc.sources.relative(doc["id"], doc.get("source") or "")
        return doc

    @app.get("/api/similar/{doc_id:path}", summary="Documents closest to a stored one")
    async def similar(doc_id: str, request: Request, k: int = 10) -> dict[str, Any]:
        allowed(request, write=False)
        if not 1 <= k <= settings.max_k:
            raise ApiError(400, f"k must be between 1 and {settings.max_k}.")

        def get() -> list[dict[str, Any]] | None:
            if svc.engine.get_document(doc_id) is None:
                return None
            return [svc.hit(h) for h in svc.engine.similar(doc_id, k)]

        results = await run(get)
        if results is None:
            raise ApiError(404, "There is no document with that id.")
        return {"doc_id": doc_id, "results": results}

    @app.get("/api/info", summary="Counts and the index's settings")
    async def info(request: Request) -> dict[str, Any]:
        allowed(request, write=False)

        def get() -> dict[str, Any]:
            facts: dict[str, Any] = svc.engine.info()
            facts["index"] = svc.folder.name  # never the server's absolute path
            return facts

        return await run(get)

    @app.get("/api/facets", summary="Document counts per metadata value")
    async def facets(request: Request, limit: int = 20) -> dict[str, Any]:
        allowed(request, write=False)
        if not 1 <= limit <= 100:
            raise ApiError(400, "limit must be between 1 and 100.")

        def get() -> dict[str, Any]:
            raw = svc.engine.facets(limit=limit)
            return {key: [{"value": v, "count": c} for v, c in vals] for key, vals in raw.items()}

        return {"facets": await run(get)}

    @app.get("/api/health", summary="Liveness (no key needed)")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/documents", summary="Upsert documents (needs the key)")
    async def add_documents(request: Request) -> dict[str, Any]:
        allowed(request, write=True)
        body = await _json_body(request)
        docs = body.get("documents") if isinstance(body, dict) else body
        if not isinstance(docs, list) or not docs:
            raise ApiError(400, "The body must be a non-empty JSON list of documents.")
        if len(docs) > settings.max_documents:
            raise ApiError(413, f"At most {settings.max_documents} documents per request.")
        records = [_record(i, d) for i, d in enumerate(docs)]
        summary = await run(svc.write, lambda e: e.add(records))
        out = summary.to_dict()
        out.pop("skipped", None)
        return out

    @app.delete("/api/documents/{doc_id:path}", summary="Delete one document (needs the key)")
    async def delete_document(doc_id: str, request: Request) -> dict[str, Any]:
        allowed(request, write=True)
        found = await run(svc.write, lambda e: e.delete([doc_id]))
        if not found:
            raise ApiError(404, "There is no document with that id.")
        return {"deleted": found}

    # ----- the page -----
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=_page_headers())

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.url.path.startswith("/static/"):
            response.headers.update(_page_headers())
        return response

    return app


def _fastapi(**kwargs: Any) -> FastAPI:
    """FastAPI whose /docs (Swagger UI) and /redoc load their files from this server.

    Stock FastAPI points both pages at a CDN; fastapi-offline (in the server extra) ships the
    files and serves them under /static-offline-docs. Without it the two pages are left out
    (/openapi.json stays).
    """
    try:
        from fastapi_offline import FastAPIOffline
    except ImportError:
        log.warning("fastapi-offline is not installed: /docs and /redoc are off")
        return FastAPI(docs_url=None, redoc_url=None, **kwargs)
    return FastAPIOffline(**kwargs)


def _page_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": PAGE_CSP,
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "The body is not valid JSON.") from None


def _record(i: int, d: Any) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ApiError(400, f"Document {i} is not a JSON object.")
    doc_id, text = d.get("id"), d.get("text")
    if not isinstance(doc_id, str) or not doc_id.strip() or len(doc_id) > 500:
        raise ApiError(400, f"Document {i} needs a string 'id' of 1 to 500 characters.")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, f"Document {i} ('{doc_id[:60]}') needs a non-empty string 'text'.")
    title, metadata = d.get("title", ""), d.get("metadata", {})
    if not isinstance(title, str) or not isinstance(metadata, dict):
        raise ApiError(400, f"Document {i}: 'title' must be a string and 'metadata' an object.")
    return {"id": doc_id, "text": text, "title": title, "metadata": metadata}


def _version() -> str:
    from .. import __version__

    return __version__


def app_from_env() -> FastAPI:
    """uvicorn factory for ``--workers N``: each worker process builds its own app."""
    return create_app(ServerSettings.from_env())


def serve(
    settings: ServerSettings,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Check the settings, then run uvicorn until SIGINT/SIGTERM (in-flight requests finish)."""
    import uvicorn

    warning = check_bind(host, settings)
    if warning:
        log.warning(warning)
        print(f"warning: {warning}", flush=True)
    if not (Path(settings.index) / "index.db").exists():
        raise IndexNotFoundError(
            f"there is no index at {settings.index}; create one with 'beto-search ingest FOLDER "
            f"--index {settings.index}' first."
        )
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "timeout_graceful_shutdown": 30,
        "server_header": False,
    }
    if workers > 1:
        os.environ[CONFIG_ENV] = settings.to_env()
        uvicorn.run("beto_search.server.app:app_from_env", factory=True, workers=workers, **common)
    else:
        uvicorn.run(create_app(settings), **common)

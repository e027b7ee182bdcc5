"""Every error as ``{"error": "one sentence"}`` with its status, never a traceback or a path."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    BetoSearchError,
    IndexCorruptError,
    IndexNotFoundError,
    LockTimeoutError,
    ModelLoadError,
    StorageError,
)

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error response: status and one sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_PATHS = re.compile(r"(?<![\w.:/])/(?:[^\s'\"/]+/)*[^\s'\",;)]*")


def sentence(message: str, folder: Path | None = None) -> str:
    """One sentence without any server path (the index folder becomes 'the index')."""
    if folder is not None:
        for p in {str(folder), str(folder.resolve())}:
            message = re.sub(re.escape(p) + r"(/[^\s'\",;)]*)?", "the index", message)
            message = message.replace("index at the index", "index")
    message = _PATHS.sub("[path]", message)
    message = message.strip()
    return message[:1].upper() + message[1:]


def library_status(exc: BetoSearchError) -> int:
    """The HTTP status of a library error: 409 locked, 503 unreadable or unwritable, else 400."""
    if isinstance(exc, LockTimeoutError):
        return 409
    if isinstance(exc, StorageError | ModelLoadError | IndexNotFoundError | IndexCorruptError):
        return 503
    return 400


def error_response(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status, headers=headers)


async def api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message)


async def library_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BetoSearchError)
    service = getattr(request.app.state, "service", None)
    folder = service.folder if service is not None else None
    return error_response(library_status(exc), sentence(str(exc), folder))


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    messages = {
        404: "There is no such page or endpoint.",
        405: "This endpoint does not accept that method.",
    }
    msg = messages.get(exc.status_code) or sentence(str(exc.detail))
    return error_response(exc.status_code, msg)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, validation_sentence(list(exc.errors())))


def validation_sentence(errors: list[Any]) -> str:
    """The first validation error as one sentence naming the parameter or body field."""
    first = (errors or [{}])[0]
    if first.get("type") == "json_invalid":
        detail = str((first.get("ctx") or {}).get("error", "")).rstrip(".")
        return (
            f"The body is not valid JSON ({detail})." if detail else "The body is not valid JSON."
        )
    loc = list(first.get("loc", ()))
    if loc and loc[0] in ("query", "body", "path"):
        kind = loc.pop(0)
    else:
        kind = ""
    if kind == "body" and not loc and isinstance(first.get("input"), bytes | str):
        return "The body must be JSON, sent with 'Content-Type: application/json'."
    where = ""
    for part in loc:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    what = str(first.get("msg", "is invalid")).removeprefix("Value error, ").rstrip(".")
    if not where:
        return f"Invalid request: {what}."
    if kind == "body":
        return f"The body's '{where}' is invalid: {what}."
    return f"The parameter '{where}' is invalid: {what}."


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return error_response(500, "The server failed on this request; see its log.")


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(BetoSearchError, library_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)

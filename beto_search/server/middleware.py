"""Pure ASGI middleware: the body size limit, the Host check, and the security headers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .settings import ServerSettings, host_allowed

# the page's own files only: no inline script, no other origin (a stored <script> cannot run)
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def page_headers(csp: str = PAGE_CSP) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


async def send_error(send: Send, status: int, message: str) -> None:
    """A JSON error answered from middleware (before any route ran)."""
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """413 for a body larger than ``limit`` bytes (declared or streamed)."""

    class TooLarge(HTTPException):
        """Raised from ``receive``; an HTTPException so that FastAPI's body reading passes it on."""

        def __init__(self, limit: int) -> None:
            super().__init__(413, f"The request body is larger than the limit of {limit} bytes.")

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"The request body is larger than the limit of {self.limit} bytes."
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await send_error(send, 413, message)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyLimit.TooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyLimit.TooLarge:
            if not started:
                await send_error(send, 413, message)


class HostCheck:
    """400 for a request whose Host header names this server by a name it does not know
    (DNS rebinding: ``settings.host_allowed``)."""

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host")
            if host is not None and not host_allowed(_hostname(host), self.settings):
                await send_error(
                    send,
                    400,
                    "This server does not answer to that Host name; start it with "
                    "--allowed-host NAME to allow one.",
                )
                return
        await self.app(scope, receive, send)


def _hostname(host: str) -> str:
    """The name or address of a Host header, without its port (``[::1]:8000`` -> ``::1``)."""
    host = host.strip()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host


async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
    """nosniff on every answer; the page's CSP and frame headers on its files (the page and the
    API docs set their own on their HTML)."""
    response = await call_next(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.url.path.startswith("/static/"):
        response.headers.update(page_headers())
    return response

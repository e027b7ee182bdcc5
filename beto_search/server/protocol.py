"""uvicorn's HTTP protocol with a deadline for receiving each request.

uvicorn closes a keep-alive connection that stays idle after a response (``timeout_keep_alive``),
but not a connection that never sends a request, nor one that sends half of one and stalls: each
holds a socket and a file descriptor for as long as the client likes. Here every connection must
deliver a whole request (headers and body) within ``read_timeout`` seconds of opening, or of the
previous response; otherwise it is closed. A request being processed is never cut off.
"""

from __future__ import annotations

import asyncio
from typing import Any

try:  # uvicorn's own choice ("auto"): httptools when installed, else h11
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]

DEFAULT_READ_TIMEOUT = 10.0


class TimedHTTPProtocol(_Base):
    """The HTTP protocol uvicorn would pick, closing connections that are slow to send."""

    read_timeout = DEFAULT_READ_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request must come whole within the deadline too

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._read_deadline = self.loop.call_later(self.read_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _timed_out(self) -> None:
        self._read_deadline = None
        cycle = self.cycle
        receiving = (
            cycle is None  # no request yet
            or cycle.response_complete  # the next request has not arrived whole
            or (cycle.more_body and not cycle.response_started)  # its body is still coming
        )
        if receiving and not self.transport.is_closing():
            self.transport.close()


def protocol_class(read_timeout: float) -> type[TimedHTTPProtocol]:
    """``TimedHTTPProtocol`` with this deadline (the class itself for the default, so that
    worker processes, which import it by name, get the same)."""
    if read_timeout == DEFAULT_READ_TIMEOUT:
        return TimedHTTPProtocol
    return type("TimedHTTPProtocol", (TimedHTTPProtocol,), {"read_timeout": read_timeout})

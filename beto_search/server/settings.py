"""What ``beto-search serve`` was started with, and the checks on where it binds and who calls."""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import asdict, dataclass, field

from ..errors import BetoSearchError

CONFIG_ENV = "BETO_SEARCH_SERVE_CONFIG"  # settings handed to uvicorn's worker processes
WILDCARDS = ("0.0.0.0", "::", "")  # bound to every address of the machine


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
    max_facet_fields: int = 50  # fields one /api/facets answer lists (the most used first)
    write_wait: float = 5.0  # seconds a write waits for the one-writer lock before 409
    batch_window_ms: float = 2.0
    max_batch: int = 32
    host: str = "127.0.0.1"  # the bound address: a Host header naming it is always accepted
    allowed_hosts: list[str] = field(default_factory=list)  # more Host names (--allowed-host)
    read_timeout: float = 10.0  # seconds to send a whole request (headers and body)
    keep_alive: int = 5  # seconds an idle keep-alive connection stays open

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


def host_allowed(host: str, settings: ServerSettings) -> bool:
    """Whether a request's Host (without its port) may be served: the DNS-rebinding check.

    A web page can make a browser send requests to this server under a name the page's owner
    controls (that name first resolved to their server, then to 127.0.0.1), and read the answers
    as its own. Such requests carry the page's name in Host, so only names known to point here
    are accepted: loopback names and addresses, the bound host, ``--allowed-host`` names
    (``*.example.org`` for subdomains, ``*`` for any), and, when bound to every address
    (0.0.0.0 or ::), any IP address (a rebinding needs a name, never an address).
    """
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):  # resolved to loopback by browsers
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and (address.is_loopback or settings.host in WILDCARDS):
        return True
    if host == settings.host.lower():
        return True
    for pattern in settings.allowed_hosts:
        pattern = pattern.lower().rstrip(".")
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False

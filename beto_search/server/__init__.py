"""``beto-search serve``: the HTTP API and the Spanish search page (needs the ``server`` extra)."""

from .app import create_app, serve, uvicorn_options
from .settings import ServeError, ServerSettings, check_bind, host_allowed, is_loopback

__all__ = [
    "ServeError",
    "ServerSettings",
    "check_bind",
    "create_app",
    "host_allowed",
    "is_loopback",
    "serve",
    "uvicorn_options",
]

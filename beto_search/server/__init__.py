"""``beto-search serve``: the HTTP API and the Spanish search page (needs the ``server`` extra)."""

from .app import ServeError, ServerSettings, check_bind, create_app, is_loopback, serve

__all__ = ["ServeError", "ServerSettings", "check_bind", "create_app", "is_loopback", "serve"]

"""beto-search: Spanish semantic and lexical search with BETO, SQLite and FAISS."""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from .encoder import DEFAULT_MODEL, Encoder
from .engine import SearchEngine
from .errors import BetoSearchError
from .types import Document, Hit, SearchResults

if TYPE_CHECKING:
    from .backends.torch import BetoEncoder


def __getattr__(name: str) -> Any:
    # BetoEncoder is the torch backend: resolved on first use, so that ``import beto_search``
    # (every CLI command, the light query path) does not pay for the backends' imports
    if name == "BetoEncoder":
        from .backends.torch import BetoEncoder

        return BetoEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_MODEL",
    "BetoEncoder",
    "BetoSearchError",
    "Document",
    "Encoder",
    "Hit",
    "SearchEngine",
    "SearchResults",
    "__version__",
]

"""beto-search: Spanish semantic and lexical search with BETO, SQLite and FAISS."""

from __future__ import annotations

__version__ = "0.1.0"

from .encoder import DEFAULT_MODEL, BetoEncoder, Encoder
from .engine import SearchEngine
from .errors import BetoSearchError
from .types import Document, Hit

__all__ = [
    "DEFAULT_MODEL",
    "BetoEncoder",
    "BetoSearchError",
    "Document",
    "Encoder",
    "Hit",
    "SearchEngine",
    "__version__",
]

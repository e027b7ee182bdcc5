"""beto-search: Spanish semantic and lexical search with BETO, SQLite and FAISS."""
from __future__ import annotations

__version__ = "0.1.0"

from .encoder import DEFAULT_MODEL, BetoEncoder, Encoder  # noqa: E402
from .engine import SearchEngine  # noqa: E402
from .errors import BetoSearchError  # noqa: E402
from .types import Document, Hit  # noqa: E402

__all__ = ["DEFAULT_MODEL", "BetoEncoder", "BetoSearchError", "Document", "Encoder", "Hit",
           "SearchEngine", "__version__"]

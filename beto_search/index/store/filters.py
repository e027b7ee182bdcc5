"""Filters on documents: ``Filter`` (values always bound as parameters) and the SQL functions that
compare text folded (``beto_fold``, ``beto_filter_match``), registered on every connection."""

from __future__ import annotations

import sqlite3
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ...errors import InputError
from .schema import VALID_METADATA

_KEY_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def fold_value(value: str) -> str:
    """The form filters compare text in: NFKD without combining marks (á -> a, ü -> u, and
    ñ -> n too), case-folded, surrounding spaces dropped. Unlike the lexical analyzer, which keeps
    ñ so that the stems "año" and "ano" stay apart, a filter compares whole values (a category, a
    place, an author), where users type "espana" for "España" far more often than two values
    differ only by ñ."""
    out = "".join(
        ch for ch in unicodedata.normalize("NFKD", value) if not unicodedata.combining(ch)
    )
    return out.casefold().strip()


@lru_cache(maxsize=1 << 16)  # a field holds few distinct values: most rows are a cache hit
def _filter_match(kind: str | None, stored: str | None, folded: str, raw: str) -> int:
    """SQL ``beto_filter_match(json_type, CAST(value AS TEXT), folded wanted, raw wanted)``: text
    matches without regard to case and accents, numbers exactly as written, booleans as
    true/false (any case) or 1/0; null and missing values never match."""
    if stored is None or kind is None:
        return 0
    if kind == "text":
        return int(fold_cached(stored) == folded)
    if kind in ("true", "false"):
        return int(raw.strip().lower() in (kind, "1" if kind == "true" else "0"))
    return int(stored == raw)


@lru_cache(maxsize=1 << 16)
def fold_cached(value: str) -> str:
    """``fold_value``, remembered (facets and filters fold the same few values again and again)."""
    return fold_value(value)


def _fold_sql(value: Any) -> Any:
    """SQL ``beto_fold(x)``: ``fold_value`` of text; anything else unchanged."""
    return fold_cached(value) if isinstance(value, str) else value


def register_functions(conn: sqlite3.Connection) -> None:
    """The SQL functions filters use (registered on every connection the store opens; they are
    only called in queries, so other tools still open ``index.db`` as a plain SQLite file)."""
    conn.create_function("beto_fold", 1, _fold_sql, deterministic=True)
    conn.create_function("beto_filter_match", 4, _filter_match, deterministic=True)


BUILTIN_FILTER_FIELDS = ("title", "source", "id", "doc_id")


@dataclass
class Filter:
    """Metadata / title / source equality filters and a source glob, always bound as parameters.

    Text values (metadata strings and titles) match without regard to case and accents
    (``fold_value``); numbers match exactly as written, booleans as true/false or 1/0; ``id`` and
    ``source`` match exactly (the source glob is case-sensitive too)."""

    where: dict[str, str]
    source_glob: str | None = None

    def __bool__(self) -> bool:
        return bool(self.where) or self.source_glob is not None

    def metadata_paths(self) -> dict[str, str]:
        """JSON path of each metadata key filtered on (a bad key is a one-sentence error)."""
        out = {}
        for key in self.where:
            if key in BUILTIN_FILTER_FIELDS:
                continue
            if not key or not set(key) <= _KEY_OK:
                raise InputError(
                    f"filter key '{key}' may only hold letters, digits, '_', '-' and '.'."
                )
            out[key] = "$." + ".".join('"' + part + '"' for part in key.split("."))
        return out

    def sql(self) -> tuple[str, list[Any]]:
        """A WHERE fragment over ``documents d`` and its parameters."""
        parts: list[str] = []
        params: list[Any] = []
        paths = self.metadata_paths()
        for key, value in self.where.items():
            if key == "title":
                parts.append("beto_fold(d.title) = ?")
                params.append(fold_value(value))
            elif key in BUILTIN_FILTER_FIELDS:
                parts.append(f"d.{'id' if key == 'doc_id' else key} = ?")
                params.append(value)
            else:
                parts.append(
                    f"beto_filter_match(json_type({VALID_METADATA}, ?),"
                    f" CAST(json_extract({VALID_METADATA}, ?) AS TEXT), ?, ?)"
                )
                params.extend([paths[key], paths[key], fold_value(value), value])
        if self.source_glob is not None:
            parts.append("d.source GLOB ?")
            params.append(self.source_glob)
        return " AND ".join(parts) or "1", params

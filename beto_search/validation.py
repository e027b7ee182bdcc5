"""Checks on what enters an index from outside: document ids and metadata (a leaf module).

Metadata is stored as JSON in SQLite, and every facet and filter reads it back with SQLite's JSON
functions, so one unreadable value breaks them for every document. These checks run wherever
documents enter (``ingest.as_document`` for the library and the server, the record readers for
.jsonl/.json/.csv, where a bad record is skipped with the reason) and refuse:

- numbers that are not finite (NaN, Infinity, or ``1e400`` that JSON parsers turn into infinity):
  JSON has no spelling for them;
- lone surrogates (``"\\ud800"``) in keys or strings: they cannot be written as UTF-8;
- nesting deeper than ``MAX_METADATA_DEPTH`` levels, or more than ``MAX_METADATA_KEYS`` top-level
  keys (every key is a facet field: 60,000 of them make every facet answer megabytes).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from .errors import InputError

log = logging.getLogger(__name__)

MAX_METADATA_DEPTH = 32  # levels of objects/arrays inside the metadata object
MAX_METADATA_KEYS = 256  # top-level keys of one document's metadata


def has_lone_surrogate(text: str) -> bool:
    """True when ``text`` holds a surrogate code point that UTF-8 cannot encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_text(text: str, what: str) -> str:
    """``text`` itself, or InputError naming ``what`` when it holds a lone surrogate."""
    if has_lone_surrogate(text):
        raise InputError(f"{what} holds a lone surrogate (\\ud800-\\udfff), which is not text.")
    return text


def check_metadata(metadata: Any, max_keys: int | None = MAX_METADATA_KEYS) -> dict[str, Any]:
    """``metadata`` itself when it can be stored as JSON and read back; InputError otherwise.

    Walks the value without recursion, so even a pathologically deep value is refused cleanly.
    """
    if not isinstance(metadata, dict):
        raise InputError("metadata must be an object of key: value.")
    if max_keys is not None and len(metadata) > max_keys:
        raise InputError(f"metadata has {len(metadata)} keys; at most {max_keys} are allowed.")
    try:  # the quick answer for the usual value: C-speed serialisation, few containers
        text = json.dumps(metadata, allow_nan=False, ensure_ascii=False, default=str)
        text.encode("utf-8")
        if text.count("{") + text.count("[") <= MAX_METADATA_DEPTH:
            return metadata
    except (ValueError, UnicodeEncodeError, RecursionError):
        pass  # the walk below says what and where
    stack: list[tuple[Any, int, str]] = [(metadata, 0, "")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, dict | list | tuple):
            if depth >= MAX_METADATA_DEPTH:
                raise InputError(
                    f"metadata is nested more than {MAX_METADATA_DEPTH} levels deep{_at(where)}."
                )
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if not isinstance(value, dict):
                    path = f"{where}[{key}]"
                elif has_lone_surrogate(str(key)):
                    raise InputError(f"a metadata key{_at(where)} holds a lone surrogate.")
                else:
                    path = f"{where}.{key}" if where else str(key)
                stack.append((item, depth + 1, path))
        elif isinstance(value, float) and not math.isfinite(value):
            raise InputError(
                f"metadata value{_at(where)} is {value!r}: only finite numbers can be stored."
            )
        elif isinstance(value, str) and has_lone_surrogate(value):
            raise InputError(f"metadata value{_at(where)} holds a lone surrogate.")
    return metadata


def _at(where: str) -> str:
    return f" at '{where[:80]}'" if where else ""


def load_metadata(stored: str) -> dict[str, Any]:
    """Stored metadata JSON as a dict, tolerant of rows written before these checks existed.

    A stored NaN or Infinity (what ``json.dumps`` made of non-finite floats before these checks)
    reads as None; a value that is not valid JSON, or nested too deep to send back, reads as {}
    with a warning. A read never fails on one bad row; ``verify`` reports rows that are not
    valid JSON.
    """
    try:
        if (
            "NaN" not in stored  # json.dumps writes a non-finite float as NaN or Infinity
            and "Infinity" not in stored
            and stored.count("{") + stored.count("[") <= MAX_METADATA_DEPTH
        ):  # every row written with these checks: read at json.loads' speed (a search reads
            value = json.loads(stored)  # hundreds of rows)
            return value if isinstance(value, dict) else {}
        value = json.loads(stored, parse_constant=_none, parse_float=_finite_or_none)
        if isinstance(value, dict):
            return check_metadata(value, max_keys=None)
    except (ValueError, RecursionError, InputError) as exc:
        log.warning("a document's stored metadata cannot be read (%s); shown as {}", exc)
    return {}


def _none(_: str) -> None:
    return None


def _finite_or_none(text: str) -> float | None:
    number = float(text)
    return number if math.isfinite(number) else None

"""Markdown's section locations: the heading path where each ATX heading (``#`` ...) starts.

The text itself is read as plain text by ``readers`` (one document per file)."""

from __future__ import annotations

import re
from typing import Any

from .base import SECTION_SEP

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def markdown_locations(text: str) -> list[tuple[int, dict[str, Any]]]:
    """(offset, {"section": "A › B"}) for every heading outside fenced code blocks."""
    out: list[tuple[int, dict[str, Any]]] = []
    path: list[tuple[int, str]] = []
    fence: str | None = None
    offset = 0
    for line in text.splitlines(keepends=True):
        fenced = _FENCE.match(line)
        if fenced and (fence is None or fenced.group(1) == fence):
            fence = None if fence else fenced.group(1)
        elif fence is None:
            m = _ATX.match(line.rstrip("\r\n"))
            if m and m.group(2).strip():
                level = len(m.group(1))
                while path and path[-1][0] >= level:
                    path.pop()
                path.append((level, " ".join(m.group(2).split())))
                out.append((offset, {"section": SECTION_SEP.join(t for _, t in path)}))
        offset += len(line)
    return out

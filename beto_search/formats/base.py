"""What every format reader shares: the text builder (text + locations), skip errors, dates."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from ..errors import InputError
from ..text import clean_text

SECTION_SEP = " › "


class FormatSkip(InputError):
    """A file of a known format that cannot be read; the message is the skip's reason."""


def encrypted(what: str) -> FormatSkip:
    return FormatSkip(f"encrypted ({what}; give an unprotected copy)")


def damaged(detail: str) -> FormatSkip:
    return FormatSkip(f"damaged ({detail})")


class TextBuilder:
    """Blocks of text joined by blank lines, with the offset where each page or section starts.

    Each block is cleaned (NFC) as it is added, so the offsets hold in the final text.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self.locations: list[tuple[int, dict[str, Any]]] = []
        self._headings: list[tuple[int, str]] = []

    def _next_offset(self) -> int:
        return self._length + (2 if self._parts else 0)

    def locate(self, location: dict[str, Any]) -> None:
        """The next block starts ``location`` (a later one at the same offset replaces it)."""
        offset = self._next_offset()
        if self.locations and self.locations[-1][0] == offset:
            self.locations[-1] = (offset, location)
        elif not self.locations or self.locations[-1][1] != location:
            self.locations.append((offset, location))

    def block(self, text: str) -> None:
        text = clean_text(text).strip()
        if not text:
            return
        if self._parts:
            self._parts.append("\n\n")
            self._length += 2
        self._parts.append(text)
        self._length += len(text)

    def heading(self, level: int, text: str) -> None:
        """A heading of ``level`` (1 = top): the section path becomes its ancestors + it."""
        text = " ".join(clean_text(text).split())
        if not text:
            return
        while self._headings and self._headings[-1][0] >= level:
            self._headings.pop()
        self._headings.append((level, text))
        self.locate({"section": SECTION_SEP.join(t for _, t in self._headings)})
        self.block(text)

    def extend(self, other: TextBuilder) -> None:
        """Append another builder's text and locations (a chapter into a book)."""
        text = other.text()
        if not text:
            return
        base = self._next_offset()
        for offset, location in other.finished_locations():
            self.locations.append((base + offset, location))
        self.block(text)

    @property
    def first_heading(self) -> str:
        for _, loc in self.locations:
            if "section" in loc:
                return str(loc["section"]).split(SECTION_SEP)[-1]
        return ""

    def text(self) -> str:
        return "".join(self._parts)

    def finished_locations(self) -> list[tuple[int, dict[str, Any]]]:
        """The locations that start inside the text (a trailing empty part has none)."""
        return [(o, loc) for o, loc in self.locations if o < self._length]


_PDF_DATE = re.compile(r"^D?:?(\d{4})(\d{2})?(\d{2})?")


def iso_date(value: Any) -> str | None:
    """A date as YYYY-MM-DD from a datetime, an ISO string or a PDF date (D:20240305...)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime | date):
        return value.strftime("%Y-%m-%d")
    text = str(value).strip()
    m = re.match(r"^(\d{4})-(\d{2})-(\d{2})", text)
    if m:
        return m.group(0)
    m = _PDF_DATE.match(text)
    if m and m.group(2) and m.group(3):
        return f"{m.group(1)}-{m.group(2)}-{m.group(3)}"
    return None


def file_metadata(author: Any = None, when: Any = None, language: Any = None) -> dict[str, str]:
    """The filterable metadata of a file (``--where autor=...``): autor, fecha, idioma."""
    out: dict[str, str] = {}
    if author and str(author).strip():
        out["autor"] = " ".join(clean_text(str(author)).split())
    day = iso_date(when)
    if day:
        out["fecha"] = day
    if language and str(language).strip():
        out["idioma"] = str(language).strip().lower()
    return out

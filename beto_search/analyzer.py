"""The Spanish lexical analyzer, applied identically to indexed text and to queries.

Steps: NFC, lower-case, split into words (``¿¡`` and punctuation are separators), drop Spanish
stopwords, Snowball Spanish stemming (PyStemmer), then fold accents (á é í ó ú ü -> a e i o u)
while keeping ñ, so "canción"/"canciones"/"cancion" meet and "año" never meets "ano".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import Stemmer

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_N_TILDE = "\u0303"


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    """Spanish stopwords, in their accented and folded forms."""
    text = resources.files("beto_search.data").joinpath("stopwords_es.txt").read_text("utf-8")
    words = {w.strip() for w in text.splitlines() if w.strip() and not w.startswith("#")}
    return frozenset(words | {fold(w) for w in words})


@lru_cache(maxsize=1 << 16)
def fold(word: str) -> str:
    """Remove diacritics except the tilde of ñ (Ñ is lower-cased before)."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFD", word):
        if unicodedata.combining(ch) and not (ch == _N_TILDE and out and out[-1] in "nN"):
            continue
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out))


@dataclass(frozen=True)
class Token:
    """An analyzed term and the char span of the word it came from."""

    term: str
    start: int
    end: int


class SpanishAnalyzer:
    """Lower-case, stopwords, Snowball Spanish stems, accent folding that keeps ñ."""

    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("spanish")
        self._stop = stopwords()

    def tokens(self, text: str) -> list[Token]:
        """Analyzed terms with their char spans in ``text`` (stopwords dropped)."""
        text = unicodedata.normalize("NFC", text)
        out: list[Token] = []
        for m in _WORD.finditer(text):
            word = m.group().lower()
            if word in self._stop or fold(word) in self._stop:
                continue
            term = fold(self._stemmer.stemWord(word))
            if term:
                out.append(Token(term, m.start(), m.end()))
        return out

    def terms(self, text: str) -> list[str]:
        """Analyzed terms of ``text`` in order."""
        return [t.term for t in self.tokens(text)]

    def analyze(self, text: str) -> str:
        """The space-separated terms stored in the FTS5 table."""
        return " ".join(self.terms(text))

    def fts_query(self, text: str) -> str | None:
        """A safe FTS5 MATCH expression (quoted terms joined by OR), or None if nothing is left."""
        seen: dict[str, None] = {}
        for term in self.terms(text):
            seen.setdefault(term, None)
        if not seen:
            return None
        return " OR ".join('"' + t.replace('"', '""') + '"' for t in seen)

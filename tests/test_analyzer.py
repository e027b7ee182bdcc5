"""The Spanish analyzer on a table of cases, and FTS5 safety of any query."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beto_search.analyzer import SpanishAnalyzer, fold

A = SpanishAnalyzer()


@pytest.mark.parametrize(
    "a,b",
    [
        ("canciones", "canción"),  # plural and accent
        ("Canción", "cancion"),  # case and missing accent
        ("cantaban", "cantar"),  # verb forms
        ("naciones", "nación"),
        ("pingüinos", "pingüino"),  # ü plural
        ("pingüino", "pinguino"),  # ü folded
        ("ÁRBOLES", "árbol"),  # upper case
        ("lingüística", "linguistica"),
    ],
)
def test_forms_meet(a: str, b: str) -> None:
    assert A.terms(a) == A.terms(b) and A.terms(a)


@pytest.mark.parametrize(
    "a,b",
    [
        ("año", "ano"),  # ñ is kept
        ("peña", "pena"),
        ("España", "Espana"),
        ("mesa", "misa"),
    ],
)
def test_forms_stay_apart(a: str, b: str) -> None:
    assert A.terms(a) != A.terms(b)


def test_stopwords_and_spanish_punctuation() -> None:
    assert A.terms("¿Dónde está el año?") == A.terms("donde año")
    assert A.terms("de la que el en y a los") == []
    assert A.terms("¡Hola!") == ["hol"]


def test_token_spans_point_at_the_words() -> None:
    text = "¿Las canciones del año?"
    spans = [(text[t.start : t.end], t.term) for t in A.tokens(text)]
    assert spans == [("canciones", "cancion"), ("año", "año")]


def test_fold_keeps_n_tilde_only() -> None:
    assert fold("áéíóúüñÑ") == "aeiouuñÑ"


@pytest.mark.parametrize(
    "query",
    [
        '"',
        "a OR b",
        "NOT x",
        "-foo",
        "title:bar",
        "x*",
        "(a",
        "NEAR(a b)",
        "😀 emoji",
        "'; DROP TABLE chunks; --",
        "AND",
        "^",
        "",
    ],
)
def test_fts_queries_are_always_valid(query: str) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(terms)")
    conn.execute("INSERT INTO t VALUES ('foo bar not and or near titl')")
    match = A.fts_query(query)
    if match is not None:
        conn.execute("SELECT * FROM t WHERE t MATCH ?", (match,)).fetchall()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_text_gives_a_valid_fts_query(text: str) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(terms)")
    match = A.fts_query(text)
    if match is not None:
        conn.execute("SELECT * FROM t WHERE t MATCH ?", (match,)).fetchall()

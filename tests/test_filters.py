"""Metadata filters: text matches without regard to case and accents (library, CLI, server),
numbers and booleans exactly, and a filter on a field no document has is a warning, not silence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from beto_search import SearchEngine
from beto_search.cli import cli

DOCS = [
    {
        "id": "e1",
        "title": "Tipos de interés",
        "text": "El banco central sube los tipos de interés.",
        "metadata": {"categoria": "economía", "pais": "España", "anio": 2024, "ok": True},
    },
    {
        "id": "e2",
        "title": "Inflación",
        "text": "La inflación baja por tercer mes consecutivo.",
        "metadata": {"categoria": "Economía", "pais": "México", "anio": 2023, "ok": False},
    },
    {
        "id": "e3",
        "title": "La selección",
        "text": "La selección gana el campeonato con un gol.",
        "metadata": {"categoria": "deportes", "pais": "españa", "anio": "2024", "nota": 7.5},
    },
]


@pytest.fixture
def engine(tmp_path: Path, tiny_encoder):
    with SearchEngine.open(tmp_path / "f", encoder=tiny_encoder) as e:
        e.add(DOCS)
        yield e


ALL = "tipos inflación gol"  # a query that every document matches lexically too


def _ids(hits) -> list[str]:
    return sorted(h.doc_id for h in hits)


@pytest.mark.parametrize("mode", ["semantic", "lexical", "hybrid"])
def test_text_values_match_without_case_or_accents(engine: SearchEngine, mode: str) -> None:
    for value in ("economia", "economía", "ECONOMÍA", "Economia", " economía "):
        hits = engine.search(ALL, k=10, mode=mode, where={"categoria": value})
        assert _ids(hits) == ["e1", "e2"], value
        assert hits.warnings == []
    # ñ folds too: "espana" is how people type "España" (documented in the README)
    assert _ids(engine.search(ALL, mode=mode, where={"pais": "espana"})) == ["e1", "e3"]
    assert _ids(engine.search(ALL, mode=mode, where={"pais": "ESPAÑA"})) == ["e1", "e3"]
    assert _ids(engine.search(ALL, mode=mode, where={"pais": "mexico"})) == ["e2"]
    assert _ids(engine.search(ALL, mode=mode, where={"title": "la seleccion"})) == ["e3"]
    # whole values only: no prefix or substring matches
    assert engine.search(ALL, mode=mode, where={"categoria": "econom"}) == []


def test_numbers_and_booleans_match_exactly(engine: SearchEngine) -> None:
    # the integer 2024 and the string "2024" are both written 2024
    assert _ids(engine.search(ALL, where={"anio": "2024"})) == ["e1", "e3"]
    assert _ids(engine.search(ALL, where={"anio": 2023})) == ["e2"]
    assert engine.search(ALL, where={"anio": "2024.0"}) == []
    assert _ids(engine.search(ALL, where={"nota": "7.5"})) == ["e3"]
    assert _ids(engine.search(ALL, where={"ok": True})) == ["e1"]
    assert _ids(engine.search(ALL, where={"ok": "true"})) == ["e1"]
    assert _ids(engine.search(ALL, where={"ok": "false"})) == ["e2"]
    assert engine.search(ALL, where={"ok": "verdadero"}) == []
    # ids and sources stay exact
    assert _ids(engine.search(ALL, where={"id": "e1"})) == ["e1"]
    assert engine.search(ALL, where={"id": "E1"}) == []


def test_filter_values_stay_out_of_sql(engine: SearchEngine) -> None:
    for value in ["economia' OR '1'='1", "x') OR 1=1 --", "'); DROP TABLE documents; --"]:
        assert engine.search(ALL, where={"categoria": value}) == []
    assert engine.counts()["documents"] == 3


@given(st.text(max_size=30))
def test_fold_value_is_idempotent_and_ignores_case(text: str) -> None:
    from beto_search.store import fold_value

    once = fold_value(text)
    assert fold_value(once) == once
    assert fold_value(text.upper()) == fold_value(text.lower()) or not text.isascii()


def test_facets_count_what_a_filter_finds(engine: SearchEngine) -> None:
    from beto_search.store import fold_value

    facets = dict(engine.facets(["categoria"])["categoria"])
    assert len(facets) == 2 and facets["deportes"] == 1
    (spelling,) = [v for v in facets if v != "deportes"]
    assert fold_value(spelling) == "economia" and facets[spelling] == 2


def test_unknown_field_is_a_warning_naming_the_fields(engine: SearchEngine) -> None:
    hits = engine.search("tipos", where={"categori": "economia"})
    assert hits == []
    assert len(hits.warnings) == 1
    warning = hits.warnings[0]
    assert "'categori'" in warning and "categoria" in warning and "pais" in warning
    # a field that exists but holds another value is a plain empty result
    assert engine.search("tipos", where={"categoria": "cocina"}).warnings == []


def test_cli_where_folds_and_warns(corpus_index: Path) -> None:
    runner = CliRunner()
    base = ["query", "tipos de interés", "--index", str(corpus_index), "--mode", "lexical"]
    # the README's example: the data says "economía"
    res = runner.invoke(cli, [*base, "--where", "categoria=economia"])
    assert res.exit_code == 0, res.output
    assert "No results." not in res.output and "noticia-002" in res.stdout
    res = runner.invoke(cli, [*base, "--where", "categori=economia"])
    assert res.exit_code == 0
    warning = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "'categori'" in warning[0] and "categoria" in warning[0]
    res = runner.invoke(cli, [*base, "--where", "categori=economia", "--json"])
    out = json.loads(res.stdout)
    assert out["results"] == [] and "'categori'" in out["warnings"][0]


def test_server_where_folds_and_warns(corpus_index: Path, tiny_encoder) -> None:
    pytest.importorskip("fastapi", reason="the server extra (fastapi) is not installed")
    testclient = pytest.importorskip("fastapi.testclient")
    from beto_search.server import ServerSettings, create_app

    app = create_app(ServerSettings(index=str(corpus_index), read_only=True), encoder=tiny_encoder)
    with testclient.TestClient(app, base_url="http://127.0.0.1") as api:  # a host it serves
        q = {"q": "precios", "mode": "lexical"}
        got = api.get("/api/search", params={**q, "where": "categoria:ECONOMIA"}).json()
        assert got["results"] and got["warnings"] == []
        assert {r["metadata"]["categoria"] for r in got["results"]} == {"economía"}
        got = api.post("/api/search", json={**q, "where": {"categori": "economia"}}).json()
        assert got["results"] == [] and "categoria" in got["warnings"][0]

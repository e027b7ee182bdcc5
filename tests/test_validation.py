"""validation.py: what may enter an index as metadata and ids, wherever documents come from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beto_search.errors import InputError
from beto_search.ingest import as_document
from beto_search.readers import ReaderOptions, ReadReport, read_file
from beto_search.validation import (
    MAX_METADATA_DEPTH,
    MAX_METADATA_KEYS,
    check_metadata,
    load_metadata,
)


def nested(depth: int) -> dict:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    assert isinstance(value, dict)
    return value


@pytest.mark.parametrize(
    "metadata",
    [
        {"p": math.nan},
        {"p": math.inf},
        {"p": [1, {"q": -math.inf}]},
        {"p": float("1e400")},
        {"\ud800": 1},
        {"p": "x\udfff"},
        {"p": ["ok", "\ud800"]},
        nested(MAX_METADATA_DEPTH + 1),
        nested(100_000),
        {f"k{i}": i for i in range(MAX_METADATA_KEYS + 1)},
        ["not", "an", "object"],
    ],
)
def test_bad_metadata_is_refused_with_a_sentence(metadata) -> None:
    with pytest.raises(InputError) as exc:
        as_document({"id": "d", "text": "hola", "metadata": metadata})
    message = str(exc.value)
    assert message.endswith(".") and "\n" not in message
    message.encode("utf-8")  # printable: no lone surrogate copied into the sentence


def test_good_metadata_is_kept() -> None:
    meta = {
        "categoria": "economía",
        "n": 3,
        "x": 0.5,
        "ok": True,
        "nada": None,
        "tags": ["a", {"b": [1, 2]}],
    }
    assert as_document({"id": "d", "text": "t", "metadata": meta}).metadata == meta
    assert check_metadata(nested(MAX_METADATA_DEPTH)) == nested(MAX_METADATA_DEPTH)


@given(st.text())
def test_any_text_value_is_accepted_unless_it_holds_a_lone_surrogate(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(InputError):
            check_metadata({"t": text})
    else:
        assert check_metadata({"t": text}) == {"t": text}


def test_ids_differing_only_in_lone_surrogates_are_refused() -> None:
    for doc_id in ("a\ud800", "a\udc00"):
        with pytest.raises(InputError, match="lone surrogate"):
            as_document({"id": doc_id, "text": "hola"})


def test_stored_rows_written_before_the_checks_still_read() -> None:
    assert load_metadata('{"p": NaN, "q": [Infinity, 1e400], "r": "x"}') == {
        "p": None,
        "q": [None, None],
        "r": "x",
    }
    assert load_metadata('{"p": ') == {}
    assert load_metadata("[" * 100_000) == {}
    assert load_metadata(json.dumps(nested(300))) == {}


def _read(path: Path) -> tuple[list, ReadReport]:
    report = ReadReport()
    return list(read_file(path, path.parent, ReaderOptions(), report)), report


def test_jsonl_records_with_bad_metadata_are_skipped_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "notas.jsonl"
    lines = [
        '{"id": "a", "text": "bien", "puntuacion": 4.5}',
        '{"id": "b", "text": "mal", "puntuacion": NaN}',
        '{"id": "c", "text": "mal", "puntuacion": 1e400}',
        '{"id": "d", "text": "mal", "autor": "\\ud800"}',
        '{"id": "e", "text": "mal", "x": ' + "[" * 2000 + "]" * 2000 + "}",
        '{"id": "f", "text": "bien"}',
    ]
    path.write_text("\n".join(lines) + "\n")
    docs, report = _read(path)
    assert [d.id for d in docs] == ["a", "f"]
    reasons = {s.where.rsplit(":", 1)[1]: s.reason for s in report.skips}
    assert set(reasons) == {"2", "3", "4", "5"}
    assert "finite" in reasons["2"] and "finite" in reasons["3"]
    assert "lone surrogate" in reasons["4"] and "deep" in reasons["5"]


def test_json_and_csv_records_are_checked_too(tmp_path: Path) -> None:
    path = tmp_path / "registros.json"
    path.write_text('[{"id": "a", "text": "bien"}, {"id": "b", "text": "mal", "p": Infinity}]')
    docs, report = _read(path)
    assert [d.id for d in docs] == ["a"] and "finite" in report.skips[0].reason
    wide = tmp_path / "ancho.csv"
    columns = ["id", "text"] + [f"c{i}" for i in range(MAX_METADATA_KEYS + 1)]
    row = ["a", "hola"] + ["x"] * (MAX_METADATA_KEYS + 1)
    wide.write_text(",".join(columns) + "\n" + ",".join(row) + "\n")
    docs, report = _read(wide)
    assert docs == [] and str(MAX_METADATA_KEYS) in report.skips[0].reason


def test_cli_ingest_skips_nan_and_verify_stays_ok(cli_run, tmp_path: Path) -> None:
    folder = tmp_path / "datos"
    folder.mkdir()
    (folder / "notas.jsonl").write_text(
        '{"id": "a", "text": "El gato duerme.", "p": 1}\n'
        '{"id": "b", "text": "El perro ladra.", "p": NaN}\n'
    )
    index = tmp_path / "idx"
    result = cli_run("ingest", folder, "--index", index, "--model", cli_run.model)
    assert result.exit_code == 0, result.output
    assert "finite" in result.output or "skipped" in result.output
    assert cli_run("verify", "--index", index).exit_code == 0
    facets = cli_run("query", "gato", "--index", index, "--where", "p=1", "--json")
    assert facets.exit_code == 0 and json.loads(facets.output)["results"][0]["doc_id"] == "a"

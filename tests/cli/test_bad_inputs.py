"""The command line on bad inputs: exit codes, the one-sentence message, the skip summary and
the skip list on stderr (``--strict`` turns skips into a non-zero exit), nothing stored lost.

What a reader does with each kind of bad file is in tests/test_readers.py; huge inputs, Unicode,
duplicate ids and arbitrary queries through the library, in tests/test_engine_inputs.py.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from beto_search import SearchEngine


def ingest(cli_run, index: Path, *args: str, json_out: bool = True):
    res = cli_run(
        "ingest",
        *args,
        "--index",
        index,
        "--model",
        cli_run.model,
        "-q",
        *(["--json"] if json_out else []),
    )
    summary = (
        json.loads(res.stdout.strip().splitlines()[-1]) if json_out and res.stdout.strip() else None
    )
    return res, summary


def stored(index: Path) -> dict[str, dict]:
    with SearchEngine.open(index, create=False) as engine:
        ids = {c.doc_id for batch in engine.iter_chunks() for c in batch}
        return {i: _doc(engine, i) for i in ids}


def _doc(engine: SearchEngine, doc_id: str) -> dict | None:
    """A stored document without its chunk list (id, source, title, text, metadata)."""
    doc = engine.get_document(doc_id)
    if doc is not None:
        del doc["chunks"]
    return doc


def no_traceback(res) -> None:
    assert "Traceback" not in res.output, res.output


def test_encoding_option_reaches_the_reader_and_an_unknown_one_is_a_skip(
    cli_run, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "utf8.txt").write_text("canción de cuna para el niño\n", encoding="utf-8")
    res, summary = ingest(cli_run, tmp_path / "idx", docs, "--encoding", "latin-1")
    assert res.exit_code == 0, res.output
    assert stored(tmp_path / "idx")["utf8.txt"]["text"] == "canciÃ³n de cuna para el niÃ±o\n"
    # an unknown encoding name is a reported skip, not a crash
    res, summary = ingest(cli_run, tmp_path / "idx3", docs, "--encoding", "no-such-codec")
    no_traceback(res)
    assert summary["added"] == 0
    assert [s["where"] for s in summary["skipped"]] == [str(docs / "utf8.txt")]
    assert "no-such-codec" in summary["skipped"][0]["reason"]


def test_skips_are_summarised_by_reason_listed_on_stderr_and_fail_strict(
    cli_run, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    rng = np.random.default_rng(1)
    (docs / "elf.txt").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(64) + bytes(range(256)) * 8)
    (docs / "png.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + rng.bytes(3000))
    (docs / "zip.jsonl").write_bytes(zlib.compress(rng.bytes(5000)) + rng.bytes(5000))
    (docs / "empty.txt").write_bytes(b"")
    (docs / "blank.md").write_text("  \n\t\n   \r\n")
    (docs / "bom-only.txt").write_bytes(b"\xef\xbb\xbf\n")
    (docs / "empty.jsonl").write_text("\n\n")
    (docs / "notext.jsonl").write_text(
        '{"id": "n1", "text": "   "}\n{"id": "n2", "text": "bien"}\n'
    )
    (docs / "good.txt").write_text("Un documento normal sobre la paella valenciana.\n")
    (docs / "image.png").write_bytes(b"\x89PNG")  # not a supported extension: listed, not read
    res, _summary = ingest(cli_run, tmp_path / "idx", docs, json_out=False)
    assert res.exit_code == 0, res.output
    no_traceback(res)
    out = res.stdout
    assert "documents added: 2" in out
    assert "skipped (3): binary file, not text" in out
    assert "skipped (4): empty or whitespace-only" in out
    assert "skipped (1): no text in field 'text'" in out
    assert "skipped (1): unsupported extension .png" in out
    for name in ("elf.txt", "png.txt", "zip.jsonl", "empty.txt", "blank.md", "bom-only.txt"):
        assert str(docs / name) in res.stderr
    assert f"{docs / 'notext.jsonl'}:1: no text in field 'text'" in res.stderr
    assert set(stored(tmp_path / "idx")) == {"good.txt", "n2"}

    strict = cli_run(
        "ingest", docs, "--index", tmp_path / "idx", "--model", cli_run.model, "-q", "--strict"
    )
    assert strict.exit_code == 1
    assert strict.stderr.strip().splitlines()[-1] == "Error: 9 inputs were skipped (--strict)."
    assert "unchanged: 2" in strict.stdout


def test_record_skips_are_listed_with_file_and_line_and_counted_by_reason(
    cli_run, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    lines = [
        '{"id": "a", "text": "primero"}',
        '{"id": "b", "text": "sin cerrar"',
        "[1, 2, 3]",
        "",
        "no es json",
        '{"id": "c", "text": "último"}',
        '{"id": "d", "text": 42}',
        '{"id": "e", "text": "truncado',
    ]
    path = docs / "datos.jsonl"
    path.write_text("\n".join(lines))
    res, summary = ingest(cli_run, tmp_path / "idx", docs)
    assert res.exit_code == 0, res.output
    assert summary["added"] == 2
    assert {s["where"] for s in summary["skipped"]} == {f"{path}:{n}" for n in (2, 3, 5, 7, 8)}
    assert set(stored(tmp_path / "idx")) == {"a", "c"}
    res = cli_run("ingest", docs, "--index", tmp_path / "idx", "--model", cli_run.model, "-q")
    assert f"{path}:5: malformed JSON" in res.stderr
    assert "skipped (3): malformed JSON" in res.stdout


def test_duplicate_ids_last_wins_and_the_summary_counts_them(cli_run, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "dup.jsonl").write_text(
        '{"id": "x", "text": "primera versión"}\n'
        '{"id": "y", "text": "otro documento"}\n'
        '{"id": "x", "text": "segunda versión"}\n'
        '{"id": "x", "text": "versión final"}\n',
        encoding="utf-8",
    )
    res, summary = ingest(cli_run, tmp_path / "idx", docs)
    assert res.exit_code == 0, res.output
    assert summary["duplicates"] == 2 and summary["added"] == 2
    got = stored(tmp_path / "idx")
    assert got["x"]["text"] == "versión final"
    res = cli_run("ingest", docs, "--index", tmp_path / "idx", "--model", cli_run.model, "-q")
    assert "duplicate ids: 2" in res.stdout
    with SearchEngine.open(tmp_path / "idx", create=False) as engine:
        assert engine.counts()["documents"] == 2
        assert len(engine.get_document("x")["chunks"]) == 1


def test_any_query_text_exits_zero_and_a_blank_query_is_one_sentence(
    cli_run, corpus_index: Path
) -> None:
    for q in ['"sin cerrar', "NOT (río", "x" * 10_000, "😀", "-río", "*", "\x00río"]:
        for mode in ("semantic", "lexical", "hybrid"):
            res = cli_run("query", "--index", corpus_index, "--mode", mode, "--json", "--", q)
            assert res.exit_code == 0, res.output
            json.loads(res.stdout)
    for blank in ("   ", "\n\t", "\x00", "\ufeff \x00"):  # nothing left once cleaned
        res = cli_run("query", blank, "--index", corpus_index)
        assert res.exit_code == 1 and "Traceback" not in res.output
        assert res.stderr.strip() == "Error: The query is empty; give some text to search for."

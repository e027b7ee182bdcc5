"""What the CLI says to a first-time user: an empty index, counts, ids that look like paths, and
help texts that tell the truth about defaults."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from beto_search import SearchEngine
from beto_search.cli import cli


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_info_on_an_empty_index_says_so(runner: CliRunner, tmp_path: Path) -> None:
    SearchEngine.open(tmp_path / "empty").close()  # what a first ingest that failed leaves
    res = runner.invoke(cli, ["info", "--index", str(tmp_path / "empty")])
    assert res.exit_code == 0, res.output
    assert "None" not in res.output
    assert res.output.startswith("empty index:") and "beto-search ingest" in res.output
    assert "documents: 0" in res.output


def test_counts_are_singular_or_plural(
    runner: CliRunner, tmp_path: Path, corpus_index: Path
) -> None:
    idx = tmp_path / "idx"
    shutil.copytree(corpus_index, idx)
    res = runner.invoke(cli, ["delete", "faq-01", "--index", str(idx)])
    assert res.exit_code == 0 and res.output.strip() == "deleted 1 document"
    res = runner.invoke(cli, ["delete", "faq-02", "faq-03", "--index", str(idx)])
    assert res.output.strip() == "deleted 2 documents"
    res = runner.invoke(cli, ["delete", "faq-01", "--index", str(idx)])
    assert "deleted 0 documents" in res.output and "no such document: faq-01." in res.output

    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "ok.txt").write_text("Un texto corto.\n\nCon dos líneas de prosa.", encoding="utf-8")
    (bad / "vacio.txt").write_text("", encoding="utf-8")
    res = runner.invoke(cli, ["ingest", str(bad), "--index", str(idx), "--strict", "-q"])
    assert res.exit_code == 1
    assert "1 input was skipped (--strict)." in res.output


def test_similar_with_a_path_hints_at_relative_ids(runner: CliRunner, corpus_index: Path) -> None:
    base = ["similar", "--index", str(corpus_index), "-k", "2"]
    res = runner.invoke(cli, [*base, "corpora/es/literatura/cien-anos-de-soledad.txt"])
    assert res.exit_code == 1
    assert "ids are relative to the ingested folder" in res.output
    assert "try 'literatura/cien-anos-de-soledad.txt'" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    # a bare file name: the stored id that ends with it
    res = runner.invoke(cli, [*base, "cien-anos-de-soledad.txt"])
    assert "try 'literatura/cien-anos-de-soledad.txt'" in res.output
    # a path that matches nothing still says how ids are made
    res = runner.invoke(cli, [*base, "otra/cosa.txt"])
    assert res.exit_code == 1 and "ids are relative to the ingested folder" in res.output
    # an id that is not a path: the plain sentence
    res = runner.invoke(cli, [*base, "no-existe"])
    assert res.exit_code == 1 and "relative" not in res.output
    res = runner.invoke(cli, [*base, "literatura/cien-anos-de-soledad.txt"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("command", ["ingest", "query", "eval"])
def test_precision_help_names_the_real_default(runner: CliRunner, command: str) -> None:
    res = runner.invoke(cli, [command, "--help"], terminal_width=200)
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    help_ = re.search(r"--precision \[[^\]]*\]\s+(.*?)\s+--", text)
    assert help_ is not None, text
    assert "fp32)" not in help_.group(1) and "auto" in help_.group(1)

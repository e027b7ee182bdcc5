"""The command line over a mixed folder: the summary names every file not read, --strict counts
them, --include/--exclude/--max-file-size, and query output names the page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from beto_search.cli import cli


@pytest.fixture
def folder(sample_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "archivo"
    out.mkdir()
    for name in ("informe.pdf", "cifrado.pdf", "escaneado.pdf", "noticia.html", "memoria.docx"):
        shutil.copy(sample_dir / name, out / name)
    (out / ".git" / "objects").mkdir(parents=True)
    for i in range(30):
        (out / ".git" / "objects" / f"{i:02d}").write_bytes(b"\x00")
    (out / ".DS_Store").write_bytes(b"\x00\x01")
    (out / "plano.dwg").write_bytes(b"AC1027")
    return out


@pytest.fixture
def env(tiny_model: Path) -> dict[str, str]:
    return {"BETO_SEARCH_MODEL": str(tiny_model)}


def test_summary_lists_every_file_not_read(folder: Path, tmp_path: Path, env) -> None:
    runner = CliRunner()
    idx = str(tmp_path / "idx")
    res = runner.invoke(cli, ["ingest", str(folder), "--index", idx, "-q"], env=env)
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "files: 3  documents added: 3" in out and "skipped: 5" in out
    for line in (
        "skipped (1): encrypted",
        "skipped (1): no text layer",
        "skipped (1): unsupported extension .dwg",
        "skipped (1): hidden folder",
        "skipped (1): hidden file",
    ):
        assert line in out, line
    assert "cifrado.pdf: encrypted (password-protected PDF" in res.stderr
    assert "OCR is out of scope" in res.stderr
    assert ".git" not in res.stderr  # hidden ones are counted, not listed one by one

    res = runner.invoke(cli, ["ingest", str(folder), "--index", idx, "-q", "--strict"], env=env)
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines()[-1] == "Error: 5 inputs were skipped (--strict)."
    assert "Traceback" not in res.output

    res = runner.invoke(cli, ["ingest", str(folder), "--index", idx, "--json"], env=env)
    summary = json.loads(res.stdout)
    reasons = {Path(s["where"]).name: s["reason"] for s in summary["skipped"]}
    assert reasons["escaneado.pdf"].startswith("no text layer")
    assert reasons[".git"] == "hidden folder" and summary["excluded"] == 0


def test_query_names_page_in_text_and_json(folder: Path, tmp_path: Path, env) -> None:
    runner = CliRunner()
    idx = str(tmp_path / "idx")
    res = runner.invoke(cli, ["ingest", str(folder), "--index", idx, "-q"], env=env)
    assert res.exit_code == 0, res.output
    args = ["query", "pingüinos del acuario sardinas", "--index", idx, "--mode", "lexical"]
    res = runner.invoke(cli, [*args, "-k", "1"], env=env)
    assert res.exit_code == 0, res.output
    assert "informe.pdf" in res.output and "(p. 3)" in res.output.splitlines()[0]
    res = runner.invoke(cli, [*args, "-k", "1", "--json"], env=env)
    assert json.loads(res.stdout)["results"][0]["page"] == 3
    res = runner.invoke(
        cli, ["query", "cuota", "--index", idx, "--where", "autor=José Peñalver"], env=env
    )
    assert res.exit_code == 0 and "memoria.docx" in res.output
    assert "§ Capítulo 1 › Artículo 2" in res.output


def test_include_exclude_and_max_file_size(folder: Path, tmp_path: Path, env) -> None:
    runner = CliRunner()
    idx = str(tmp_path / "idx")
    args = ["ingest", str(folder), "--index", idx, "-q", "--json"]
    res = runner.invoke(
        cli, [*args, "--include", "*.pdf", "--exclude", "cifrado*", "--exclude", "esc*"], env=env
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["added"] == 1 and summary["excluded"] == 5  # 2 pdf, html, docx, dwg
    assert {Path(s["where"]).name for s in summary["skipped"]} == {".git", ".DS_Store"}

    res = runner.invoke(cli, [*args, "--max-file-size", "10k"], env=env)
    summary = json.loads(res.stdout)
    too_large = [s for s in summary["skipped"] if s["reason"].startswith("too large")]
    assert [Path(s["where"]).name for s in too_large] == ["memoria.docx"]
    assert "> --max-file-size 10.0 kB" in too_large[0]["reason"]

    res = runner.invoke(cli, [*args, "--max-file-size", "mucho"], env=env)
    assert res.exit_code == 1 and "'mucho' is not a size" in res.output
    assert "Traceback" not in res.output

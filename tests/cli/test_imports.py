"""What importing the command line costs, and how its modules depend on each other."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from click.testing import CliRunner

from beto_search.cli import cli
from tests.paths import ROOT

# the training code and the libraries it needs: a command that trains imports them, nothing else
HEAVY = ("torch", "sentence_transformers", "beto_search.quality.adapt")


def test_importing_the_cli_loads_no_training_code() -> None:
    code = (
        "import sys, beto_search.cli\n"
        "training = sys.modules.get('beto_search.quality.training')\n"
        "loaded = [m for m in sys.argv[1:] if m in sys.modules]\n"
        # the training module itself, or the loop of a training package (its options are light)
        "if training is not None and not hasattr(training, '__path__'): loaded.append('training')\n"
        "loaded += [m for m in ('beto_search.quality.training.loop',) if m in sys.modules]\n"
        "print(','.join(loaded))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, *HEAVY],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "", f"import beto_search.cli loaded {res.stdout.strip()}"


def test_adapt_options_come_from_the_library() -> None:
    """adapt's --method choices and --max-chunks default are read from quality.adapt when
    click needs them: --help shows them, and parsing checks them."""
    from beto_search.quality.adapt import ADAPT_CHUNKS_MAX, DEFAULT_METHOD, METHODS

    runner = CliRunner()
    res = runner.invoke(cli, ["adapt", "--help"])
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert f"[{'|'.join(METHODS)}]" in flat
    assert f"[default: {DEFAULT_METHOD}]" in flat and f"[default: {ADAPT_CHUNKS_MAX};" in flat
    method = next(p for p in cli.commands["adapt"].params if p.name == "method")
    assert list(method.type.choices) == list(METHODS)  # type: ignore[attr-defined]
    res = runner.invoke(cli, ["adapt", "--out", "x", "--method", "nope"])
    assert res.exit_code == 2 and "'nope' is not one of" in res.output


def test_no_command_module_imports_the_package() -> None:
    """The group in cli/__init__ imports the command modules and registers their commands;
    none of them imports it back (no cycle among the cli modules)."""
    folder = ROOT / "beto_search" / "cli"
    for path in sorted(folder.glob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                target = ("." * node.level) + (node.module or "")
                assert target not in (".", "beto_search.cli"), f"{path.name} imports {target}"
                names = {a.name for a in node.names}
                assert not (target == ".." and "cli" in names), f"{path.name} imports ..cli"

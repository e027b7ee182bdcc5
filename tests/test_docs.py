"""The README and docs: they speak of the product only, and their examples run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]

# a figure's machine is described by itself (cores, load), never by who else was using it
OTHERS = re.compile(
    r"other (sessions?|helpers?|jobs|agents?|users)|shared with \d|this session|"
    r"an earlier session|was lent|(helpers?|agents?) (were|was) (running|using)",
    re.IGNORECASE,
)


def test_docs_describe_machines_not_who_shared_them() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in DOCS
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if OTHERS.search(line)
    ]
    assert not found, "\n".join(found)


EXAMPLE = ROOT / "examples" / "library.py"


def test_readme_library_example_is_the_script() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Library\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```\n", section, re.DOTALL)
    assert block is not None, "the README's Library section has no python block"
    assert block.group(1) == EXAMPLE.read_text(encoding="utf-8")


@pytest.mark.slow
def test_library_example_runs_offline_top_to_bottom(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    env.pop("BETO_SEARCH_MODEL", None)
    res = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # the script finds the corpus from its own path, not the working folder
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert lines[0].startswith("1 ") and " a1 Macondo " in lines[0]  # its own words rank it first
    assert "a1" in lines and any("no document has the field 'autr'" in x for x in lines)
    assert lines[-1] == "(1, 32)"  # the demo model's dimension
    assert not list(tmp_path.glob("beto-search-example-*"))  # it cleans up after itself

"""The README and docs: they speak of the product only, and their examples run."""

from __future__ import annotations

import re

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

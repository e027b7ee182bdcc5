"""The format table: every extension has a reader; a missing library is a skip naming the
exact ``pip install``; locations turn into a hit's page or section."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from beto_search.errors import InputError
from beto_search.formats import FORMATS, read_format
from beto_search.readers import ReaderOptions, ReadReport, read_file
from beto_search.types import locate


def test_every_extension_has_a_reader() -> None:
    assert {".pdf", ".html", ".htm", ".xhtml", ".docx", ".odt", ".epub"} <= set(FORMATS)


def test_missing_library_names_the_pip_install(
    sample_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pypdfium2" else real(name, *a),
    )
    with pytest.raises(InputError, match=r"^needs pypdfium2 to read PDF \(pip install pypdfium2\)"):
        read_format(sample_dir / "informe.pdf")
    report = ReadReport()
    assert not list(read_file(sample_dir / "informe.pdf", sample_dir, ReaderOptions(), report))
    assert report.skips[0].reason.startswith("needs pypdfium2")


def test_locate_pages_and_sections() -> None:
    pages = [(0, {"page": 1}), (100, {"page": 2}), (200, {"page": 3})]
    assert locate(pages, 10, 50) == {"page": 1}
    assert locate(pages, 90, 150) == {"pages": [1, 2]}
    assert locate(pages, 200, 210) == {"page": 3}
    sections = [(20, {"section": "A"}), (100, {"section": "A › B"})]
    assert locate(sections, 0, 10) == {}  # before the first heading: no section
    assert locate(sections, 50, 150) == {"section": "A"}
    assert locate(sections, 120, 130) == {"section": "A › B"}
    assert locate([], 0, 10) == {}

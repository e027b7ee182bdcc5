"""Readers leave process-wide state alone (issue 9, finding 6)."""

from __future__ import annotations

import csv
from pathlib import Path

from beto_search.readers import ReaderOptions, ReadReport, read_file


def test_csv_reading_keeps_the_global_field_size_limit(tmp_path: Path) -> None:
    big = "palabra " * 40_000  # 320 000 characters: above csv's default 131 072 field limit
    path = tmp_path / "big.csv"
    path.write_text(f'id,text\nbig,"{big}"\nsmall,pequeño\n', encoding="utf-8")
    before = csv.field_size_limit()
    report = ReadReport()
    docs = read_file(path, tmp_path, ReaderOptions(), report)
    first = next(docs)
    assert csv.field_size_limit() == before  # also while the reader is suspended mid-file
    rest = list(docs)
    assert [d.id for d in [first, *rest]] == ["big", "small"]
    assert len(first.text) > 131_072 and not report.skips
    assert csv.field_size_limit() == before

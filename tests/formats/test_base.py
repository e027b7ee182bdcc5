"""The text builder: every location points at the start of its part, whatever the text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from beto_search.formats.base import TextBuilder, iso_date
from beto_search.types import locate

spanish = st.text(alphabet="abcdeñóáíúü¿?¡! \n\u0301", max_size=40)
parts = st.lists(st.tuples(st.integers(0, 3), spanish), max_size=12)


@given(parts)
def test_page_locations_point_at_their_text(items: list[tuple[int, str]]) -> None:
    b = TextBuilder()
    for page, (_, text) in enumerate(items, start=1):
        b.locate({"page": page})
        b.block(text)
    text = b.text()
    locations = b.finished_locations()
    assert [o for o, _ in locations] == sorted({o for o, _ in locations})
    for offset, loc in locations:
        assert 0 <= offset < len(text) and not text[offset].isspace()
        assert locate(locations, offset, offset + 1) == {"page": loc["page"]}


@given(parts)
def test_heading_paths_nest(items: list[tuple[int, str]]) -> None:
    b = TextBuilder()
    for level, text in items:
        if level:
            b.heading(level, text)
        else:
            b.block(text)
    text = b.text()
    for offset, loc in b.finished_locations():
        last = loc["section"].split(" › ")[-1]
        assert text[offset:].startswith(last)


def test_iso_dates() -> None:
    assert iso_date("D:20240305101500+01'00'") == "2024-03-05"
    assert iso_date("2022-11-20T18:00:00") == "2022-11-20"
    assert iso_date("ayer") is None and iso_date("") is None

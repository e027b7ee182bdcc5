"""Fusion math checked by hand on a small example."""

from __future__ import annotations

import pytest

from beto_search.fusion import convex, min_max, rrf


def test_rrf_by_hand() -> None:
    dense = [1, 2, 3]
    lexical = [3, 1]
    got = rrf([dense, lexical], k=60)
    assert got[1] == pytest.approx(1 / 61 + 1 / 62)
    assert got[2] == pytest.approx(1 / 62)
    assert got[3] == pytest.approx(1 / 63 + 1 / 61)
    assert sorted(got, key=lambda i: -got[i]) == [1, 3, 2]


def test_min_max() -> None:
    assert min_max({1: 2.0, 2: 4.0, 3: 3.0}) == {1: 0.0, 2: 1.0, 3: 0.5}
    assert min_max({1: 5.0}) == {1: 1.0}
    assert min_max({}) == {}


def test_convex_by_hand() -> None:
    dense = {1: 0.9, 2: 0.5, 3: 0.7}  # normalised: 1.0, 0.0, 0.5
    lexical = {3: 10.0, 4: 2.0}  # normalised: 1.0, 0.0
    got = convex(dense, lexical, alpha=0.3)
    assert got[1] == pytest.approx(0.3 * 1.0)
    assert got[2] == pytest.approx(0.0)
    assert got[3] == pytest.approx(0.3 * 0.5 + 0.7 * 1.0)
    assert got[4] == pytest.approx(0.0)
    assert convex(dense, lexical, 1.0)[1] == pytest.approx(1.0)

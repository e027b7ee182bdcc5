"""Fixtures of the index core's unit tests: an ``IndexContext`` on the fake encoder, no engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from beto_search.index.context import IndexContext
from beto_search.testing import SPANISH_WORDS
from tests.encoders import HashEncoder


def records(n: int, start: int = 0) -> list[dict[str, object]]:
    """``n`` short Spanish documents, ids ``d<start>`` on, with a ``par`` metadata field."""
    out = []
    for i in range(start, start + n):
        words = [SPANISH_WORDS[(i * 7 + j) % len(SPANISH_WORDS)] for j in range(12)]
        text = f"Documento {i}: " + " ".join(words) + "."
        out.append({"id": f"d{i}", "text": text, "metadata": {"par": str(i % 2 == 0).lower()}})
    return out


@pytest.fixture
def index_ctx(tmp_path: Path, hash_encoder: HashEncoder) -> Iterator[IndexContext]:
    """A new, empty index on the hash encoder."""
    ctx = IndexContext.open(tmp_path / "idx", hash_encoder)
    yield ctx
    ctx.close()

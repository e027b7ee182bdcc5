"""``IndexContext``: the manifest state, the encoders per generation, the per-thread analyzer."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from beto_search.errors import ManifestMismatchError
from beto_search.index.context import IndexContext
from beto_search.index.indexer import Indexer
from beto_search.index.reembed import reembed
from beto_search.testing import encoder_factory
from tests.encoders import HashEncoder
from tests.index.conftest import records


class OtherHash(HashEncoder):
    """Another model: another name and dimension."""

    name = "other-hash"
    dimension = 48


def test_refresh_drops_the_encoders_of_an_old_generation(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    old, new = HashEncoder(), OtherHash()
    with encoder_factory(old):  # built from the manifest (not given): follows a re-embed
        reader = IndexContext.open(folder)
        writer = IndexContext.open(folder, old)
        Indexer(writer).add(records(5), False, None)
        assert reader.refresh().generation == 0 and reader.encoder is old
        reembed(writer, new)
        assert writer.encoder is new and writer.manifest.generation == 1
    with encoder_factory(new):
        assert reader.encoder is old  # not refreshed yet: the old generation's
        m = reader.refresh()
        assert m.generation == 1 and m.encoder == "other-hash"
        assert reader.encoders.full is None and reader.encoders.query is None  # dropped
        assert reader.encoder is new and reader.query_encoder is new
    for ctx in (reader, writer):
        ctx.close()


def test_a_given_encoder_of_the_old_model_is_refused_at_every_call(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    old = HashEncoder()
    writer = IndexContext.open(folder, old)
    Indexer(writer).add(records(5), False, None)
    given = IndexContext.open(folder, HashEncoder())
    assert given.refresh().generation == 0
    reembed(writer, OtherHash())
    for _ in range(2):  # as opening the index with it would be, again and again
        with pytest.raises(ManifestMismatchError, match="other-hash"):
            given.refresh()
    with pytest.raises(ManifestMismatchError):  # and opening it with it is refused
        IndexContext.open(folder, HashEncoder())
    given.close()
    writer.close()


def test_the_analyzer_is_per_thread(index_ctx: IndexContext) -> None:
    mine = index_ctx.analyzer
    assert index_ctx.analyzer is mine
    others: list[object] = []
    thread = threading.Thread(target=lambda: others.append(index_ctx.analyzer))
    thread.start()
    thread.join()
    assert others and others[0] is not mine
    assert mine.analyze("Los ríos") == others[0].analyze("Los ríos")  # type: ignore[attr-defined]

"""``Indexer`` on an ``IndexContext`` with the fake encoder (no engine): what a write stores."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pytest

from beto_search.encoder import normalize_rows
from beto_search.errors import LockTimeoutError
from beto_search.index.context import IndexContext
from beto_search.index.indexer import Indexer
from beto_search.index.locking import WriteLock
from tests.encoders import HashEncoder
from tests.index.conftest import records


def _chunks(ctx: IndexContext) -> list[Any]:
    return [c for batch in ctx.store.iter_chunks() for c in batch]


def test_add_stores_rows_chunks_fts_and_the_encoders_vectors(
    index_ctx: IndexContext, hash_encoder: HashEncoder
) -> None:
    docs = records(5)
    summary = Indexer(index_ctx).add(docs, False, None)
    assert (summary.added, summary.updated, summary.unchanged) == (5, 0, 0)
    m = index_ctx.manifest  # created by the first write, for the given encoder
    assert m is not None and m.encoder == hash_encoder.name and m.dimension == 64
    counts = index_ctx.store.counts()
    assert counts == {"documents": 5, "chunks": summary.chunks, "embeddings": summary.chunks}
    chunks = _chunks(index_ctx)
    assert {c.doc_id for c in chunks} == {d["id"] for d in docs}
    ids, vectors = index_ctx.store.embeddings([c.chunk_id for c in chunks], 64)
    text = {c.chunk_id: c.text for c in chunks}
    expected = normalize_rows(HashEncoder().encode_documents([text[int(i)] for i in ids]))
    np.testing.assert_allclose(vectors, expected, rtol=1e-6, atol=1e-6)
    # every chunk is in the lexical (FTS) index under its own words
    for c in chunks:
        match = index_ctx.analyzer.fts_query(c.text.split(":")[0])  # "Documento <i>"
        assert match is not None
        assert c.chunk_id in dict(index_ctx.store.lexical(match, 50))
    assert index_ctx.store.document("d3")["metadata"] == {"par": "false"}


def test_adding_the_same_content_again_encodes_nothing(
    index_ctx: IndexContext, hash_encoder: HashEncoder
) -> None:
    Indexer(index_ctx).add(records(6), False, None)
    calls = hash_encoder.calls
    summary = Indexer(index_ctx).add(records(6), False, None)
    assert summary.unchanged == 6 and summary.added == summary.updated == summary.chunks == 0
    assert hash_encoder.calls == calls
    changed = records(6)
    changed[2]["text"] = "Otro texto del documento dos."
    summary = Indexer(index_ctx).add(changed, False, None)
    assert (summary.updated, summary.unchanged) == (1, 5)
    assert hash_encoder.calls == calls + 1  # only the changed document's batch


def test_a_custom_embedder_gets_every_batch(
    index_ctx: IndexContext, hash_encoder: HashEncoder
) -> None:
    given: list[list[str]] = []

    def embedder(batches: Iterable[Any]) -> Iterator[np.ndarray]:
        for batch in batches:
            given.append(list(batch))
            yield HashEncoder().encode_documents(list(batch))

    Indexer(index_ctx).add(records(1, start=1000), False, None)  # the manifest (a probe)
    calls = hash_encoder.calls
    summary = Indexer(index_ctx).add(records(300), False, embedder)  # several transactions
    assert len(given) > 1
    assert sum(len(b) for b in given) == summary.chunks == index_ctx.store.chunk_count() - 1
    assert sorted(t for b in given for t in b) == sorted(
        c.text for c in _chunks(index_ctx) if c.doc_id != "d1000"
    )
    assert hash_encoder.calls == calls  # the embedder made every vector


def test_the_write_lock_is_held_while_writing(index_ctx: IndexContext) -> None:
    Indexer(index_ctx).add(records(2), False, None)  # the manifest exists: only writes remain
    refused: list[bool] = []

    def embedder(batches: Iterable[Any]) -> Iterator[np.ndarray]:
        for batch in batches:
            try:
                with WriteLock(index_ctx.folder, 0.0):
                    refused.append(False)
            except LockTimeoutError:
                refused.append(True)
            yield HashEncoder().encode_documents(list(batch))

    Indexer(index_ctx).add(records(3, start=10), False, embedder)
    assert refused == [True]
    with WriteLock(index_ctx.folder, 0.0):  # released when the write ends
        pass
    with pytest.raises(LockTimeoutError), WriteLock(index_ctx.folder, 0.0):
        Indexer(index_ctx).delete(["d0"])  # a write waits for the lock (here: 0 s)
    assert index_ctx.store.hashes(["d0"])  # and changed nothing


def test_delete_and_add_embeddings(index_ctx: IndexContext) -> None:
    Indexer(index_ctx).add(records(3), False, None)
    assert Indexer(index_ctx).delete(["d1", "nope"]) == ["d1"]
    vectors = HashEncoder().encode_documents(["uno", "dos"])
    summary = Indexer(index_ctx).add_embeddings(
        [{"id": "v1", "text": "uno"}, {"id": "v2", "text": "dos"}], vectors
    )
    assert summary.added == 2 and index_ctx.store.counts()["documents"] == 4
    from beto_search.errors import InputError

    with pytest.raises(InputError, match="expected vectors of shape"):
        Indexer(index_ctx).add_embeddings([{"id": "v3", "text": "tres"}], vectors)

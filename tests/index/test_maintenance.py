"""``Maintenance`` on an ``IndexContext`` with the fake encoder (no engine): info, verify,
compact, the default fusion."""

from __future__ import annotations

from beto_search.index.context import IndexContext
from beto_search.index.indexer import Indexer
from beto_search.index.maintenance import Maintenance
from tests.index.conftest import records


def test_info_keys(index_ctx: IndexContext) -> None:
    upkeep = Maintenance(index_ctx)
    empty = upkeep.info()
    assert empty["documents"] == 0 and empty["encoder"] is None
    Indexer(index_ctx).add(records(4), False, None)
    info = upkeep.info()
    assert info.keys() >= {
        "index", "documents", "seq", "chunks", "encoder", "dimension", "index_type",
        "fusion", "fusion_explained", "generation", "reembed_pending", "staged",
        "bytes_on_disk", "files",
    }  # fmt: skip
    assert (info["documents"], info["encoder"], info["dimension"]) == (4, "test-hash-encoder", 64)
    assert info["chunks"] == index_ctx.store.chunk_count() and info["reembed_pending"] is None
    assert "library default" in info["fusion_explained"] and info["fusion"] is None
    upkeep.set_default_fusion({"method": "rrf", "alpha": 0.5})
    assert index_ctx.refresh().fusion == {"method": "rrf", "alpha": 0.5}
    assert "rrf" in upkeep.info()["fusion_explained"]


def test_verify_clean_then_dirty_then_repaired(index_ctx: IndexContext) -> None:
    upkeep = Maintenance(index_ctx)
    Indexer(index_ctx).add(records(6), False, None)
    assert upkeep.verify() == []
    chunk = index_ctx.store.doc_chunk_ids("d2")[0]
    with index_ctx.store.write():  # a vector lost behind the index's back
        index_ctx.store.conn.execute("DELETE FROM embeddings WHERE chunk_id = ?", (chunk,))
    problems = upkeep.verify()
    assert any("no vector of dimension 64" in p for p in problems)
    assert upkeep.repair()["reencoded"] == 1
    assert upkeep.verify() == []


def test_compact_drops_history_and_reclaims_space(index_ctx: IndexContext) -> None:
    upkeep = Maintenance(index_ctx)
    Indexer(index_ctx).add(records(30), False, None)
    Indexer(index_ctx).delete([f"d{i}" for i in range(20)])
    assert index_ctx.store.history_floor() == 0
    out = upkeep.compact()
    assert out.keys() == {"bytes_before", "bytes_after", "staged_chunks_dropped"}
    assert index_ctx.store.history_floor() == index_ctx.store.seq() > 0
    assert upkeep.verify() == [] and index_ctx.store.counts()["documents"] == 10

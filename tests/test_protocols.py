"""``beto_search.protocols``: both engines fit the protocols that quality/, server/ and
distributed.py type them by.

The annotated assignments below are what mypy checks (``mypy beto_search tests/test_protocols.py``;
the last test runs that check here too): a method renamed or re-typed in ``SearchEngine`` or
``ShardedEngine`` and not in the protocol, or the other way round, fails. Under pytest the same
assignments run, and the protocol-typed names are used the way quality/ uses them.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from beto_search import SearchEngine
from beto_search.protocols import (
    EncoderSource,
    EngineLike,
    Reads,
    Searchable,
    Served,
    StoreView,
    Writable,
)
from beto_search.quality.evaluation import EvalSet, Query, evaluate
from beto_search.shards import ShardedEngine
from tests.encoders import HashEncoder
from tests.paths import ROOT

PROTOCOLS = (StoreView, EncoderSource, Reads, Searchable, Writable, EngineLike, Served)
RECORDS = [
    {"id": "a", "title": "Gatos", "text": "El gato duerme en el sofá toda la tarde."},
    {"id": "b", "title": "Perros", "text": "El perro ladra al cartero por la mañana."},
    {"id": "c", "title": "Gatos", "text": "Los gatos cazan ratones en el granero."},
]


def members(protocol: type) -> set[str]:
    """The names a protocol declares, its bases' included."""
    out: set[str] = set()
    for cls in protocol.__mro__:
        if cls in PROTOCOLS:
            out |= {n for n in vars(cls) if not n.startswith("_")}
            out |= set(getattr(cls, "__annotations__", {}))
    return out


def flat_engine(folder: Path) -> SearchEngine:
    engine = SearchEngine.open_folder(folder, HashEncoder())
    engine.add(RECORDS)
    return engine


def sharded_engine(folder: Path) -> ShardedEngine:
    engine = ShardedEngine.open(
        folder, HashEncoder(), open_shard=SearchEngine.open_folder, shards=2
    )
    engine.add(RECORDS)
    return engine


def use(engine: EngineLike) -> None:
    """What quality/ does with an engine, through the protocol only."""
    assert engine.refresh() is not None and engine.manifest is not None
    with engine.store.snapshot():
        assert set(engine.store.hashes(["a", "b", "zz"])) == {"a", "b"}
    assert engine.store.chunk_count() == 3
    assert sorted(d for _, d in engine.store.ids_by_title(["Gatos"])) == ["a", "c"]
    assert [c.doc_id for batch in engine.iter_chunks() for c in batch] != []
    dense, lexical, doc_of = engine.candidates(["gato"], 5)
    assert set(doc_of.values()) <= {"a", "b", "c"} and dense[0] and lexical[0]
    assert engine.analyzer.terms("gatos") and engine.folder.is_dir()
    assert engine.encoder.encode_documents(["x"]).shape[1] == engine.query_encoder.dimension
    es = EvalSet({"q": Query("q", "gato sofá")}, {"q": {"a": 1}})
    assert evaluate(engine, es, mode="lexical", k=3).modes["lexical"]["ndcg@10"] == 1.0


def test_a_flat_engine_is_every_protocol(tmp_path: Path) -> None:
    flat = flat_engine(tmp_path / "flat")
    engine: EngineLike = flat
    reads: Searchable = flat
    writes: Writable = flat
    source: EncoderSource = flat
    store: StoreView = flat.store
    served: Served = flat  # what the server holds
    try:
        use(engine)
        assert served.facets(limit=5) == reads.facets(None, 5)
        assert reads.search("perro", k=1)[0].doc_id == "b"
        assert writes.delete(["b"]) == ["b"]
        assert source.manifest is not None and store.chunk_count() == 2
    finally:
        flat.close()


def test_a_sharded_engine_is_every_protocol(tmp_path: Path) -> None:
    sharded = sharded_engine(tmp_path / "sharded")
    engine: EngineLike = sharded
    reads: Searchable = sharded
    writes: Writable = sharded
    source: EncoderSource = sharded
    store: StoreView = sharded.store
    served: Served = sharded  # what the server holds
    try:
        use(engine)
        assert served.facets(limit=5) == reads.facets(None, 5)
        assert reads.search("perro", k=1)[0].doc_id == "b"
        assert writes.delete(["b"]) == ["b"]
        assert source.manifest is not None and store.chunk_count() == 2
    finally:
        sharded.close()


def test_what_open_returns_is_engine_like(tmp_path: Path) -> None:
    """``SearchEngine.open`` returns either engine; the union fits (mypy checks both arms)."""
    for shards in (None, 2):
        opened = SearchEngine.open(tmp_path / f"idx-{shards}", HashEncoder(), shards=shards)
        engine: EngineLike = opened
        with opened:
            engine.add(RECORDS)
            use(engine)


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.__name__)
def test_every_protocol_member_is_a_public_member_of_both_engines(protocol: type) -> None:
    """A protocol names only public methods both engines have, with the same parameters."""
    targets = {"SearchEngine": SearchEngine, "ShardedEngine": ShardedEngine}
    if protocol is StoreView:
        from beto_search.index.store import Store
        from beto_search.shards import ShardedStore

        targets = {"Store": Store, "ShardedStore": ShardedStore}
    for name in sorted(members(protocol)):
        spec = getattr(protocol, name, None)
        for label, cls in targets.items():
            if name in ("folder", "store"):  # set in __init__, or read through to SearchEngine.ctx
                assert hasattr(cls, name) or f"self.{name}" in inspect.getsource(cls), (label, name)
                continue
            assert hasattr(cls, name), f"{label} has no {name} ({protocol.__name__})"
            if inspect.isfunction(spec):
                params = inspect.signature(spec).parameters.values()
                wanted = [p.name for p in params if p.kind is not p.KEYWORD_ONLY]
                by_name = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
                have = list(inspect.signature(getattr(cls, name)).parameters)
                assert have[: len(wanted)] == wanted, (label, name, have, wanted)
                assert set(by_name) <= set(have), (label, name, have, by_name)


@pytest.mark.slow
def test_mypy_checks_the_assignments_above() -> None:
    """The assignments of this file type-check: both engines fit every protocol statically."""
    api = pytest.importorskip("mypy.api")
    out, err, status = api.run([str(Path(__file__)), "--config-file", str(ROOT / "pyproject.toml")])
    assert status == 0, out + err

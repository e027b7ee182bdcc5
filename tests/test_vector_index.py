"""VectorIndex (flat / hnsw / ivf): add, remove, search, selectors, per-query knobs, save/load,
auto switching, and the engine's vector path (add_embeddings, deletes, tombstones, compact)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from beto_search import vector_index as vx
from beto_search.errors import InputError
from beto_search.vector_index import IndexSpec, SearchParams, VectorIndex, checkpoints

DIM = 16
N = 3000


def _unit(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _spec(kind: str, quantizer: str = "Flat") -> IndexSpec:
    return IndexSpec(
        type=kind,
        nlist=32,
        nprobe=32,
        hnsw_m=16,
        ef_construction=80,
        ef_search=64,
        quantizer=quantizer,
    )


def _built(
    kind: str, quantizer: str = "Flat", n: int = N
) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    data = _unit(n, 0)
    ids = np.arange(n, dtype=np.int64) + 100  # ids are not positions
    vi = VectorIndex.build(_spec(kind, quantizer), DIM, n, None if kind == "flat" else data)
    vi.add(ids, data)
    return vi, ids, data


def _exact(data: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(data @ q.T), axis=0)[:k].T]


KINDS = ["flat", "hnsw", "ivf"]


@pytest.mark.parametrize("kind", KINDS)
def test_search_finds_each_vector_itself(kind: str) -> None:
    vi, ids, data = _built(kind)
    assert vi.kind == kind and vi.ntotal == N and vi.live == N
    scores, found = vi.search(data[:200], 5)
    assert found.shape == (200, 5) and scores.dtype == np.float32
    assert np.mean(found[:, 0] == ids[:200]) >= 0.98
    assert sorted(vi.ids().tolist()) == ids.tolist()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("quantizer", ["Flat", "SQ8"])
def test_recall_against_exact(kind: str, quantizer: str) -> None:
    if kind == "flat" and quantizer == "SQ8":
        pytest.skip("flat is always exact float32")
    vi, ids, data = _built(kind, quantizer)
    q = _unit(50, 7)
    _, found = vi.search(q, 10, params=SearchParams(ef_search=200))
    truth = _exact(data, ids, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    assert recall >= 0.9


@pytest.mark.parametrize("kind", KINDS)
def test_removed_ids_are_never_returned(kind: str) -> None:
    vi, ids, data = _built(kind)
    gone = ids[:500]
    vi.remove(gone)
    if kind == "hnsw":
        assert vi.tombstones == set(gone.tolist()) and vi.ntotal == N
    else:
        assert not vi.tombstones and vi.ntotal == N - 500
    assert vi.live == N - 500
    _, found = vi.search(data[:500], 10)
    assert not set(found.ravel().tolist()) & set(gone.tolist())
    _, found = vi.search(data[500:600], 1)
    assert np.mean(found[:, 0] == ids[500:600]) >= 0.98


@pytest.mark.parametrize("kind", KINDS)
def test_allowed_ids_restrict_results(kind: str) -> None:
    vi, ids, data = _built(kind)
    allowed = ids[::7]
    q = _unit(20, 3)
    _, found = vi.search(q, 10, allowed=allowed, params=SearchParams(ef_search=400))
    got = found[found >= 0]
    assert len(got) and set(got.tolist()) <= set(allowed.tolist())
    # the allowed vectors themselves are found
    _, found = vi.search(data[::7][:20], 1, allowed=allowed, params=SearchParams(ef_search=400))
    assert np.mean(found[:, 0] == allowed[:20]) >= 0.95


@pytest.mark.parametrize("kind", KINDS)
def test_allowed_ids_and_removals_together(kind: str) -> None:
    vi, ids, data = _built(kind)
    vi.remove(ids[:10])
    allowed = ids[:20]
    _, found = vi.search(data[:20], 20, allowed=allowed, params=SearchParams(ef_search=400))
    got = set(found[found >= 0].tolist())
    assert got <= set(ids[10:20].tolist())
    _, found = vi.search(data[:1], 5, allowed=ids[:10])  # only removed ids allowed: nothing
    assert (found == -1).all()


def test_ivf_nprobe_per_query() -> None:
    vi, ids, data = _built("ivf")
    q = _unit(30, 5)
    truth = _exact(data, ids, q, 10)
    _, all_lists = vi.search(q, 10, params=SearchParams(nprobe=32))  # every list: exact
    np.testing.assert_array_equal(np.sort(all_lists, axis=1), np.sort(truth, axis=1))
    _, one_list = vi.search(q, 10, params=SearchParams(nprobe=1))
    recall_one = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(one_list, truth)])
    assert recall_one < 1.0  # fewer lists probed really is cheaper and approximate


def test_hnsw_ef_search_per_query(monkeypatch: pytest.MonkeyPatch) -> None:
    vi, ids, data = _built("hnsw")
    seen: list[int] = []
    real = vx.faiss.SearchParametersHNSW

    def spy(**kw):
        seen.append(kw["efSearch"])
        return real(**kw)

    monkeypatch.setattr(vx.faiss, "SearchParametersHNSW", spy)
    vi.search(data[:1], 10, params=SearchParams(ef_search=300))
    vi.search(data[:1], 10)
    vi.search(data[:1], 50, params=SearchParams(ef_search=20))  # never below k
    assert seen == [300, 64, 50]
    q = _unit(30, 5)
    _, found = vi.search(q, 10, params=SearchParams(ef_search=500))
    truth = _exact(data, ids, q, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]) >= 0.98


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_round_trip(kind: str, tmp_path: Path) -> None:
    vi, ids, _ = _built(kind, "SQ8" if kind != "flat" else "Flat")
    vi.remove(ids[:5])
    vi.seq = 42
    path = vi.save(tmp_path)
    assert path.name == "vectors-000000000042.faiss" and checkpoints(tmp_path)[0][1] == path
    assert not list(tmp_path.glob(".vectors-*"))  # no temporary file left
    back = VectorIndex.load(path, 42, DIM, vi.spec)
    assert back.kind == kind and back.ntotal == vi.ntotal
    q = _unit(10, 9)
    if kind == "hnsw":  # tombstones live in SQLite, not in the file: the engine passes them back
        back.tombstones = set(vi.tombstones)
    np.testing.assert_array_equal(back.search(q, 10)[1], vi.search(q, 10)[1])
    vi.seq = 43
    vi.save(tmp_path)
    vi.seq = 44
    vi.save(tmp_path)
    # older checkpoints removed, but the previous one is kept for readers one step behind
    assert [s for s, _ in checkpoints(tmp_path)] == [44, 43]
    with pytest.raises(ValueError):
        VectorIndex.load(checkpoints(tmp_path)[0][1], 44, DIM + 1, vi.spec)


def test_auto_choice_and_factories(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = IndexSpec()
    assert spec.concrete(vx.AUTO_FLAT_MAX) == "flat"
    assert spec.concrete(vx.AUTO_FLAT_MAX + 1) == "ivf"
    assert IndexSpec(type="hnsw").concrete(10) == "flat"  # too few vectors to train on
    assert IndexSpec(type="hnsw").concrete(vx.MIN_TRAIN) == "hnsw"
    assert IndexSpec(type="ivf").concrete(vx.MIN_TRAIN) == "ivf"
    assert spec.factory(10) == "IDMap2,Flat"
    assert spec.factory(1_000_000).startswith("IVF") and spec.factory(1_000_000).endswith(",SQ8")
    assert IndexSpec(type="hnsw").factory(5000).startswith("IDMap2,HNSW")
    assert spec.train_size(10**6) <= vx.TRAIN_MAX and spec.train_size(100) == 100
    assert IndexSpec.from_dict(IndexSpec(type="ivf", nprobe=7).to_dict()).nprobe == 7
    with pytest.raises(InputError):
        IndexSpec(type="annoy")
    with pytest.raises(InputError):
        IndexSpec(quantizer="PQ16")
    with pytest.raises(InputError):
        VectorIndex.build(IndexSpec(type="ivf"), DIM, 1000, None)


def test_ivf_grown_far_past_its_training_wants_a_rebuild() -> None:
    data = _unit(2000, 1)
    vi = VectorIndex.build(IndexSpec(type="ivf"), DIM, 2000, data)  # nlist from n = 2000
    vi.add(np.arange(2000), data)
    assert not vi.needs_rebuild()
    more = _unit(8000, 2)
    vi.add(np.arange(2000, 10000), more)
    assert vi.needs_rebuild()


# ----- the engine path ------------------------------------------------------------------------
@pytest.fixture
def engine_factory(tiny_encoder, tmp_path: Path):
    from beto_search import SearchEngine

    opened = []

    def make(index_type: str | None = None):
        eng = SearchEngine.open(tmp_path / "idx", encoder=tiny_encoder, index_type=index_type)
        opened.append(eng)
        return eng

    yield make
    for eng in opened:
        eng.close()


def _records(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"d{i}", "text": f"documento número {i}"} for i in range(start, start + n)]


def test_add_embeddings_dimension_mismatch(engine_factory) -> None:
    eng = engine_factory()
    with pytest.raises(InputError):  # no manifest yet: an encoder must create the index first
        eng.add_embeddings(_records(2), _unit(2, 0, eng.encoder.dimension))
    eng.add([{"id": "seed", "text": "hola mundo"}])
    dim = eng.encoder.dimension
    with pytest.raises(InputError, match="shape"):
        eng.add_embeddings(_records(3), _unit(3, 0, dim + 1))
    with pytest.raises(InputError, match="shape"):
        eng.add_embeddings(_records(3), _unit(2, 0, dim))
    eng.add_embeddings(_records(3), _unit(3, 0, dim))
    assert eng.vectors().ntotal == 4


def test_engine_switches_flat_to_ivf(engine_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vx, "AUTO_FLAT_MAX", 300)
    eng = engine_factory()
    eng.add([{"id": "seed", "text": "hola mundo"}])
    dim = eng.encoder.dimension
    eng.add_embeddings(_records(200), _unit(200, 0, dim))
    assert eng.vectors().kind == "flat"
    vecs = _unit(400, 1, dim)
    eng.add_embeddings(_records(400, 200), vecs)
    vi = eng.vectors()
    assert vi.kind == "ivf" and vi.ntotal == 601
    hits = eng.search("documento", k=3, mode="semantic")
    assert len(hits) == 3
    eng.delete([f"d{i}" for i in range(299, 600)])  # back to the threshold: flat again
    assert eng.vectors().kind == "flat" and eng.vectors().ntotal == 300


def test_engine_hnsw_deletes_tombstones_reload_and_compact(engine_factory) -> None:
    eng = engine_factory("hnsw")
    eng.add([{"id": "seed", "text": "hola mundo"}])
    dim = eng.encoder.dimension
    assert eng.vectors().kind == "flat"  # HNSW over SQ8 codes is trained once there are enough
    vecs = _unit(1500, 4, dim)
    eng.add_embeddings(_records(1500), vecs)
    assert eng.vectors().kind == "hnsw"
    gone = [f"d{i}" for i in range(20)]
    eng.delete(gone)
    vi = eng.vectors()
    assert len(vi.tombstones) == 20 and vi.live == 1481 and not vi.needs_rebuild()
    qvec = vecs[:20]
    _, ids = vi.search(qvec[:1], 50, params=SearchParams())
    dense = [int(i) for i in ids[0] if i >= 0]
    doc_of = {c.chunk_id: c.doc_id for batch in eng.iter_chunks() for c in batch}
    assert all(i in doc_of for i in dense)  # no tombstone comes back
    assert not {doc_of[i] for i in dense} & set(gone)
    assert len(dense) == 50  # tombstones do not eat into the results
    eng.close()

    eng2 = engine_factory()  # reopened: tombstones come back from SQLite, not from the file
    vi2 = eng2.vectors()
    assert vi2.kind == "hnsw" and vi2.tombstones == vi.tombstones and vi2.live == 1481
    hits = eng2.search("documento número 3", k=10, mode="semantic")
    assert hits and not {h.doc_id for h in hits} & set(gone)
    eng2.delete([f"d{i}" for i in range(20, 400)])  # over 20 % dead: rebuilt when saved
    vi3 = eng2.vectors()
    assert vi3.kind == "hnsw" and not vi3.tombstones and vi3.ntotal == vi3.live == 1101
    eng2.delete(["d400"])
    assert len(eng2.vectors().tombstones) == 1
    eng2.compact()
    assert not eng2.vectors().tombstones and eng2.vectors().ntotal == 1100
    assert eng2.verify() == []

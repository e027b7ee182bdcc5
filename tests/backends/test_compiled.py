"""What every compiled precision of BetoEncoder shares (onnx-int8 through ONNX Runtime, ov-int8
through OpenVINO): listed and described, normalised float32 vectors close to torch fp32, padding
invariance, a cache built once, an engine that reopens with the index's precision, CPU only.
Each precision's cases are skipped when its runtime is not installed; what only one backend
does is in test_onnx.py and test_openvino.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from beto_search import SearchEngine
from beto_search.backends.torch import BetoEncoder
from beto_search.encoder import PRECISIONS
from beto_search.errors import InputError
from tests.conftest import SPANISH_TEXTS, encoder_pairs

TEXTS = SPANISH_TEXTS


@dataclass(frozen=True)
class Compiled:
    """One compiled precision and what its cases expect of it."""

    requires: tuple[str, ...]  # runtime modules; the cases skip without them
    backend: str  # the beto_search.backends module
    builder: str  # the backend function that builds the graph (called once per cache key)
    poolings: tuple[str, ...]
    min_cos: float  # lowest cosine to torch fp32 on the tiny model (see test_close_to_torch_fp32)
    graph: str  # the graph's file name
    cache: str  # its folder under BETO_SEARCH_CACHE
    files: frozenset[str]  # files the cache folder holds
    absent: tuple[str, ...] = ()  # what building must not leave behind


COMPILED = {
    "onnx-int8": Compiled(
        requires=("onnxruntime", "onnx"),
        backend="onnx",
        builder="export_onnx",
        # the tiny random model measures 1 - cos < 1e-6 (int8 noise is tiny next to its
        # embeddings); its cls vector is the same for every text, so cls is checked for real by
        # test_onnx.test_pool_semantics
        poolings=("mean", "max", "cls"),
        min_cos=0.999,
        graph="model.onnx",
        cache="onnx",
        files=frozenset({"model.onnx", "model.onnx.data", "tokenizer.json", "encoder.json"}),
        absent=("raw",),  # the unoptimised export is not kept
    ),
    "ov-int8": Compiled(
        requires=("openvino", "nncf"),
        backend="openvino",
        builder="quantize",
        # the tiny random model measures 1 - cos of 1-2e-5 (mean) and 0.3-1e-5 (max) here
        poolings=("mean", "max"),
        min_cos=0.9995,
        graph="model.xml",
        cache="openvino",
        files=frozenset({"model.bin", "model.xml", "tokenizer.json", "encoder.json"}),
    ),
}
# pooling over the padding as well (a masking bug) gives 0.88-0.99 for mean and max here, and
# different texts are 0.86-0.98 apart: every min_cos above tells them apart
BY_POOLING = [(p, pooling) for p, spec in COMPILED.items() for pooling in spec.poolings]


def require(precision: str) -> Compiled:
    """The precision's spec, skipping the case when its runtime is missing."""
    spec = COMPILED[precision]
    for module in spec.requires:
        pytest.importorskip(module)
    return spec


@pytest.fixture(scope="module")
def compiled_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compiled-cache")


@pytest.fixture(autouse=True)
def _cache_env(monkeypatch: pytest.MonkeyPatch, compiled_cache: Path) -> None:
    monkeypatch.setenv("BETO_SEARCH_CACHE", str(compiled_cache))


@pytest.fixture(scope="module")
def pairs(tiny_model: Path, compiled_cache: Path) -> Iterator[Callable[[str], dict]]:
    """``pairs(precision)``: (torch fp32, compiled) encoder pairs per pooling, built once."""
    built: dict[str, dict] = {}
    makers = []

    def get(precision: str) -> dict:
        spec = require(precision)
        if precision not in built:
            maker = encoder_pairs(tiny_model, compiled_cache, precision, spec.poolings)
            built[precision] = next(maker)
            makers.append(maker)
        return built[precision]

    yield get
    for maker in makers:
        maker.close()


@pytest.mark.parametrize("precision", list(COMPILED))
def test_precision_listed_and_described(pairs, precision: str) -> None:
    assert precision in PRECISIONS
    enc = pairs(precision)["mean"][1]
    assert enc.describe()["precision"] == precision
    assert enc.device == "cpu"


@pytest.mark.parametrize("precision", list(COMPILED))
def test_shape_dtype_normalised(pairs, precision: str) -> None:
    enc = pairs(precision)["mean"][1]
    vecs = enc.encode_documents(TEXTS)
    assert vecs.shape == (len(TEXTS), enc.dimension)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert enc.encode_token_ids([]).shape == (0, enc.dimension)


@pytest.mark.parametrize(("precision", "pooling"), BY_POOLING)
def test_close_to_torch_fp32(pairs, precision: str, pooling: str) -> None:
    ref_enc, enc = pairs(precision)[pooling]
    ref, got = ref_enc.encode_documents(TEXTS), enc.encode_documents(TEXTS)
    cos = np.sum(ref * got, axis=1)
    assert cos.min() > COMPILED[precision].min_cos, cos
    assert not np.array_equal(ref, got)  # really a different (quantized) path


@pytest.mark.parametrize(("precision", "pooling"), BY_POOLING)
def test_padding_invariance(pairs, precision: str, pooling: str) -> None:
    enc = pairs(precision)[pooling][1]
    batch = enc.encode_documents(TEXTS)
    alone = np.vstack([enc.encode_documents([t]) for t in TEXTS])
    np.testing.assert_allclose(batch, alone, atol=1e-3)
    assert np.min(np.sum(batch * alone, axis=1)) > 0.9999


@pytest.mark.parametrize("precision", list(COMPILED))
def test_cache_built_once_and_reused(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    import importlib

    spec = require(precision)
    backend = importlib.import_module(f"beto_search.backends.{spec.backend}")
    monkeypatch.setenv("BETO_SEARCH_CACHE", str(tmp_path / "cache"))
    calls = []
    real_build = getattr(backend, spec.builder)

    def counting_build(*a, **k):
        calls.append(1)
        return real_build(*a, **k)

    monkeypatch.setattr(backend, spec.builder, counting_build)
    first = BetoEncoder(str(tiny_model), precision=precision)
    path = first.path
    assert path.name == spec.graph and path.is_file()
    assert path.parent.parent == tmp_path / "cache" / spec.cache
    assert [p.name for p in path.parent.parent.iterdir()] == [path.parent.name]  # no temp folders
    assert spec.files <= {p.name for p in path.parent.iterdir()}
    for name in spec.absent:
        assert not (path.parent / name).exists()
    mtime = path.stat().st_mtime_ns
    second = BetoEncoder(str(tiny_model), pooling="max", precision=precision)
    assert calls == [1]
    assert second.path == path and path.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("precision", list(COMPILED))
def test_engine_end_to_end(tiny_model: Path, tmp_path: Path, precision: str) -> None:
    require(precision)
    folder = tmp_path / "idx"
    docs = [
        {"id": "gabo", "text": TEXTS[1]},
        {"id": "economia", "text": TEXTS[3]},
        {"id": "madrid", "text": TEXTS[4]},
    ]
    with SearchEngine.open(folder, model=str(tiny_model), precision=precision) as engine:
        engine.add(docs)
        assert engine.search("García Márquez Aracataca", k=3, mode="semantic")
        assert engine.manifest["precision"] == precision
    # reopened without a precision: the index's own is used
    with SearchEngine.open(folder, create=False) as engine:
        hits = engine.search("capital de España", k=3, mode="semantic")
        assert {h.doc_id for h in hits} <= {"gabo", "economia", "madrid"} and hits
        assert engine.encoder.precision == precision
        assert engine.manifest["precision"] == precision


@pytest.mark.parametrize("precision", list(COMPILED))
def test_refuses_cuda(tiny_model: Path, monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    import torch

    require(precision)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(InputError, match="CPU only"):
        BetoEncoder(str(tiny_model), precision=precision, device="cuda")

"""precision="onnx-int8": what only the ONNX Runtime int8 backend does (beto_search/backends/onnx.py):
its graph, its input names, its numpy pooling, its cache key, its missing-runtime message. The
cases every compiled precision shares are in test_compiled.py."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from beto_search.backends import onnx as onnx_backend
from beto_search.backends.torch import BetoEncoder
from beto_search.encoder import PRECISIONS
from beto_search.errors import InputError
from tests.conftest import SPANISH_TEXTS, encoder_pairs

TEXTS = SPANISH_TEXTS


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(autouse=True)
def _cache_env(monkeypatch: pytest.MonkeyPatch, onnx_cache: Path) -> None:
    monkeypatch.setenv("BETO_SEARCH_CACHE", str(onnx_cache))


@pytest.fixture(scope="module")
def onnx_encoders(tiny_model: Path, onnx_cache: Path):
    """(torch fp32, onnx-int8) encoder pairs, mean pooling, built with the module's cache."""
    yield from encoder_pairs(tiny_model, onnx_cache, "onnx-int8", ("mean",))


def test_cli_offers_every_precision() -> None:
    from beto_search.cli import ingest

    choices = next(p.type.choices for p in ingest.params if p.name == "precision")
    assert list(choices) == list(PRECISIONS)


def test_graph_is_quantized_with_ffn_output_fp32(onnx_encoders) -> None:
    import onnx

    model = onnx.load(str(onnx_encoders["mean"][1].path))
    ops = [n.op_type for n in model.graph.node]
    layers = 2  # the tiny model: q, k, v, attention output, FFN input quantized per layer
    # (ORT's saved optimisation fuses MatMulInteger with its quantize / scale nodes)
    int8 = ("MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul")
    assert sum(ops.count(op) for op in int8) == 5 * layers
    kept = [
        n.name for n in model.graph.node if n.op_type == "MatMul" and "/output/dense/" in n.name
    ]
    assert kept == [f"/encoder/layer.{i}/output/dense/MatMul" for i in range(layers)]


def test_graph_inputs_named_by_us(onnx_encoders) -> None:
    """The graph's inputs carry the names the export gave them, never a converter's choice."""
    import onnx

    model = onnx.load(str(onnx_encoders["mean"][1].path), load_external_data=False)
    assert [i.name for i in model.graph.input] == onnx_backend.INPUTS


def test_foreign_graph_refused_clearly() -> None:
    with pytest.raises(InputError, match="unexpected inputs \\(55\\)"):
        onnx_backend.input_positions(["input_ids", "55", "token_type_ids"])
    assert onnx_backend.input_positions(["input_ids", "attention_mask"]) == [
        ("input_ids", 0),
        ("attention_mask", 1),
    ]


def test_pool_semantics() -> None:
    """numpy pooling = sentence-transformers' Pooling: padded positions never count."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Pooling

    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, 6, 4)).astype(np.float32)
    hidden[:, 4:] += 100.0  # padding that would win a max or drag a mean
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=np.int64)
    for mode in ("mean", "max", "cls"):
        ref = Pooling(4, pooling_mode=mode)(
            {"token_embeddings": torch.from_numpy(hidden), "attention_mask": torch.from_numpy(mask)}
        )["sentence_embedding"].numpy()
        np.testing.assert_allclose(onnx_backend.pool(hidden, mask, mode), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="supports pooling"):
        onnx_backend.pool(hidden, mask, "lasttoken")


def test_cache_key_follows_the_weights(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_model, copy)
    key = onnx_backend.cache_folder(str(copy), "local", "onnx-int8")
    assert onnx_backend.cache_folder(str(copy), "local", "onnx-int8") == key
    assert onnx_backend.cache_folder(str(copy), "local", "onnx-fp32") != key
    weights = next(p for p in copy.iterdir() if p.suffix in (".safetensors", ".bin"))
    weights.write_bytes(weights.read_bytes() + b"\0")
    assert onnx_backend.cache_folder(str(copy), "local", "onnx-int8") != key


def test_missing_onnxruntime(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(InputError) as info:
        BetoEncoder(str(tiny_model), precision="onnx-int8")
    assert str(info.value) == (
        "precision onnx-int8 needs onnxruntime: pip install 'beto-search[onnx]'"
    )

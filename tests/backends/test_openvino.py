"""precision="ov-int8": the OpenVINO static int8 backend of BetoEncoder (beto_search/openvino_backend.py)."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from beto_search import SearchEngine
from beto_search.backends import openvino as openvino_backend
from beto_search.backends.torch import BetoEncoder
from beto_search.encoder import PRECISIONS
from beto_search.errors import InputError
from tests.conftest import SPANISH_TEXTS, encoder_pairs
from tests.paths import ROOT

TEXTS = SPANISH_TEXTS


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ov-cache")


@pytest.fixture(autouse=True)
def _cache_env(monkeypatch: pytest.MonkeyPatch, ov_cache: Path) -> None:
    monkeypatch.setenv("BETO_SEARCH_CACHE", str(ov_cache))


@pytest.fixture(scope="module")
def ov_encoders(tiny_model: Path, ov_cache: Path):
    """(torch fp32, ov-int8) encoder pairs per pooling, built with the module's cache."""
    yield from encoder_pairs(tiny_model, ov_cache, "ov-int8", ("mean", "max"))


def test_precision_listed_and_described(ov_encoders) -> None:
    assert "ov-int8" in PRECISIONS
    enc = ov_encoders["mean"][1]
    assert enc.describe()["precision"] == "ov-int8"
    assert enc.device == "cpu"


def test_calibration_texts_shipped() -> None:
    texts = openvino_backend.calibration_texts()
    assert len(texts) >= 50
    assert len({len(t.split()) for t in texts}) > 10  # of varied lengths


def test_shape_dtype_normalised(ov_encoders) -> None:
    enc = ov_encoders["mean"][1]
    vecs = enc.encode_documents(TEXTS)
    assert vecs.shape == (len(TEXTS), enc.dimension)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert enc.encode_token_ids([]).shape == (0, enc.dimension)


def test_graph_is_quantized(ov_encoders) -> None:
    """Static int8: FakeQuantize on activations as well as int8 weight constants."""
    import openvino as ov

    model = ov.Core().read_model(str(ov_encoders["mean"][1].path))
    ops = [op.get_type_name() for op in model.get_ops()]
    assert ops.count("FakeQuantize") >= 2 * 6  # tiny model: 2 layers, q/k/v/attn out/ffn in/out
    assert any(
        op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
        for op in model.get_ops()
    )


def test_graph_inputs_named_by_us(ov_encoders) -> None:
    """The saved graph's inputs carry exactly our names, in our order, whatever the converter
    called them (with transformers 4.45 it names the mask '55', which broke quantization)."""
    import openvino as ov

    model = ov.Core().read_model(str(ov_encoders["mean"][1].path))
    assert [sorted(p.get_names()) for p in model.inputs] == [[n] for n in openvino_backend.INPUTS]


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_close_to_torch_fp32(ov_encoders, pooling: str) -> None:
    ref_enc, enc = ov_encoders[pooling]
    ref, got = ref_enc.encode_documents(TEXTS), enc.encode_documents(TEXTS)
    cos = np.sum(ref * got, axis=1)
    # the tiny random model measures 1 - cos of 1-2e-5 (mean) and 0.3-1e-5 (max) here; different
    # texts are 0.86-0.98 apart and pooling the padding too (a masking bug) gives 0.88-0.99.
    assert cos.min() > 0.9995, cos
    assert not np.array_equal(ref, got)  # really a different (quantized) path


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_padding_invariance(ov_encoders, pooling: str) -> None:
    enc = ov_encoders[pooling][1]
    batch = enc.encode_documents(TEXTS)
    alone = np.vstack([enc.encode_documents([t]) for t in TEXTS])
    np.testing.assert_allclose(batch, alone, atol=1e-3)
    assert np.min(np.sum(batch * alone, axis=1)) > 0.9999


def test_cache_built_once_and_reused(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BETO_SEARCH_CACHE", str(tmp_path / "cache"))
    calls = []
    real_quantize = openvino_backend.quantize

    def counting_quantize(*a, **k):
        calls.append(1)
        return real_quantize(*a, **k)

    monkeypatch.setattr(openvino_backend, "quantize", counting_quantize)
    first = BetoEncoder(str(tiny_model), precision="ov-int8")
    path = first.path
    assert path.name == "model.xml" and path.is_file()
    assert path.parent.parent == tmp_path / "cache" / "openvino"
    assert {"model.bin", "model.xml", "tokenizer.json", "encoder.json"} <= {
        p.name for p in path.parent.iterdir()
    }
    assert [p.name for p in path.parent.parent.iterdir()] == [path.parent.name]  # no temp folders
    mtime = path.stat().st_mtime_ns
    second = BetoEncoder(str(tiny_model), pooling="max", precision="ov-int8")
    assert calls == [1]
    assert second.path == path and path.stat().st_mtime_ns == mtime


def test_cache_key_follows_weights_and_calibration(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_model, copy)
    calib = tmp_path / "calib.txt"
    calib.write_text("Hola mundo.\n", encoding="utf-8")
    key = openvino_backend.cache_folder(str(copy), "local", "ov-int8", calib)
    assert openvino_backend.cache_folder(str(copy), "local", "ov-int8", calib) == key
    calib.write_text("Hola mundo.\nAdiós.\n", encoding="utf-8")
    key2 = openvino_backend.cache_folder(str(copy), "local", "ov-int8", calib)
    assert key2 != key
    weights = next(p for p in copy.iterdir() if p.suffix in (".safetensors", ".bin"))
    weights.write_bytes(weights.read_bytes() + b"\0")
    assert openvino_backend.cache_folder(str(copy), "local", "ov-int8", calib) != key2


def test_engine_end_to_end(tiny_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    docs = [
        {"id": "gabo", "text": TEXTS[1]},
        {"id": "economia", "text": TEXTS[3]},
        {"id": "madrid", "text": TEXTS[4]},
    ]
    with SearchEngine.open(folder, model=str(tiny_model), precision="ov-int8") as engine:
        engine.add(docs)
        assert engine.search("García Márquez Aracataca", k=3, mode="semantic")
        assert engine.manifest["precision"] == "ov-int8"
    with SearchEngine.open(folder, create=False) as engine:
        hits = engine.search("capital de España", k=3, mode="semantic")
        assert {h.doc_id for h in hits} <= {"gabo", "economia", "madrid"} and hits
        assert engine.encoder.precision == "ov-int8"
        assert engine.manifest["precision"] == "ov-int8"


@pytest.mark.parametrize("missing", ["openvino", "nncf"])
def test_missing_openvino(tiny_model: Path, monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    import importlib.util

    real_import, real_find_spec = builtins.__import__, importlib.util.find_spec

    def fake_import(name, globals=None, locals=None, fromlist=(), level=0):
        # absolute imports only: beto_search.backends.openvino is imported relatively
        if level == 0 and (name == missing or name.startswith(missing + ".")):
            raise ImportError(f"No module named '{missing}'")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == missing else real_find_spec(name, *a),
    )
    with pytest.raises(InputError) as info:
        BetoEncoder(str(tiny_model), precision="ov-int8")
    assert str(info.value) == (
        "precision ov-int8 needs OpenVINO: pip install 'beto-search[openvino]'"
    )


def test_refuses_cuda(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(InputError, match="CPU only"):
        BetoEncoder(str(tiny_model), precision="ov-int8", device="cuda")


@pytest.mark.slow
def test_first_ov_int8_ingest_json_prints_only_json(tiny_model: Path, tmp_path: Path) -> None:
    """The first ov-int8 run builds and calibrates the graph: NNCF's progress bars and logs, and
    the converter's third-party warnings, must stay off stdout (JSON only) and off stderr."""
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "a.txt").write_text(TEXTS[1], encoding="utf-8")
    root = str(ROOT)
    env = {
        **os.environ,
        "BETO_SEARCH_CACHE": str(tmp_path / "fresh-cache"),  # nothing built yet
        "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
        "CUDA_HOME": str(tmp_path),  # where a CPU-only torch would say it found no CUDA runtime
    }
    args = ["ingest", str(tmp_path / "a.txt"), "--index", str(tmp_path / "idx")]
    args += ["--model", str(tiny_model), "--precision", "ov-int8", "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "beto_search.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["added"] == 1, proc.stdout
    noises = (
        "Statistics collection",
        "Smooth Quant",
        "loss_type",
        "No CUDA runtime",
        "INFO",
        "forked",
    )
    for noise in noises:
        assert noise not in proc.stderr and noise not in proc.stdout, proc.stderr

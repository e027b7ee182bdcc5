"""precision="ov-int8": what only the OpenVINO static int8 backend does (beto_search/backends/openvino.py):
its calibration texts, its graph, its input names, its cache key, its missing-runtime messages, a
quiet first build. The cases every compiled precision shares are in test_compiled.py."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from beto_search.backends import openvino as openvino_backend
from beto_search.backends.torch import BetoEncoder
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
    """(torch fp32, ov-int8) encoder pairs, mean pooling, built with the module's cache."""
    yield from encoder_pairs(tiny_model, ov_cache, "ov-int8", ("mean",))


def test_calibration_texts_shipped() -> None:
    texts = openvino_backend.calibration_texts()
    assert len(texts) >= 50
    assert len({len(t.split()) for t in texts}) > 10  # of varied lengths


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

"""Precision paths of BetoEncoder: int8 runs and stays normalised, bf16/fp16 refused where the
hardware cannot run them, and an index can be queried at another precision than it was built."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from beto_search import BetoEncoder, SearchEngine
from beto_search.backends.torch import quantize_int8
from beto_search.encoder import cpu_supports_bf16
from beto_search.errors import InputError

TEXTS = ["La capital de España es Madrid.", "El aceite de oliva es la base de la cocina."]


@pytest.fixture(scope="module")
def int8_encoder(tiny_model: Path) -> BetoEncoder:
    return BetoEncoder(str(tiny_model), precision="int8", device="cpu")


def test_int8_gives_normalised_float32(
    int8_encoder: BetoEncoder, tiny_encoder: BetoEncoder
) -> None:
    got = int8_encoder.encode_documents(TEXTS)
    assert got.dtype == np.float32 and got.shape == (2, int8_encoder.dimension)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    ids = int8_encoder.tokenize(TEXTS)
    np.testing.assert_allclose(int8_encoder.encode_token_ids(ids), got, atol=1e-6)
    fp32 = tiny_encoder.encode_documents(TEXTS)
    assert np.all(np.sum(got * fp32, axis=1) > 0.9)  # close to fp32, not equal
    assert int8_encoder.describe()["precision"] == "int8"


def test_int8_quantizes_linears_but_keeps_ffn_output(int8_encoder: BetoEncoder) -> None:
    import torch

    kinds = {
        name: type(m).__module__
        for name, m in int8_encoder.transformer.model.named_modules()
        if "dense" in name or name.endswith(("query", "key", "value"))
    }
    quantized = {n for n, mod in kinds.items() if "quantized" in mod}
    assert any(n.endswith("attention.self.query") for n in quantized)
    assert any(n.endswith("intermediate.dense") for n in quantized)
    ffn_out = [n for n in kinds if n.endswith("output.dense") and "attention" not in n]
    assert ffn_out and not set(ffn_out) & quantized
    # every-layer variant (what benchmarks/quality.py compares against)
    model = BetoEncoder(int8_encoder.model_name).transformer.model
    quantize_int8(model, keep_fp32=())
    assert all(
        not isinstance(m, torch.nn.Linear) or "pooler" in n
        for n, m in model.named_modules()
        if n.endswith("dense")
    )


@pytest.mark.skipif(cpu_supports_bf16(), reason="this CPU has native bf16")
def test_bf16_refused_without_native_support(tiny_model: Path) -> None:
    with pytest.raises(InputError, match="bf16"):
        BetoEncoder(str(tiny_model), precision="bf16", device="cpu")


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU lacks native bf16")
def test_bf16_runs_where_supported(tiny_model: Path) -> None:
    got = BetoEncoder(str(tiny_model), precision="bf16", device="cpu").encode_documents(TEXTS)
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_fp16_refused_on_cpu(tiny_model: Path) -> None:
    with pytest.raises(InputError, match="fp16"):
        BetoEncoder(str(tiny_model), precision="fp16", device="cpu")


def test_unknown_precision_refused(tiny_model: Path) -> None:
    with pytest.raises(InputError, match="precision"):
        BetoEncoder(str(tiny_model), precision="int4")


def test_query_with_other_precision_than_ingest(
    tiny_model: Path, tmp_path: Path, int8_encoder: BetoEncoder
) -> None:
    docs = [
        {"id": f"d{i}", "text": t}
        for i, t in enumerate(
            [*TEXTS, "Los Andes son la cordillera más larga.", "El fútbol nació en Inglaterra."]
        )
    ]
    folder = tmp_path / "idx"
    with SearchEngine.open(folder, model=str(tiny_model), precision="fp32", device="cpu") as eng:
        eng.add(docs)
        assert eng.manifest["precision"] == "fp32"
    # reopened with another precision: allowed, the manifest keeps the ingest precision
    with SearchEngine.open(folder, model=str(tiny_model), precision="int8", device="cpu") as eng:
        assert eng.encoder.precision == "int8"
        hits = eng.search("capital de España", k=2, mode="semantic")
        assert len(hits) == 2 and eng.manifest["precision"] == "fp32"
    with SearchEngine.open(folder, encoder=int8_encoder) as eng:
        assert eng.search("cocina", k=4, mode="hybrid")
    with SearchEngine.open(folder, device="cpu") as eng:  # no precision asked: the manifest's
        assert eng.encoder.precision == "fp32"

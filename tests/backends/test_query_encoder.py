"""The light query path (backends/query.py) and ``--precision auto`` (backends/auto.py).

A query must not import torch: the index's query encoder is a cached ONNX Runtime graph,
exported once, which must give the torch model's embeddings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from beto_search import SearchEngine
from beto_search.backends import open_encoder
from beto_search.backends.auto import choose_precision
from beto_search.backends.onnx import OnnxEncoder
from tests.conftest import SPANISH_TEXTS, corpus_texts
from tests.paths import CORPUS, ROOT

# runs the CLI in a fresh interpreter and reports which heavy modules it imported
PROBE = """
import sys
from beto_search.cli import main
sys.argv = ["beto-search", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
heavy = [m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules]
print("HEAVY=" + ",".join(heavy))
sys.exit(code)
"""


@pytest.fixture(scope="module")
def graph_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("graph-cache")


@pytest.fixture(autouse=True)
def _cache_env(monkeypatch: pytest.MonkeyPatch, graph_cache: Path) -> None:
    monkeypatch.setenv("BETO_SEARCH_CACHE", str(graph_cache))


@pytest.fixture(scope="module")
def light(tiny_model: Path, graph_cache: Path) -> OnnxEncoder:
    mp = pytest.MonkeyPatch()
    mp.setenv("BETO_SEARCH_CACHE", str(graph_cache))
    try:
        enc = open_encoder(str(tiny_model), precision="fp32", queries_only=True)
    finally:
        mp.undo()
    assert isinstance(enc, OnnxEncoder)
    return enc


def test_query_encoder_is_the_fp32_graph(light: OnnxEncoder, tiny_encoder) -> None:
    assert (
        light.precision == "onnx-fp32" and light.describe()["dimension"] == tiny_encoder.dimension
    )
    assert light.name == tiny_encoder.name and light.pooling == tiny_encoder.pooling
    assert (light.folder / "tokenizer.json").is_file()
    assert light.tokenize(SPANISH_TEXTS) == tiny_encoder.tokenize(SPANISH_TEXTS)


def test_fp32_graph_gives_the_torch_embeddings(light: OnnxEncoder, tiny_encoder) -> None:
    texts = SPANISH_TEXTS + corpus_texts()
    ref, got = tiny_encoder.encode_documents(texts), light.encode_documents(texts)
    # measured ~1e-6 (float rounding); a wrong mask, pooling or tokenizer gives > 1e-2
    assert np.abs(ref - got).max() < 1e-4
    # every call path (fast-start session, then the pre-packed one) gives the same numbers
    for _ in range(3):
        np.testing.assert_allclose(light.encode_queries(SPANISH_TEXTS[:2]), ref[:2], atol=1e-4)


def test_same_top10_on_the_corpus(corpus_index: Path, tiny_encoder, tiny_model: Path) -> None:
    queries = [
        "derechos del inquilino",
        "la capital de España",
        "historia del flamenco",
        "cómo se cultiva el olivo",
        "García Márquez",
    ]
    with SearchEngine.open(corpus_index, encoder=tiny_encoder, create=False) as engine:
        ref = [[h.doc_id for h in engine.search(q, k=10, mode="semantic")] for q in queries]
    with SearchEngine.open(corpus_index, create=False, model=str(tiny_model)) as engine:
        assert not isinstance(engine.query_encoder, type(tiny_encoder))
        got = [[h.doc_id for h in engine.search(q, k=10, mode="semantic")] for q in queries]
    assert got == ref and all(len(r) == 10 for r in ref)


def test_int8_index_queries_with_its_int8_graph(tiny_model: Path) -> None:
    enc = open_encoder(str(tiny_model), precision="onnx-int8", queries_only=True)
    assert isinstance(enc, OnnxEncoder) and enc.precision == "onnx-int8"


def run_cli(*args: object, cache: Path) -> tuple[str, list[str]]:
    env = {
        **os.environ,
        "BETO_SEARCH_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    heavy = proc.stdout.strip().splitlines()[-1]
    assert heavy.startswith("HEAVY=")
    return proc.stdout.rsplit("HEAVY=", 1)[0], [m for m in heavy[len("HEAVY=") :].split(",") if m]


@pytest.mark.slow
def test_cli_never_imports_torch_for_queries(index_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out, heavy = run_cli("--help", cache=cache)
    assert "query" in out and heavy == []
    for args in (
        ["query", "flamenco", "--index", index_copy, "--mode", "lexical"],
        ["info", "--index", index_copy],
        ["verify", "--index", index_copy],
    ):
        out, heavy = run_cli(*args, cache=cache)
        assert heavy == [], (args, heavy)
    assert not cache.exists()  # nothing was built for those
    # the first semantic query exports the graph (torch allowed, once); later ones do not
    first, heavy = run_cli(
        "query", "flamenco andaluz", "--index", index_copy, "--mode", "semantic", cache=cache
    )
    assert "torch" in heavy and any((cache / "onnx").iterdir())
    for mode in ("semantic", "hybrid"):
        out, heavy = run_cli(
            "query", "flamenco andaluz", "--index", index_copy, "--mode", mode, cache=cache
        )
        assert heavy == [], (mode, heavy)
    again, _ = run_cli(
        "query", "flamenco andaluz", "--index", index_copy, "--mode", "semantic", cache=cache
    )
    assert again == first and first.startswith("  1. ")
    doc = next(p for p in sorted(CORPUS.rglob("*.md")))
    out, heavy = run_cli(
        "delete", doc.relative_to(CORPUS).as_posix(), "--index", index_copy, cache=cache
    )
    assert out.startswith("deleted 1")
    assert heavy == []


def test_auto_rule_per_cpu_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.delenv("BETO_SEARCH_PRECISION", raising=False)
    have_ov = bool(importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf"))
    avx2 = {"avx2", "fma"}
    precision, note = choose_precision("cpu", flags=avx2, have_cuda=False)
    assert precision == "onnx-fp32" and note.startswith("auto:") and "AVX2" in note
    precision, note = choose_precision("auto", flags={"avx2", "avx512_vnni"}, have_cuda=False)
    assert precision == ("ov-int8" if have_ov else "onnx-fp32")
    precision, note = choose_precision("auto", flags={"amx_int8", "amx_bf16"}, have_cuda=False)
    assert precision == ("ov-int8" if have_ov else "bf16")
    assert "lacks int8 dot-product" in choose_precision("cpu", flags=avx2, have_cuda=False)[1]
    real = importlib.util.find_spec  # a VNNI CPU without OpenVINO: the note says what to install
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda n, *a: None if n in ("openvino", "nncf") else real(n, *a),
    )
    precision, note = choose_precision("auto", flags={"avx512_vnni"}, have_cuda=False)
    assert precision == "onnx-fp32" and "OpenVINO is not installed" in note
    precision, note = choose_precision("auto", flags={"amx_int8", "amx_bf16"}, have_cuda=False)
    assert precision == "bf16" and "AMX" in note  # measured faster than onnx-fp32 there
    monkeypatch.setenv("BETO_SEARCH_PRECISION", "int8")
    assert choose_precision("cpu", flags=avx2, have_cuda=False)[0] == "int8"


def test_auto_is_recorded_with_its_reason(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beto_search.backends import auto

    monkeypatch.setattr(auto, "choose_precision", lambda device="auto": ("int8", "auto: test"))
    with SearchEngine.open(tmp_path / "idx", model=str(tiny_model)) as engine:
        engine.add([{"id": "a", "text": SPANISH_TEXTS[1]}])
        assert engine.manifest["precision"] == "int8"
        assert engine.manifest["precision_note"] == "auto: test"
        assert engine.info()["precision_note"] == "auto: test"
    with SearchEngine.open(tmp_path / "idx", create=False) as engine:  # reopened: the concrete one
        assert engine.encoder.precision == "int8"


def test_backends_are_token_encoders(light: OnnxEncoder, tiny_encoder, hash_encoder) -> None:
    from beto_search.encoder import Encoder, TokenEncoder

    assert isinstance(light, TokenEncoder) and isinstance(tiny_encoder, TokenEncoder)
    assert isinstance(hash_encoder, Encoder) and not isinstance(hash_encoder, TokenEncoder)
    facts = light.describe()
    assert set(facts) >= {
        "encoder",
        "revision",
        "pooling",
        "dimension",
        "max_length",
        "precision",
        "normalized",
    }
    assert facts["max_length"] == tiny_encoder.max_length == 512


@pytest.mark.slow
def test_ingest_prepares_the_query_graph(tiny_model: Path, tmp_path: Path) -> None:
    cache, index = tmp_path / "cache", tmp_path / "idx"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("El flamenco\nEl cante jondo nació en Andalucía.\n")
    run_cli("ingest", docs, "--index", index, "--model", tiny_model, "-q", cache=cache)
    assert any((cache / "onnx").iterdir())  # exported at ingest, while the model was loaded
    out, heavy = run_cli(
        "query", "cante andaluz", "--index", index, "--mode", "semantic", cache=cache
    )
    assert heavy == [] and out.startswith("  1. ")  # the first query after it: no torch

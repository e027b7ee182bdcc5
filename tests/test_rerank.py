"""The rerank stage: a cross-encoder rescoring the top documents of any mode.

A tiny random cross-encoder (BertForSequenceClassification, one label, saved as a
sentence-transformers CrossEncoder folder) is built once; its scores mean nothing, but the stage
must follow them exactly, keep filters, pagination and snippets, and refuse a bad model in one
sentence.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from beto_search import SearchEngine
from beto_search.cli import cli
from beto_search.errors import InputError, ModelLoadError
from beto_search.rerank import agreement, open_reranker
from tests.paths import DEV

QUERY = "precios de la economía y los tipos de interés"


@pytest.fixture(scope="session")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A 2-layer BETO-shaped cross-encoder folder (the tiny model's vocabulary)."""
    from beto_search.testing import build_cross_encoder_folder

    folder = tmp_path_factory.mktemp("tiny-cross-encoder") / "ce"
    return build_cross_encoder_folder(folder, tiny_model / "vocab.txt", initializer_range=0.2)


@pytest.fixture(scope="session")
def own_scores(cross_encoder: Path):
    """The cross-encoder's own scores (sentence-transformers, not the engine)."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(cross_encoder), device="cpu")

    def score(query: str, passages: list[str]) -> np.ndarray:
        return np.asarray(model.predict([(query, p) for p in passages]), dtype=np.float64)

    return score


@pytest.fixture(scope="module")
def engine(corpus_index: Path, tiny_encoder):
    with SearchEngine.open(corpus_index, encoder=tiny_encoder, create=False) as e:
        yield e


# ----- the order is the cross-encoder's -------------------------------------------------------
@pytest.mark.parametrize("mode", ["hybrid", "semantic", "lexical"])
def test_order_follows_the_cross_encoders_scores(engine, cross_encoder, own_scores, mode) -> None:
    fused = engine.search(QUERY, k=10, mode=mode)
    hits = engine.search(QUERY, k=10, mode=mode, rerank=str(cross_encoder), rerank_depth=10)
    assert {h.doc_id for h in hits} == {h.doc_id for h in fused}  # the same documents...
    scores = own_scores(QUERY, [h.text for h in fused])  # ...their best passages scored
    expected = [fused[i].doc_id for i in np.argsort(-scores, kind="stable")]
    assert [h.doc_id for h in hits] == expected
    assert [h.doc_id for h in hits] != [h.doc_id for h in fused]  # it really reordered
    assert [h.rank for h in hits] == list(range(1, len(fused) + 1))
    assert [h.rerank_score for h in hits] == pytest.approx(sorted(scores, reverse=True), abs=1e-6)
    by_doc = {h.doc_id: h for h in fused}
    for h in hits:  # the fused facts are kept beside the rerank score
        assert (h.score, h.chunk_id) == (by_doc[h.doc_id].score, by_doc[h.doc_id].chunk_id)


LOCAL = "http://127.0.0.1"  # a Host the server answers to (the Host check)


def test_depth_below_k_reranks_the_top_and_keeps_the_rest(
    engine, cross_encoder, own_scores
) -> None:
    fused = engine.search(QUERY, k=10)
    hits = engine.search(QUERY, k=10, rerank=str(cross_encoder), rerank_depth=4)
    scores = own_scores(QUERY, [h.text for h in fused[:4]])
    assert [h.doc_id for h in hits[:4]] == [fused[i].doc_id for i in np.argsort(-scores)]
    assert [h.doc_id for h in hits[4:]] == [h.doc_id for h in fused[4:]]
    assert all(h.rerank_score is None for h in hits[4:])


def test_depth_above_k_pages_are_consistent(engine, cross_encoder) -> None:
    """The top `depth` documents are reranked whatever k is: page 2 continues page 1."""
    ce = str(cross_encoder)
    full = engine.search(QUERY, k=12, rerank=ce, rerank_depth=12)
    first = engine.search(QUERY, k=5, rerank=ce, rerank_depth=12)
    assert [h.doc_id for h in first] == [h.doc_id for h in full[:5]]
    assert all(h.rerank_score is not None for h in full)


def test_filters_and_snippets_are_kept(engine, cross_encoder) -> None:
    where = {"categoria": "economía"}
    fused = engine.search("precios", k=5, where=where)
    hits = engine.search("precios", k=5, where=where, rerank=str(cross_encoder))
    assert fused and {h.doc_id for h in hits} == {h.doc_id for h in fused}
    assert all(h.metadata.get("categoria") == "economía" for h in hits)
    by_doc = {h.doc_id: h for h in fused}
    for h in hits:  # the snippet of the same best passage, highlights and all
        f = by_doc[h.doc_id]
        assert (h.snippet, h.snippet_start, h.highlight, h.highlight_spans) == (
            f.snippet,
            f.snippet_start,
            f.highlight,
            f.highlight_spans,
        )
        assert h.snippet and h.snippet in h.text
    assert any("<mark>" in h.highlight for h in hits)  # "precios" is marked where it occurs
    src = engine.search("precios", k=3, source="*faq.csv", rerank=str(cross_encoder))
    assert src and all(h.source.endswith("faq.csv") for h in src)


def test_loaded_once_per_engine(engine, cross_encoder) -> None:
    assert engine.reranker(cross_encoder, "fp32") is engine.reranker(str(cross_encoder), "fp32")


def test_a_reranker_object_and_bad_arguments(engine, cross_encoder) -> None:
    class Reverse:
        name, precision = "reverse", "fp32"

        def score(self, query: str, passages: list[str]) -> np.ndarray:
            return np.arange(len(passages), dtype=np.float64)  # the last passage is best

    fused = engine.search(QUERY, k=5)
    hits = engine.search(QUERY, k=5, rerank=Reverse(), rerank_depth=5)
    assert [h.doc_id for h in hits] == [h.doc_id for h in reversed(fused)]
    with pytest.raises(InputError, match="rerank depth"):
        engine.search(QUERY, rerank=str(cross_encoder), rerank_depth=0)
    with pytest.raises(InputError, match="rerank precision"):
        engine.search(QUERY, rerank=str(cross_encoder), rerank_precision="int4")


# ----- bad models: one sentence -----------------------------------------------------------------
def test_bad_models_are_one_sentence(engine, tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        engine.search(QUERY, rerank=str(tmp_path / "nowhere"))
    with pytest.raises(ModelLoadError, match="not a cross-encoder"):
        engine.search(QUERY, rerank=str(tiny_model))  # a bi-encoder (BertModel) folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        engine.search(QUERY, rerank=str(tmp_path / "empty"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"architectures": ["BertForSequenceClassification"]}')
    with pytest.raises(ModelLoadError, match="Could not load"):
        engine.search(QUERY, rerank=str(broken))


def test_cli_bad_model_exits_1_with_one_sentence(
    corpus_index: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BETO_SEARCH_RERANKER", raising=False)
    base = ["query", "precios", "--index", str(corpus_index), "--model", str(tiny_model)]
    for extra, says in (
        (["--rerank", str(tmp_path / "nowhere")], "does not exist"),
        (["--rerank", str(tiny_model)], "not a cross-encoder"),
        (["--rerank"], "--rerank needs a model"),
    ):
        result = CliRunner().invoke(cli, [*base, *extra])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and says in lines[0], lines
        assert "Traceback" not in result.output


# ----- the command line ---------------------------------------------------------------------------
def test_cli_query_json_and_explain(
    corpus_index: Path, tiny_model: Path, cross_encoder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["query", QUERY, "--index", str(corpus_index), "--model", str(tiny_model), "-k", "5"]
    plain = CliRunner().invoke(cli, [*base, "--json"])
    out = CliRunner().invoke(
        cli, [*base, "--json", "--rerank", str(cross_encoder), "--rerank-precision", "fp32"]
    )
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout)
    assert body["rerank"] == str(cross_encoder) and body["rerank_depth"] == 30
    scores = [r["rerank_score"] for r in body["results"]]
    assert all(isinstance(s, float) for s in scores) and scores == sorted(scores, reverse=True)
    assert all(r["explain"]["rerank_score"] == r["rerank_score"] for r in body["results"])
    assert all(r["rerank_score"] is None for r in json.loads(plain.stdout)["results"])
    # a bare --rerank takes $BETO_SEARCH_RERANKER
    monkeypatch.setenv("BETO_SEARCH_RERANKER", str(cross_encoder))
    explained = CliRunner().invoke(cli, [*base, "--explain", "--rerank"])
    assert explained.exit_code == 0, explained.output
    assert explained.output.count(" rerank ") == 5


def test_cli_eval_with_rerank(
    corpus_index: Path, tiny_model: Path, cross_encoder: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run.txt"
    args = [
        "eval",
        "--index",
        str(corpus_index),
        "--model",
        str(tiny_model),
        "--queries",
        str(DEV / "queries.jsonl"),
        "--qrels",
        str(DEV / "qrels" / "dev.tsv"),
        "-k",
        "10",
        "--mode",
        "lexical",
    ]
    plain = CliRunner().invoke(cli, [*args, "--json"])
    result = CliRunner().invoke(
        cli,
        [
            *args,
            "--json",
            "--rerank",
            str(cross_encoder),
            "--rerank-depth",
            "10",
            "--run",
            str(run),
        ],
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["rerank"] == str(cross_encoder) and body["rerank_depth"] == 10
    assert 0.0 <= body["modes"]["lexical"]["ndcg@10"] <= 1.0
    # the same documents per query (depth = k): recall@10 is unchanged, the order is not
    assert (
        body["modes"]["lexical"]["recall@10"]
        == json.loads(plain.stdout)["modes"]["lexical"]["recall@10"]
    )
    rows = [line.split() for line in run.read_text().splitlines()]
    assert rows and all(r[5] == "beto-search-lexical+rerank" for r in rows)
    first = [r for r in rows if r[0] == rows[0][0]]
    assert [float(r[4]) for r in first] == sorted((float(r[4]) for r in first), reverse=True)


# ----- precisions: the compiled runtimes agree with fp32 ------------------------------------------
@pytest.mark.parametrize(
    ("precision", "spearman", "abs_diff"),
    [("onnx-fp32", 0.999, 1e-5), ("onnx-int8", 0.9, 0.1), ("ov-int8", 0.9, 0.1)],
)
def test_compiled_precisions_agree_with_fp32(
    engine, cross_encoder: Path, own_scores, precision: str, spearman: float, abs_diff: float
) -> None:
    if precision == "ov-int8":
        pytest.importorskip("openvino")
        pytest.importorskip("nncf")
    else:
        pytest.importorskip("onnxruntime")
    reranker = open_reranker(cross_encoder, precision)
    assert reranker.precision == precision
    # the quality check recorded when its graph was built (Spanish check pairs)
    built = reranker.agreement  # type: ignore[attr-defined]
    assert built["spearman"] >= spearman and built["max_abs_diff"] <= abs_diff, built
    passages = [h.text for h in engine.search(QUERY, k=30)]
    ref, got = own_scores(QUERY, passages), reranker.score(QUERY, passages)
    check = agreement(ref, got)
    assert check["spearman"] >= spearman and check["max_abs_diff"] <= abs_diff, check
    if precision != "onnx-fp32":
        assert not np.allclose(ref, got, atol=1e-6)  # really a quantized path
    # the engine takes the precision through search(rerank_precision=...)
    hits = engine.search(
        QUERY, k=5, rerank=str(cross_encoder), rerank_precision=precision, rerank_depth=30
    )
    assert len(hits) == 5 and all(h.rerank_score is not None for h in hits)


def test_auto_picks_like_the_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    from beto_search.rerank import choose_precision

    monkeypatch.setenv("BETO_SEARCH_PRECISION", "onnx-fp32")
    assert choose_precision("cpu")[0] == "onnx-fp32"
    monkeypatch.setenv("BETO_SEARCH_PRECISION", "int8")  # the encoder's torch int8: no rerank
    chosen, why = choose_precision("cpu")
    assert chosen == "fp32" and "no int8" in why


# ----- the server: a start-up reranker, on/off per query, never a client-named model ----------
@pytest.fixture
def rerank_api(index_copy: Path, tiny_encoder, cross_encoder: Path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from beto_search.server import ServerSettings, create_app

    settings = ServerSettings(
        index=str(index_copy), rerank=str(cross_encoder), rerank_precision="fp32", rerank_depth=10
    )
    with TestClient(create_app(settings, encoder=tiny_encoder), base_url=LOCAL) as c:
        yield c


def test_server_reranks_by_default_and_on_request_only(
    rerank_api, index_copy: Path, tiny_encoder, cross_encoder: Path
) -> None:
    with SearchEngine.open(index_copy, encoder=tiny_encoder, create=False) as e:
        want = [h.doc_id for h in e.search(QUERY, k=10, rerank=str(cross_encoder), rerank_depth=10)]
        plain = [h.doc_id for h in e.search(QUERY, k=10)]
    body = rerank_api.get("/api/search", params={"q": QUERY, "k": 10}).json()
    assert body["rerank"] is True and [r["doc_id"] for r in body["results"]] == want
    assert all(r["rerank_score"] is not None for r in body["results"])
    page2 = rerank_api.get("/api/search", params={"q": QUERY, "k": 5, "offset": 5}).json()
    assert [r["doc_id"] for r in page2["results"]] == want[5:]
    off = rerank_api.get("/api/search", params={"q": QUERY, "k": 10, "rerank": "false"}).json()
    assert off["rerank"] is False and [r["doc_id"] for r in off["results"]] == plain
    posted = rerank_api.post("/api/search", json={"q": QUERY, "k": 10, "rerank": False}).json()
    assert [r["doc_id"] for r in posted["results"]] == plain
    bad = rerank_api.post("/api/search", json={"q": QUERY, "rerank": "/etc/model"})
    assert bad.status_code == 400 and "rerank" in bad.json()["error"]


def test_server_without_reranker_refuses_rerank(index_copy: Path, tiny_encoder) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from beto_search.server import ServerSettings, create_app

    app = create_app(ServerSettings(index=str(index_copy)), encoder=tiny_encoder)
    with TestClient(app, base_url=LOCAL) as c:
        r = c.get("/api/search", params={"q": QUERY, "rerank": "true"})
        assert r.status_code == 400 and "no reranker" in r.json()["error"]
        ok = c.get("/api/search", params={"q": QUERY}).json()
        assert ok["rerank"] is False and all(h["rerank_score"] is None for h in ok["results"])


def test_serve_with_a_bad_reranker_stops_in_one_sentence(
    corpus_index: Path, tmp_path: Path
) -> None:
    pytest.importorskip("fastapi")
    result = CliRunner().invoke(
        cli, ["serve", "--index", str(corpus_index), "--rerank", str(tmp_path / "nowhere")]
    )
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0], lines

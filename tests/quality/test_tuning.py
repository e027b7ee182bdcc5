"""Fusion configs, tuning on labels and pseudo-queries, the stored default and its guards."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from beto_search import SearchEngine
from beto_search.cli import cli
from beto_search.fusion import DEFAULT_CONFIG, FusionConfig, fuse, resolve
from beto_search.quality.evaluation import evaluate, load_eval_set
from beto_search.quality.tuning import (
    AUTOTUNE_MIN_CHUNKS,
    MIN_QUERIES,
    maybe_autotune,
    tune,
)
from tests.paths import CORPUS, DEV


class NoiseEncoder:
    """Random unit vectors (fixed per text): a dense side that knows nothing."""

    name, dimension, pooling = "noise", 32, None

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        out = np.stack(
            [np.random.default_rng(zlib.crc32(t.encode())).standard_normal(32) for t in texts]
        ).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    encode_queries = encode_documents


class BagEncoder(NoiseEncoder):
    """Hashed bag of words: a dense side about as good as the lexical one."""

    name, dimension = "bag", 256

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.strip(".,;:¿?¡!").encode()) % self.dimension] += 1.0
            out[i, 0] += 1e-3
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    encode_queries = encode_documents


def _index(folder: Path, enc, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BETO_SEARCH_AUTOTUNE", "0")
    with SearchEngine.open(folder, encoder=enc, chunk_tokens=60, overlap=10) as engine:
        engine.ingest([CORPUS])
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    mp = pytest.MonkeyPatch()
    try:
        return {
            "noise": _index(tmp_path_factory.mktemp("noise") / "idx", NoiseEncoder(), mp),
            "bag": _index(tmp_path_factory.mktemp("bag") / "idx", BagEncoder(), mp),
        }
    finally:
        mp.undo()


def _copy(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "idx"
    shutil.copytree(src, dest)
    return dest


def dev() -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    s = load_eval_set(DEV / "queries.jsonl", DEV / "qrels" / "dev.tsv")
    return {q: x.text for q, x in s.queries.items()}, s.qrels


def test_resolve_prefers_arguments_then_the_tuned_default() -> None:
    tuned = {"fusion": {"method": "rrf", "alpha": 0.7, "norm": "minmax", "rrf_k": 30}}
    assert resolve(None) == DEFAULT_CONFIG
    assert resolve(tuned) == FusionConfig("rrf", 0.7, "minmax", 30)
    assert resolve(tuned, alpha=0.2) == FusionConfig("rrf", 0.2, "minmax", 30)
    assert resolve(tuned, fusion="convex") == FusionConfig("convex", 0.3)
    assert resolve({"fusion": None}, fusion="rrf") == FusionConfig("rrf", 0.5)
    # plain RRF is the classic formula; a dense weight of 1 or 0 keeps one side's order
    d, lex = {1: 0.9, 2: 0.5, 3: 0.1}, {3: 9.0, 4: 1.0}
    assert fuse(FusionConfig("rrf", 0.5), d, lex)[3] == pytest.approx(1 / 63 + 1 / 61)
    for norm in ("minmax", "zscore", "rank", "dbsf"):
        got = fuse(FusionConfig("convex", 1.0, norm), d, lex)
        assert sorted(d, key=lambda i: -got[i]) == [1, 2, 3]


def test_tuned_scores_are_what_searches_score(built: dict[str, Path], tmp_path: Path) -> None:
    """tune's fast re-fusion gives the nDCG@10 that ``evaluate`` gets through engine.search."""
    queries, qrels = dev()
    eval_set = load_eval_set(DEV / "queries.jsonl", DEV / "qrels" / "dev.tsv")
    configs = [
        FusionConfig("convex", 0.3),
        FusionConfig("rrf", 0.5),
        FusionConfig("convex", 0.6, "zscore"),
    ]
    with SearchEngine.open(built["bag"], encoder=BagEncoder()) as engine:
        result = tune(engine, queries, qrels, store=False, configs=configs)
        table = dict(result.table)
        for cfg in configs:
            engine.set_default_fusion(cfg.to_dict())  # the index default, as a tuned one is
            # k=25: searches then fetch 100 candidates per side, as tune does
            report = evaluate(engine, eval_set, mode="hybrid", k=25)
            assert report.modes["hybrid"]["ndcg@10"] == pytest.approx(table[cfg.label()], abs=1e-4)


def test_noise_dense_side_gets_a_mostly_lexical_fusion(
    built: dict[str, Path], tmp_path: Path
) -> None:
    index = _copy(built["noise"], tmp_path)
    with SearchEngine.open(index, encoder=NoiseEncoder()) as engine:
        for labelled in (True, False):
            result = tune(engine, *(dev() if labelled else (None, None)))
            s = result.ndcg
            assert s["dense"] < 0.35 and s["lexical"] > s["dense"] + 0.3
            assert result.config.alpha <= 0.3 and s["chosen"] >= s["lexical"] - 0.01, result
            assert result.stored and engine.manifest["fusion"]["alpha"] == result.config.alpha
        # the stored choice is the default of every search that does not name one
        hits = engine.search("fotosíntesis de las plantas", k=5)
        explicit = engine.search(
            "fotosíntesis de las plantas",
            k=5,
            fusion=result.config.method,
            alpha=result.config.alpha,
        )
        assert [h.doc_id for h in hits] == [h.doc_id for h in explicit]
        assert "pseudo-queries" in engine.info()["fusion_explained"]


def test_two_good_sides_keep_a_hybrid_at_least_as_good_as_either(
    built: dict[str, Path], tmp_path: Path
) -> None:
    index = _copy(built["bag"], tmp_path)
    queries, qrels = dev()
    with SearchEngine.open(index, encoder=BagEncoder()) as engine:
        result = tune(engine, queries, qrels)
    s = result.ndcg
    assert s["dense"] > 0.4 and s["lexical"] > 0.4, s
    assert 0.0 < result.config.alpha < 1.0
    assert s["chosen"] >= max(s["dense"], s["lexical"]) - 0.002
    res = CliRunner().invoke(cli, ["info", "--index", str(index), "--json"])
    assert "labelled queries" in json.loads(res.stdout)["fusion_explained"]


def test_too_few_queries_keep_the_default(built: dict[str, Path], tmp_path: Path) -> None:
    index = _copy(built["noise"], tmp_path)
    queries, qrels = dev()
    few = dict(list(queries.items())[: MIN_QUERIES - 1])
    with SearchEngine.open(index, encoder=NoiseEncoder()) as engine:
        result = tune(engine, few, qrels)
        assert not result.stored and result.config == DEFAULT_CONFIG
        assert f"at least {MIN_QUERIES}" in result.reason
        assert engine.manifest.get("fusion") is None
        with pytest.raises(Exception, match="both queries and qrels"):
            tune(engine, queries, None)


def _synthetic(good: str, n: int = 80, seed: int = 3) -> tuple[dict, dict, dict, dict]:
    """Candidate lists of ``n`` queries over 200 one-chunk documents: the ``good`` side ranks
    the relevant document first (mostly), the other side scores random documents."""
    import random

    rng = random.Random(seed)
    doc_of = {i: f"d{i}" for i in range(200)}
    sides: dict[str, dict[str, dict[int, float]]] = {"dense": {}, "lexical": {}}
    qrels = {}
    for q in range(n):
        qid, rel = f"q{q}", rng.randrange(200)
        qrels[qid] = {f"d{rel}": 1}
        for side in sides:
            picked = rng.sample(range(200), 50)
            scores = {i: rng.random() for i in picked}
            if side == good and rng.random() < 0.9:
                scores[rel] = 1.5
            sides[side][qid] = scores
    return sides["dense"], sides["lexical"], doc_of, qrels


@pytest.mark.parametrize("good", ["dense", "lexical"])
def test_label_free_choice_leans_to_the_useful_side(good: str) -> None:
    from beto_search.quality.tuning import choose_pseudo, measure, pseudo_grid

    means, dense, lexical = measure(*_synthetic(good), pseudo_grid())
    config, reason = choose_pseudo(means, dense, lexical)
    assert (config.alpha >= 0.7) if good == "dense" else (config.alpha <= 0.1), (config, reason)
    assert ("dense side is the stronger" if good == "dense" else "weaker") in reason


def test_pseudo_queries_that_rate_every_weight_alike_keep_the_default() -> None:
    from beto_search.quality.tuning import TOLERANCE, choose_pseudo, pseudo_grid

    flat = {c: 0.9 + (TOLERANCE / 2 if c.alpha == 0.5 else 0.0) for c in pseudo_grid()}
    config, reason = choose_pseudo(flat, 0.8, 0.85)
    assert config == DEFAULT_CONFIG and "no evidence" in reason
    # pseudo-queries overrate the dense side: a weaker dense side gets half the weight they
    # prefer, a stronger one at most 0.8
    peak = {c: 0.5 - abs(c.alpha - 0.4) for c in pseudo_grid()}
    assert choose_pseudo(peak, 0.3, 0.4)[0].alpha == 0.2
    peak = {c: 0.5 - abs(c.alpha - 0.95) for c in pseudo_grid()}
    assert choose_pseudo(peak, 0.5, 0.4)[0].alpha == 0.8


def test_autotune_after_ingest_only_when_big_enough(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BETO_SEARCH_AUTOTUNE", raising=False)
    small = tmp_path / "small"
    with SearchEngine.open(small, encoder=BagEncoder()) as engine:  # about 60 chunks
        engine.ingest([CORPUS / "ciencia", CORPUS / "cocina"])
        assert engine.counts()["chunks"] < AUTOTUNE_MIN_CHUNKS
        assert engine.manifest.get("fusion") is None
    big = tmp_path / "big"
    with SearchEngine.open(big, encoder=BagEncoder(), chunk_tokens=60, overlap=10) as engine:
        engine.ingest([CORPUS])
        assert engine.counts()["chunks"] >= AUTOTUNE_MIN_CHUNKS
        fusion = engine.manifest["fusion"]
        assert fusion["labels"] == "pseudo" and fusion["queries"] >= MIN_QUERIES
        # a choice made on labels is never replaced automatically
        queries, qrels = dev()
        tune(engine, queries, qrels)
        assert maybe_autotune(engine) is None
        assert engine.manifest["fusion"]["labels"] == "labels"


def test_add_autotunes_past_the_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``add`` (the server's upsert) runs the same after-write step as ``ingest``."""
    from beto_search.readers import ReaderOptions, ReadReport, iter_files, read_file

    monkeypatch.delenv("BETO_SEARCH_AUTOTUNE", raising=False)
    report, options = ReadReport(), ReaderOptions()
    docs = [
        doc
        for path, root in iter_files([CORPUS], report, options)
        for doc in read_file(path, root, options, report)
    ]
    with SearchEngine.open(tmp_path / "idx", encoder=BagEncoder(), chunk_tokens=60) as engine:
        engine.add(docs[:10])
        assert engine.counts()["chunks"] < AUTOTUNE_MIN_CHUNKS
        assert engine.manifest.get("fusion") is None
        engine.add(docs[10:])
        assert engine.counts()["chunks"] >= AUTOTUNE_MIN_CHUNKS
        fusion = engine.manifest["fusion"]
        assert fusion["labels"] == "pseudo" and fusion["queries"] >= MIN_QUERIES


def test_cli_tune(built: dict[str, Path], tmp_path: Path, use_encoder) -> None:
    index = _copy(built["bag"], tmp_path)
    use_encoder(BagEncoder())
    res = CliRunner().invoke(
        cli,
        [
            "tune",
            "--index",
            str(index),
            "--queries",
            str(DEV / "queries.jsonl"),
            "--qrels",
            str(DEV / "qrels" / "dev.tsv"),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["stored"] and out["queries"] == 79 and len(out["grid"]) > 40
    res = CliRunner().invoke(
        cli, ["tune", "--index", str(index), "--queries", str(DEV / "queries.jsonl")]
    )
    assert res.exit_code == 2 and "--qrels" in res.output
    res = CliRunner().invoke(cli, ["query", "fotosíntesis", "--index", str(index), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert (got["fusion"], got["alpha"]) == (out["fusion"]["method"], out["fusion"]["alpha"])


# ----- pseudo-queries for short documents (issue 20) -------------------------------------------
def _sentence_records() -> list[dict[str, str]]:
    """corpora/es split into sentences, every sentence a document titled as its source file."""
    from beto_search.quality.pseudoqueries import sentence_spans

    out = []
    for path in sorted(CORPUS.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        for n, (a, b) in enumerate(sentence_spans(text)):
            piece = " ".join(text[a:b].split())
            if len(piece.split()) >= 4:
                out.append({"id": f"{path.stem}#{n}", "title": path.stem, "text": piece})
    return out


def test_one_sentence_documents_get_pseudo_queries_from_their_title_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beto_search.index.store import StoredChunk
    from beto_search.quality.pseudoqueries import group_queries

    chunks = [
        StoredChunk(i, f"d{i}", 0, 0, 1, t, title, "", {})
        for i, (t, title) in enumerate(
            [
                ("El Imperio inca fue el mayor de América del Sur.", "incas"),
                ("Su capital era Cusco, en lo alto de los Andes.", "incas"),
                ("La paella valenciana lleva arroz y azafrán.", "paella"),
                ("Corto.", "paella"),
                ("Una frase sola sin nadie más que la comparta.", "sola"),
            ]
        )
    ]
    groups = {"incas": ["d0", "d1"], "paella": ["d2", "d3"], "sola": ["d4"]}
    got = {g.doc_id: g.relevant for g in group_queries(chunks, groups, 0, seed=1)}
    assert got == {"d0": ("d1",), "d1": ("d0",), "d2": ("d3",)}  # d3 too short, d4 alone

    monkeypatch.setenv("BETO_SEARCH_AUTOTUNE", "0")
    with SearchEngine.open(tmp_path / "idx", encoder=BagEncoder()) as engine:
        engine.add(_sentence_records())
        assert engine.counts()["chunks"] == engine.counts()["documents"]  # one chunk each
        result = tune(engine, store=False)
    assert result.queries >= MIN_QUERIES, result.reason
    assert "short document" in result.tuned_on


def test_one_chunk_paragraphs_get_cloze_pseudo_queries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paragraphs shorter than a chunk, unique titles: a sentence of each paragraph asks for it,
    the paragraph scored without that sentence."""
    from beto_search.quality.tuning import cloze_candidates, cloze_set

    records = []
    for path in sorted(CORPUS.rglob("*.md")):
        for n, para in enumerate(path.read_text(encoding="utf-8").split("\n\n")):
            if len(para.split()) >= 25:
                records.append(
                    {"id": f"{path.stem}-{n}", "title": f"{path.stem} {n}", "text": para}
                )
    monkeypatch.setenv("BETO_SEARCH_AUTOTUNE", "0")
    with SearchEngine.open(tmp_path / "idx", encoder=BagEncoder(), chunk_tokens=200) as engine:
        engine.add(records)
        pset = cloze_set(engine, 50)
        assert len(pset.queries) == 50 and set(pset.rest) == set(pset.queries)
        dense, _, _ = cloze_candidates(engine, pset)
        whole = engine.search(pset.queries["pq0"], k=1, mode="semantic")[0]
    cid, doc_id, _, remainder = pset.rest["pq0"]
    assert pset.queries["pq0"] not in remainder and doc_id == whole.doc_id
    # the dense score is the remainder's, lower than the whole chunk's (it holds the query)
    assert dense["pq0"][cid] < whole.dense_score


def test_info_and_explain_say_what_the_fusion_is_and_why(
    built: dict[str, Path], tmp_path: Path, use_encoder
) -> None:
    index = _copy(built["noise"], tmp_path)
    use_encoder(NoiseEncoder())
    with SearchEngine.open(index, encoder=NoiseEncoder()) as engine:
        result = tune(engine)
        stored = engine.manifest["fusion"]
    # the manifest keeps why, and on what evidence (keys FusionConfig does not know are kept)
    assert stored["reason"] == result.reason and "weaker" in stored["reason"]
    assert stored["evidence"]["lexical_better"] > stored["evidence"]["dense_better"]
    assert set(stored["evidence"]["convex_line"]) >= {"0", "0.5", "1"}
    res = CliRunner().invoke(cli, ["info", "--index", str(index), "--json"])
    assert res.exit_code == 0, res.output
    facts = json.loads(res.stdout)
    assert facts["fusion"]["evidence"] == stored["evidence"]
    assert "weaker" in facts["fusion_explained"]
    args = ["query", "fotosíntesis de las plantas", "--index", str(index), "--explain"]
    res = CliRunner().invoke(cli, [*args, "--json"])
    assert res.exit_code == 0, res.output
    why = json.loads(res.stdout)["fusion_explained"]
    assert why["source"] == "tuned" and why["alpha"] == result.config.alpha
    assert "weaker" in why["reason"] and why["evidence"] == stored["evidence"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0 and f"fusion: {result.config.label()} (tuned): " in res.output
    res = CliRunner().invoke(cli, [*args, "--alpha", "0.6", "--json"])
    why = json.loads(res.stdout)["fusion_explained"]
    assert why["source"] == "arguments" and why["alpha"] == 0.6 and "--alpha 0.6" in why["reason"]

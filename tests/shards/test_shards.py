"""Sharded indexes (``beto_search.shards``): a sharded index answers as one index does (dense
identical with flat indexes, lexical and hybrid within 0.01 nDCG@10 on es-qa's held-out queries),
routing is stable across re-ingest/upsert/delete, every command works on one (CliRunner), and
the server serves one."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from beto_search import SearchEngine
from beto_search.cli import cli
from beto_search.errors import IndexNotFoundError, InputError
from beto_search.quality.evaluation import evaluate, load_eval_set
from beto_search.shards import ShardedEngine, shard_of
from tests.encoders import HashEncoder
from tests.paths import CORPUS, QA


def qa_records() -> list[dict]:
    out = []
    for line in (QA / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        out.append(
            {"id": r["_id"], "title": r["title"], "text": r["text"], "metadata": r["metadata"]}
        )
    return out


@pytest.fixture(scope="module")
def qa_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """es-qa in one flat index and in a flat index of 4 shards (the hashing encoder)."""
    root = tmp_path_factory.mktemp("shards")
    records = qa_records()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BETO_SEARCH_AUTOTUNE", "0")  # both on the default fusion: compared as equals
        for name, shards in (("one", None), ("four", 4)):
            with SearchEngine.open(
                root / name, HashEncoder(), index_type="flat", shards=shards
            ) as engine:
                assert engine.add(records).added == len(records)
    return root / "one", root / "four"


def queries() -> list[str]:
    lines = (QA / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines]


# ----- equal to one index ----------------------------------------------------------------------
def test_open_returns_the_sharded_engine(qa_pair: tuple[Path, Path]) -> None:
    _, four = qa_pair
    with SearchEngine.open(four, HashEncoder(), create=False) as engine:
        assert isinstance(engine, ShardedEngine) and engine.count == 4
        facts = engine.info()
    assert facts["shards"] == 4 and facts["documents"] == 240 and facts["chunks"] == 240
    per = facts["per_shard"]
    assert [p["shard"] for p in per] == ["shard-000", "shard-001", "shard-002", "shard-003"]
    assert sum(p["documents"] for p in per) == 240 and all(p["documents"] > 30 for p in per)
    assert facts["encoder"] == HashEncoder.name and facts["bytes_on_disk"] > 0
    assert all((four / p["shard"] / "index.db").exists() for p in per)  # ordinary folders
    with SearchEngine.open(four / "shard-001", HashEncoder(), create=False) as shard:
        assert isinstance(shard, SearchEngine) and shard.verify() == []


def test_dense_results_identical_with_flat_indexes(qa_pair: tuple[Path, Path]) -> None:
    one, four = qa_pair
    with (
        SearchEngine.open(one, HashEncoder(), create=False) as a,
        SearchEngine.open(four, HashEncoder(), create=False) as b,
    ):
        exact = 0
        for q in queries():
            ha = a.search(q, k=10, mode="semantic", snippets=False)
            hb = b.search(q, k=10, mode="semantic", snippets=False)
            wide = {h.doc_id: h.score for h in a.search(q, k=20, mode="semantic", snippets=False)}
            # the same cosines; FAISS's SIMD kernels round the last bit by a vector's position
            # in its index, so two documents 1e-7 apart may swap: nothing else may differ
            assert [h.score for h in hb] == pytest.approx([h.score for h in ha], abs=1e-6)
            for x, y in zip(ha, hb, strict=True):
                assert x.doc_id == y.doc_id or abs(x.score - y.score) < 1e-6, q
                assert wide[y.doc_id] == pytest.approx(y.score, abs=1e-6), q
            exact += [h.doc_id for h in ha] == [h.doc_id for h in hb]
        assert exact >= 0.95 * len(queries())


@pytest.mark.parametrize(
    ("mode", "shards"),
    [("lexical", 2), ("lexical", 4), ("lexical", 8), ("hybrid", 2), ("hybrid", 4)],
)
def test_quality_matches_one_index(
    qa_pair: tuple[Path, Path], tmp_path: Path, mode: str, shards: int
) -> None:
    """bm25 runs on the shards' summed term statistics (Elasticsearch's dfs_query_then_fetch),
    so lexical scores are one index's and nDCG@10 matches it at any shard count (with each
    shard's own statistics, es-qa's 240 documents drifted by 0.014 at 4 shards and 0.021 at 8);
    the issue asks for 0.01, the scores give 0 (docs/scale.md)."""
    one, four = qa_pair
    if shards == 4:
        path = four
    else:
        path = tmp_path / "idx"
        with SearchEngine.open(path, HashEncoder(), index_type="flat", shards=shards) as engine:
            engine.add(qa_records())
    eval_set = load_eval_set(QA / "queries.jsonl", QA / "qrels" / "test.tsv")
    scores = {}
    for name, where in (("one", one), ("sharded", path)):
        with SearchEngine.open(where, HashEncoder(), create=False) as engine:
            scores[name] = evaluate(engine, eval_set, mode, k=10).modes[mode]["ndcg@10"]
    print(f"{mode} nDCG@10: one index {scores['one']:.4f}, {shards} shards {scores['sharded']:.4f}")
    assert scores["one"] > 0.5  # the hashing encoder and bm25 give real signal here
    assert abs(scores["one"] - scores["sharded"]) <= 0.001


def lexical_top(engine: SearchEngine | ShardedEngine, q: str) -> dict[str, float]:
    hits = engine.search(q, k=10, mode="lexical", snippets=False)
    return {h.doc_id: float(h.lexical_score or 0.0) for h in hits}


def test_sharded_lexical_scores_are_one_index_scores(qa_pair: tuple[Path, Path]) -> None:
    """Every query's top-10 lexical scores equal one index's (same documents, same bm25 within
    1e-6; documents may only swap places between equal scores), with filters too."""
    one, four = qa_pair
    with (
        SearchEngine.open(one, HashEncoder(), create=False) as a,
        SearchEngine.open(four, HashEncoder(), create=False) as b,
    ):
        for q in queries():
            want, got = lexical_top(a, q), lexical_top(b, q)
            assert sorted(got.values()) == pytest.approx(sorted(want.values()), abs=1e-6), q
            for doc_id in want.keys() & got.keys():
                assert got[doc_id] == pytest.approx(want[doc_id], abs=1e-6), (q, doc_id)
            assert len(want.keys() & got.keys()) >= len(want) - 2, q  # ties only
        where = {"title": qa_records()[3]["title"]}
        for q in queries()[:20]:
            want = {h.doc_id: h.lexical_score for h in a.search(q, 5, "lexical", where=where)}
            got = {h.doc_id: h.lexical_score for h in b.search(q, 5, "lexical", where=where)}
            assert got.keys() == want.keys()
            assert all(got[d] == pytest.approx(want[d], abs=1e-6) for d in want)


# top-3 lexical (document, bm25) of one index, from the code before global statistics existed:
# the single-index path (FTS5's own bm25) must keep giving exactly these
ONE_INDEX_LEXICAL = {
    0: [("p001", 8.219196973), ("p018", 7.913571673), ("p036", 6.900644816)],
    7: [("p008", 7.213367075), ("p009", 6.495332304), ("p187", 4.205444577)],
    42: [("p043", 15.769435833), ("p046", 7.141183965), ("p057", 5.372244015)],
    123: [("p124", 11.6476242), ("p131", 8.246542173), ("p013", 5.854994188)],
    200: [("p201", 19.494491876), ("p208", 14.740716881), ("p207", 13.295201934)],
}


def test_single_index_lexical_scores_unchanged(qa_pair: tuple[Path, Path]) -> None:
    one, _ = qa_pair
    qs = queries()
    with SearchEngine.open(one, HashEncoder(), create=False) as engine:
        for n, want in ONE_INDEX_LEXICAL.items():
            hits = engine.search(qs[n], k=3, mode="lexical", snippets=False)
            assert [h.doc_id for h in hits] == [d for d, _ in want]
            assert [h.lexical_score for h in hits] == pytest.approx([s for _, s in want], abs=1e-6)


def test_shards_dig_deeper_when_their_own_ranking_hides_the_global_best(tmp_path: Path) -> None:
    """A term in most of one shard's rows has no weight there (idf clamped), but is rare across
    the index: that shard's own top 50 for "alfa beta" are its long "beta" rows, while one index
    ranks the short "alfa alfa" row first. The shard is asked again, deeper, until no row it
    left out could reach the merged top; the result is one index's."""
    home = [f"d{n}" for n in range(2000) if shard_of(f"d{n}", 2) == 0][:130]
    away = [f"d{n}" for n in range(2000) if shard_of(f"d{n}", 2) == 1][:400]
    filler = " ".join(f"relleno{n}" for n in range(30))
    docs = [{"id": home[0], "text": "alfa alfa gato"}]
    docs += [{"id": d, "text": f"alfa perro {filler}"} for d in home[1:70]]
    docs += [{"id": d, "text": f"beta {filler}"} for d in home[70:]]
    docs += [{"id": d, "text": f"casa{n} árbol {filler}"} for n, d in enumerate(away)]
    tops = []
    for name, shards in (("one", None), ("two", 2)):
        with SearchEngine.open(
            tmp_path / name, HashEncoder(), index_type="flat", shards=shards
        ) as engine:
            engine.add(docs)
            tops.append(lexical_top(engine, "alfa beta"))
    want, got = tops
    assert next(iter(want)) == home[0] and next(iter(got)) == home[0]
    assert sorted(got.values()) == pytest.approx(sorted(want.values()), abs=1e-6)


def test_lexical_totals_follow_every_write(tmp_path: Path) -> None:
    """The rows and terms bm25 needs, kept at write time, equal a fresh index's after deletes
    and replacements; an index made before they were kept counts them, and its next write
    keeps them from then on."""
    records = qa_records()[:60]
    changed = [{**r, "text": r["text"] + " y además otra frase más"} for r in records[:10]]
    with SearchEngine.open(tmp_path / "a", HashEncoder(), index_type="flat") as a:
        a.add(records)
        a.delete([r["id"] for r in records[50:]])
        a.add(changed)
        totals = a.store.lexical_totals()
    final = changed + records[10:50]
    with SearchEngine.open(tmp_path / "b", HashEncoder(), index_type="flat") as b:
        b.add(final)
        assert b.store.lexical_totals() == totals
        assert totals[0] == 50 and totals[1] > 50 * 5
        assert b.store.doc_frequencies(["zzzz"]) == {"zzzz": 0}
    # an index from before the totals were kept: no meta rows for them
    with sqlite3.connect(tmp_path / "a" / "index.db") as db:
        db.execute("DELETE FROM meta WHERE key LIKE 'lexical_%'")
    with SearchEngine.open(tmp_path / "a", HashEncoder(), create=False) as a:
        assert a.store.lexical_totals() == totals  # counted
        a.delete([records[20]["id"]])
        a.add([records[55]])
        assert a.store.lexical_totals()[0] == 50
    with SearchEngine.open(tmp_path / "b", HashEncoder(), create=False) as b:
        b.delete([records[20]["id"]])
        b.add([records[55]])
        with sqlite3.connect(tmp_path / "a" / "index.db") as db:
            kept = db.execute("SELECT count(*) FROM meta WHERE key LIKE 'lexical_%'").fetchone()
        assert kept == (3,)
        with SearchEngine.open(tmp_path / "a", HashEncoder(), create=False) as a:
            assert a.store.lexical_totals() == b.store.lexical_totals()
            rows, terms = a.store.lexical_totals()
    # a writer that does not keep the totals (an older version): they are counted again
    with sqlite3.connect(tmp_path / "a" / "index.db") as db:
        db.execute("INSERT INTO chunks_fts(rowid, terms) VALUES (999999, 'uno dos tres')")
        db.execute("INSERT INTO changes(op, chunk_id) VALUES ('add', 999999)")
    with (
        SearchEngine.open(tmp_path / "a", HashEncoder(), create=False) as a,
        SearchEngine.open(tmp_path / "b", HashEncoder(), create=False) as b,
    ):
        assert a.store.lexical_totals() == (rows + 1, terms + 3)
        a.delete([records[21]["id"]])  # counted again by this writer, then kept
        b.delete([records[21]["id"]])
        assert a.store.lexical_totals() == (
            b.store.lexical_totals()[0] + 1,
            b.store.lexical_totals()[1] + 3,
        )


def test_filters_explain_similar_and_documents(qa_pair: tuple[Path, Path]) -> None:
    one, four = qa_pair
    q = "¿Cuál es el lago navegable situado a mayor altitud del planeta?"
    with (
        SearchEngine.open(one, HashEncoder(), create=False) as a,
        SearchEngine.open(four, HashEncoder(), create=False) as b,
    ):
        where = {"tema": "geografía"}
        ha = a.search(q, k=5, mode="semantic", where=where)
        hb = b.search(q, k=5, mode="semantic", where=where)
        assert [h.doc_id for h in hb] == [h.doc_id for h in ha]
        assert all(h.metadata["tema"] == "geografía" for h in hb)
        hits = b.search(q, k=10, mode="hybrid")
        assert "p001" in [h.doc_id for h in hits[:3]]
        assert all("<mark>" in h.highlight for h in hits if h.lexical_score is not None)
        assert all(h.dense_score is not None for h in hits)  # --explain: both sides shown
        assert any(h.lexical_score is not None for h in hits)
        assert [h.doc_id for h in b.similar("p001", 5)] == [h.doc_id for h in a.similar("p001", 5)]
        with pytest.raises(InputError, match="no document 'nope'"):
            b.similar("nope")
        doc = b.get_document("p001")
        assert doc is not None and doc["id"] == "p001" and doc["chunks"]
        assert b.get_document("nope") is None
        assert b.facets(["tema"]) == a.facets(["tema"])
        assert b.counts() == a.counts()


# ----- routing ---------------------------------------------------------------------------------
def test_routing_is_a_stable_hash() -> None:
    # blake2b of the id: the same shard in every process, machine and Python version
    assert [shard_of(i, 4) for i in ("p001", "p002", "p003", "doc-ñ")] == [
        shard_of(i, 4) for i in ("p001", "p002", "p003", "doc-ñ")
    ]
    assert [shard_of(f"d{i}", 4) for i in range(8)] == [1, 3, 1, 0, 0, 3, 3, 1]


def per_shard(engine: ShardedEngine) -> list[int]:
    return [p["documents"] for p in engine.info()["per_shard"]]


def test_upsert_reingest_and_delete_reach_the_same_shard(tmp_path: Path) -> None:
    records = qa_records()[:60]
    with SearchEngine.open(tmp_path / "idx", HashEncoder(), shards=3) as engine:
        assert isinstance(engine, ShardedEngine)
        engine.add(records)
        before = per_shard(engine)
        again = engine.add(records)  # re-ingest: every document found unchanged in its shard
        assert again.unchanged == 60 and again.added == again.updated == 0
        changed = {**records[0], "text": "Texto nuevo sobre volcanes de Islandia y géiseres."}
        assert engine.add([changed]).updated == 1
        assert per_shard(engine) == before and engine.counts()["documents"] == 60
        assert engine.search("géiseres Islandia", k=1, mode="lexical")[0].doc_id == records[0]["id"]
        assert engine.delete([records[0]["id"], "nope"]) == [records[0]["id"]]
        home = shard_of(records[0]["id"], 3)
        after = per_shard(engine)
        assert after[home] == before[home] - 1 and sum(after) == 59
        for i, shard in enumerate(engine.shards):  # each document in the shard its id names
            ids = {c.doc_id for batch in shard.iter_chunks() for c in batch}
            assert ids and all(shard_of(d, 3) == i for d in ids)
        assert engine.verify() == []


def test_ingest_folders_and_prune(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(12):
        (folder / f"nota{i}.txt").write_text(f"Nota {i}\n\nTexto de la nota número {i}.")
    (folder / "roto.jsonl").write_text('{"id": "a", "text": "bien"}\nno es json\n')
    with SearchEngine.open(tmp_path / "idx", HashEncoder(), shards=3) as engine:
        summary = engine.ingest([folder])
        assert summary.files == 13 and summary.added == 13 and len(summary.skipped) == 1
        (folder / "nota3.txt").unlink()
        summary = engine.ingest([folder], prune=True)
        assert summary.pruned == 1 and summary.unchanged == 12
        assert engine.get_document("nota3.txt") is None and engine.counts()["documents"] == 12
        assert engine.get_document("nota4.txt") is not None


def test_hits_name_their_section_as_in_one_index(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(6):
        (folder / f"libro{i}.md").write_text(
            f"# Libro {i}\n\n## Capítulo uno\n\nEl río nace en la sierra {i}.\n\n"
            f"## Capítulo dos\n\nLos volcanes de la isla {i} entraron en erupción.\n"
        )
    got = {}
    for name, shards in (("one", None), ("two", 2)):
        with SearchEngine.open(tmp_path / name, HashEncoder(), shards=shards) as engine:
            engine.ingest([folder])
            hits = engine.search("volcanes erupción", k=6, mode="lexical")
            got[name] = sorted((h.doc_id, h.location) for h in hits)  # (ties: any order)
            similar = engine.similar("libro1.md", k=2)
            got[name + " similar"] = sorted((h.doc_id, h.location) for h in similar)
    assert got["one"] == got["two"] and any(loc for _, loc in got["two"])
    assert got["one similar"] == got["two similar"]


class BoomEncoder(HashEncoder):
    """Refuses any text with BOOM in it (module level: writer processes unpickle it)."""

    def encode_documents(self, texts: list[str]):
        if any("BOOM" in t for t in texts):
            raise InputError("this encoder refuses BOOM.")
        return super().encode_documents(texts)


def test_writer_failure_is_raised_not_hung(tmp_path: Path) -> None:
    records = [{"id": f"d{i}", "text": f"documento número {i}"} for i in range(2000)]
    records[1500]["text"] = "BOOM"
    with SearchEngine.open(tmp_path / "idx", BoomEncoder(), shards=4) as engine:
        with pytest.raises(InputError, match="refuses BOOM"):
            engine.add(records)
        assert engine.verify() == []  # what was written is whole


def test_writer_processes(qa_pair: tuple[Path, Path], tmp_path: Path) -> None:
    """writers="processes": one process per shard, the same documents in the same shards."""
    _, four = qa_pair
    records = qa_records()
    with SearchEngine.open(tmp_path / "idx", HashEncoder(), index_type="flat", shards=4) as engine:
        assert isinstance(engine, ShardedEngine)
        summary = engine.add(records, writers="processes")
        assert summary.added == 240 and summary.chunks == 240
        assert engine.add(records, writers="processes").unchanged == 240
        assert engine.verify() == []
        got = engine.info()["per_shard"]
    with SearchEngine.open(four, HashEncoder(), create=False) as threads:
        want = threads.info()["per_shard"]
    assert [p["documents"] for p in got] == [p["documents"] for p in want]
    bad = [{"id": f"d{i}", "text": "BOOM" if i == 150 else f"texto {i}"} for i in range(300)]
    with SearchEngine.open(tmp_path / "boom", BoomEncoder(), shards=2) as engine:
        with pytest.raises(InputError, match="refuses BOOM"):
            engine.add(bad, writers="processes")
        assert engine.verify() == []

    class Local(HashEncoder):  # a class inside a function does not pickle
        pass

    with SearchEngine.open(tmp_path / "local", Local(), shards=2) as engine:
        with pytest.raises(InputError, match="cannot be copied to writer processes"):
            engine.add(records[:4], writers="processes")
        with pytest.raises(InputError, match="writers must be one of"):
            engine.add(records[:4], writers="fibers")


def test_layout_errors(qa_pair: tuple[Path, Path], tmp_path: Path) -> None:
    one, four = qa_pair
    with pytest.raises(InputError, match="has 4 shards, not 2"):
        SearchEngine.open(four, HashEncoder(), shards=2)
    with pytest.raises(InputError, match="is not sharded"):
        SearchEngine.open(one, HashEncoder(), shards=2)
    with pytest.raises(InputError, match="between 1 and 256"):
        SearchEngine.open(tmp_path / "new", HashEncoder(), shards=0)
    with pytest.raises(IndexNotFoundError, match="there is no index"):
        SearchEngine.open(tmp_path / "none", HashEncoder(), shards=2, create=False)
    broken = tmp_path / "broken"
    shutil.copytree(four, broken)
    shutil.rmtree(broken / "shard-002")
    with pytest.raises(IndexNotFoundError, match=r"shard shard-002 of the index .* is missing"):
        SearchEngine.open(broken, HashEncoder(), create=False)
    (broken / "shards.json").write_text("{not json")
    with pytest.raises(IndexNotFoundError, match="not a readable shard manifest"):
        SearchEngine.open(broken, HashEncoder(), create=False)


# ----- every command ---------------------------------------------------------------------------
def test_every_command_on_a_sharded_index(cli_run, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    corpus = QA / "corpus.jsonl"
    out = cli_run("ingest", corpus, "--index", idx, "--id-field", "_id", "--shards", "3", "-q")
    assert out.exit_code == 0, out.output
    assert "documents added: 240" in out.output
    assert json.loads((idx / "shards.json").read_text())["shards"] == 3
    out = cli_run("ingest", corpus, "--index", idx, "--id-field", "_id", "-q")  # re-ingest
    assert out.exit_code == 0 and "unchanged: 240" in out.output, out.output
    for mode in ("semantic", "lexical", "hybrid"):
        out = cli_run("query", "lago navegable", "--index", idx, "--mode", mode, "--explain")
        assert out.exit_code == 0 and "dense " in out.output, out.output
        assert mode == "semantic" or "p001" in out.output  # (the tiny model is random)
    out = cli_run("query", "lago", "--index", idx, "--source", "*corpus.jsonl", "--json")
    assert out.exit_code == 0 and json.loads(out.output)["results"], out.output
    out = cli_run("query", "lago", "--index", idx, "--where", "title=El lago Titicaca", "--json")
    assert [r["doc_id"] for r in json.loads(out.output)["results"]] == ["p001"], out.output
    out = cli_run("similar", "p001", "--index", idx, "-k", "3", "--json")
    assert out.exit_code == 0 and len(json.loads(out.output)["results"]) == 3
    out = cli_run("info", "--index", idx)
    assert out.exit_code == 0 and "documents: 240" in out.output and "shards: 3" in out.output
    assert out.output.count("shard: shard-00") == 3
    facts = json.loads(cli_run("info", "--index", idx, "--json").output)
    assert facts["chunks"] == sum(p["chunks"] for p in facts["per_shard"]) == 240
    out = cli_run("verify", "--index", idx)
    assert out.exit_code == 0 and "ok: 240 documents" in out.output, out.output
    out = cli_run("repair", "--index", idx)
    assert out.exit_code == 0 and "240 vectors" in out.output, out.output
    out = cli_run("delete", "p001", "p002", "--index", idx)
    assert out.exit_code == 0 and "deleted 2 documents" in out.output
    out = cli_run("delete", "p001", "--index", idx)
    assert out.exit_code == 1 and "no such document: p001" in out.output
    out = cli_run("compact", "--index", idx)
    assert out.exit_code == 0 and "compacted:" in out.output
    qa = ["--queries", QA / "queries.jsonl", "--qrels", QA / "qrels" / "test.tsv"]
    out = cli_run("eval", "--index", idx, *qa, "--mode", "all", "--json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert set(report["modes"]) == {"semantic", "lexical", "hybrid"}
    assert len(report["missing"]) == 2  # p001 and p002 were deleted
    out = cli_run("tune", "--index", idx, *qa, "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["stored"]
    with SearchEngine.open(idx, create=False) as engine:  # every shard records the fusion
        fusions = [s.manifest.fusion for s in engine.shards]
    assert fusions[0] and all(f == fusions[0] for f in fusions)
    # errors: one sentence, exit 1
    out = cli_run("ingest", corpus, "--index", idx, "--id-field", "_id", "--shards", "2")
    assert out.exit_code == 1 and "has 3 shards, not 2" in out.output
    assert out.output.count("\n") == 1
    plain = tmp_path / "plain"
    assert cli_run("ingest", CORPUS / "cocina", "--index", plain, "-q").exit_code == 0
    out = cli_run("ingest", CORPUS / "cocina", "--index", plain, "--shards", "2")
    assert out.exit_code == 1 and "is not sharded" in out.output


def test_adapt_and_reembed_a_sharded_index(tmp_path: Path, tiny_encoder) -> None:
    idx = tmp_path / "idx"
    with SearchEngine.open(idx, encoder=tiny_encoder, shards=2) as engine:
        engine.ingest([CORPUS / "historia", CORPUS / "ciencia", CORPUS / "cocina"])
        chunks = engine.counts()["chunks"]
    out = tmp_path / "adapted"
    args = ["--out", out, "--max-steps", 2, "--batch-size", 4, "--force", "--reembed", "--json"]
    result = CliRunner().invoke(cli, ["adapt", "--index", str(idx), *map(str, args)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["written"] and report["reembed"]["chunks"] == chunks
    with SearchEngine.open(idx, create=False) as engine:
        assert all(Path(s.manifest.encoder).resolve() == out.resolve() for s in engine.shards)
        assert all(s.manifest.generation == 1 for s in engine.shards)
        assert engine.verify() == []
        assert engine.search("paella", k=1, mode="semantic")[0].doc_id


def test_serve_a_sharded_index(qa_pair: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from beto_search.server import ServerSettings, create_app

    one, four = qa_pair
    idx = tmp_path / "idx"
    shutil.copytree(four, idx)
    settings = ServerSettings(index=str(idx), api_key="k", public_read=True)
    q = "¿Cuál es el lago navegable situado a mayor altitud del planeta?"
    with SearchEngine.open(one, HashEncoder(), create=False) as engine:
        expected = [h.doc_id for h in engine.search(q, k=5, mode="semantic")]
    with TestClient(create_app(settings, encoder=HashEncoder()), base_url="http://127.0.0.1") as c:
        got = c.get("/api/search", params={"q": q, "k": 5, "mode": "semantic"})
        assert got.status_code == 200
        assert [r["doc_id"] for r in got.json()["results"]] == expected
        assert c.get("/api/info").json()["shards"] == 4
        assert c.get("/api/similar/p001").status_code == 200
        doc = {"id": "nuevo", "text": "Un documento nuevo sobre los glaciares de la Patagonia."}
        auth = {"Authorization": "Bearer k"}
        assert c.post("/api/documents", json={"documents": [doc]}, headers=auth).status_code == 200
        got = c.get("/api/search", params={"q": "glaciares Patagonia", "mode": "lexical"})
        assert got.json()["results"][0]["doc_id"] == "nuevo"
        assert c.delete("/api/documents/nuevo", headers=auth).status_code == 200
        assert c.get("/api/documents/nuevo").status_code == 404

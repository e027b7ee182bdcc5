"""Issue 9's correctness findings 1, 2, 3, 4 and 7, and the generation rule: a long-lived engine
sees what other processes write, compact and re-embed, from many threads at once, without
needless rebuilds. Each test failed on the engine before the redesign."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlite_utils
from click.testing import CliRunner

from beto_search import SearchEngine
from beto_search.cli import cli
from tests.encoders import HashEncoder
from tests.paths import ROOT, TESTS


def _docs(prefix: str, n: int, start: int = 0) -> list[dict]:
    return [
        {"id": f"{prefix}{i}", "text": f"{prefix}palabra{i} {prefix}tema{i} común"}
        for i in range(start, start + n)
    ]


def _top(engine: SearchEngine, text: str, mode: str = "semantic") -> str | None:
    hits = engine.search(text, k=1, mode=mode)
    return hits[0].doc_id if hits else None


# finding 1 ------------------------------------------------------------------------------------
def test_long_lived_reader_sees_chunks_added_before_another_engines_compact(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    with SearchEngine.open(index, HashEncoder()) as writer:
        writer.add(_docs("a", 10))
    reader = SearchEngine.open(index, HashEncoder(), create=False)
    try:
        assert _top(reader, "apalabra3 atema3 común") == "a3"  # its cache is loaded now
        with SearchEngine.open(index, HashEncoder()) as writer:
            writer.add(_docs("b", 5))  # logged in the change history...
            writer.compact()  # ...which compact drops (the history floor moves past it)
            writer.add(_docs("c", 2))
        for doc in _docs("b", 5) + _docs("c", 2):
            assert _top(reader, doc["text"]) == doc["id"]
        assert reader.verify() == []
    finally:
        reader.close()


# finding 2 ------------------------------------------------------------------------------------
def test_engine_on_a_new_empty_index_sees_what_another_engine_ingests(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    reader = SearchEngine.open(index, HashEncoder())
    try:
        assert reader.search("apalabra1", k=3) == [] and reader.manifest is None
        with SearchEngine.open(index, HashEncoder()) as writer:
            writer.add(_docs("a", 6))
        assert reader.manifest is not None
        for mode in ("semantic", "lexical", "hybrid"):
            assert _top(reader, "apalabra4 atema4 común", mode) == "a4"
    finally:
        reader.close()


# finding 4 ------------------------------------------------------------------------------------
def test_reader_whose_snapshot_predates_the_newest_checkpoint_does_not_rebuild(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    index = tmp_path / "idx"
    with SearchEngine.open(index, HashEncoder()) as writer:
        writer.add(_docs("a", 10))
    reader = SearchEngine.open(index, HashEncoder(), create=False)
    fired: list[bool] = []

    def writer_commits_while_listing(real: Callable[[Path], list]) -> Callable[[Path], list]:
        def listing(folder: Path) -> list:
            if not fired:  # once: the reader's snapshot is taken, a writer saves a newer file
                fired.append(True)
                with SearchEngine.open(index, HashEncoder()) as writer:
                    writer.add(_docs("b", 1))
            return real(folder)

        return listing

    # where the reader lists the checkpoint files (the engine before and after the redesign)
    import beto_search.engine as engine_mod

    if hasattr(engine_mod, "checkpoints"):
        monkeypatch.setattr(
            engine_mod, "checkpoints", writer_commits_while_listing(engine_mod.checkpoints)
        )
    try:
        import beto_search.index.vector_cache as cache_mod

        monkeypatch.setattr(
            cache_mod, "checkpoint_files", writer_commits_while_listing(cache_mod.checkpoint_files)
        )
    except ImportError:
        pass
    try:
        with caplog.at_level(logging.WARNING, logger="beto_search"):
            assert _top(reader, "apalabra2 atema2 común") == "a2"
            assert fired
            assert _top(reader, "bpalabra0 btema0 común") == "b0"  # caught up, not rebuilt
        assert not [r for r in caplog.records if "rebuilding" in r.getMessage()], caplog.text
    finally:
        reader.close()


# the generation rule ----------------------------------------------------------------------------
def test_a_new_generation_makes_every_cache_rebuild(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    with SearchEngine.open(index, HashEncoder()) as writer:
        writer.add(_docs("a", 10))
    reader = SearchEngine.open(index, HashEncoder(), create=False)
    try:
        assert _top(reader, "apalabra1 atema1 común") == "a1"
        # what a re-embedding does: new vectors for the same chunk ids (no change-log rows) and
        # generation + 1, in one transaction; here a1's and a2's vectors trade places
        db = sqlite_utils.Database(index / "index.db")
        one, two = (
            db.execute("SELECT id FROM chunks WHERE doc_id = ?", [d]).fetchone()[0]
            for d in ("a1", "a2")
        )
        vec = {r["chunk_id"]: r["vector"] for r in db["embeddings"].rows}
        with db.conn:
            db["embeddings"].update(one, {"vector": vec[two]})
            db["embeddings"].update(two, {"vector": vec[one]})
            db["manifest"].upsert({"key": "generation", "value": "1"}, pk="key")
        db.close()
        assert _top(reader, "apalabra1 atema1 común") == "a2"
        assert reader.manifest.generation == 1
        with SearchEngine.open(index, HashEncoder(), create=False) as fresh:  # gen-0 file ignored
            assert _top(fresh, "apalabra1 atema1 común") == "a2"
    finally:
        reader.close()


# finding 7 ------------------------------------------------------------------------------------
def test_query_after_an_ingest_that_could_not_load_the_model_says_the_index_is_empty(
    tmp_path: Path,
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("un documento en español", encoding="utf-8")
    index = tmp_path / "idx"
    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "ingest",
            str(docs),
            "--index",
            str(index),
            "--model",
            str(tmp_path / "no-such-model"),
            "-q",
        ],
    )
    assert res.exit_code == 1, res.output
    res = runner.invoke(cli, ["query", "documento", "--index", str(index)])
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "is empty" in lines[0] and "beto-search ingest" in lines[0], lines
    assert "No results." not in res.stdout


# finding 3 ------------------------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from encoders import HashEncoder
    from beto_search import SearchEngine

    index, rounds = sys.argv[1], int(sys.argv[3])
    with SearchEngine.open(index, HashEncoder(), wait=60) as engine:
        for r in range(rounds):
            engine.add([{"id": f"churn{r}-{i}", "text": f"ruido{r} cambio{i} otra{i % 7}"}
                        for i in range(15)])
            if r >= 2:
                engine.delete([f"churn{r - 2}-{i}" for i in range(15)])
            if r % 4 == 3:
                engine.compact()
    print("done", flush=True)
""")


@pytest.mark.slow
def test_threads_search_while_another_process_writes_and_compacts(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    perm = _docs("p", 12)
    with SearchEngine.open(index, HashEncoder()) as engine:
        engine.add(perm)
    engine = SearchEngine.open(index, HashEncoder(), create=False)
    errors: list[str] = []
    wrong: list[str] = []
    searches = [0]
    stop = threading.Event()

    def reader(t: int) -> None:
        n = t
        while not stop.is_set():
            doc = perm[n % len(perm)]
            mode = ("semantic", "hybrid", "lexical")[n % 3]
            try:
                hits = engine.search(doc["text"], k=3, mode=mode)
                if not hits or hits[0].doc_id != doc["id"]:
                    wrong.append(f"{mode} {doc['id']}: {[h.doc_id for h in hits]}")
                if mode == "semantic" and len(hits) != 3:
                    wrong.append(f"{mode} {doc['id']}: only {len(hits)} hits")
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            searches[0] += 1
            n += 1

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    try:
        writer = subprocess.run(
            [sys.executable, "-c", WRITER, str(index), str(TESTS), "16"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        time.sleep(0.5)
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=60)
    try:
        assert writer.returncode == 0 and "done" in writer.stdout, writer.stderr[-2000:]
        assert not errors, errors[:5]
        assert not wrong, wrong[:5]
        assert searches[0] > 50
        # after it all, the long-lived engine agrees with SQLite (nothing stale, nothing missing)
        last = [{"id": f"churn15-{i}", "text": f"ruido15 cambio{i} otra{i % 7}"} for i in range(15)]
        for doc in last[:3]:
            assert _top(engine, doc["text"]) == doc["id"]
        assert engine.get_document("churn0-0") is None
        assert engine.verify() == []
        sql = {c.chunk_id for batch in engine.iter_chunks() for c in batch}
        assert set(engine.vectors().ids().tolist()) - engine.vectors().tombstones == sql
    finally:
        engine.close()


def test_facets_counts_and_iter_chunks(tmp_path: Path) -> None:
    with SearchEngine.open(tmp_path / "idx", HashEncoder()) as engine:
        engine.add(
            [
                {
                    "id": f"d{i}",
                    "text": f"texto {i}",
                    "metadata": {"lang": "es", "n": i % 2, "tags": ["x"]},
                }
                for i in range(5)
            ]
        )
        assert engine.counts() == {"documents": 5, "chunks": 5, "embeddings": 5}
        facets = engine.facets()
        assert facets["lang"] == [("es", 5)] and dict(facets["n"]) == {0: 3, 1: 2}
        assert "tags" not in facets  # lists are not facet values
        assert engine.facets(["n"], limit=1) == {"n": [(0, 3)]}
        batches = list(engine.iter_chunks(batch_size=2))
        assert [len(b) for b in batches] == [2, 2, 1]
        ids = [c.chunk_id for b in batches for c in b]
        assert ids == sorted(ids) and batches[0][0].doc_id == "d0"
        doc = engine.get_document("d3")
        assert doc["text"] == "texto 3" and doc["metadata"]["n"] == 1
        assert doc["chunks"] == [{"chunk_id": ids[3], "start": 0, "end": 7}]
        assert engine.get_document("nope") is None
        assert np.isclose(
            engine.search(
                "texto 3",
                k=1,
                mode="semantic",
                query_vector=HashEncoder().encode_queries(["texto 3"])[0],
            )[0].dense_score,
            1.0,
            atol=1e-5,
        )


def test_a_custom_embedder_gets_every_batch_in_order(tmp_path: Path) -> None:
    from beto_search.errors import InputError

    enc = HashEncoder()
    sizes: list[int] = []

    def embedder(batches: Iterable[list[str]]) -> Iterator[np.ndarray]:
        for batch in batches:
            sizes.append(len(batch))
            yield enc.encode_documents(batch)

    def stops_early(batches: Iterable[list[str]]) -> Iterator[np.ndarray]:
        yield enc.encode_documents(next(iter(batches)))

    with SearchEngine.open(tmp_path / "idx", HashEncoder()) as engine:
        summary = engine.add(_docs("a", 300), embedder=embedder)
        assert summary.added == 300 and sum(sizes) == 300 and len(sizes) > 1
        assert _top(engine, "apalabra250 atema250 común", "hybrid") == "a250"
        with pytest.raises(InputError, match="stopped before embedding every batch"):
            engine.add(_docs("b", 300), embedder=stops_early)
        assert engine.verify() == []


def test_a_pipelining_embedder_stores_what_a_batch_at_a_time_run_stores(tmp_path: Path) -> None:
    # an embedder that reads every batch before it yields (as Ray's windows do): the repeat of
    # "a0" in the last batch is prepared before the first batch is written, yet it must count as
    # unchanged and keep its chunk, as it does when each batch is written before the next is read
    enc = HashEncoder()

    def pipelining(batches: Iterable[list[str]]) -> Iterator[np.ndarray]:
        for batch in list(batches):
            yield enc.encode_documents(batch)

    records = [*_docs("a", 300), _docs("a", 1)[0]]
    results = []
    for name, embedder in (("local", None), ("pipelined", pipelining)):
        with SearchEngine.open(tmp_path / name, HashEncoder()) as engine:
            summary = engine.add(records, embedder=embedder)
            results.append((summary.to_dict() | {"seconds": 0}, engine.get_document("a0")))
            assert engine.verify() == []
    assert results[0] == results[1]
    assert results[0][0]["unchanged"] == 1 and results[0][0]["added"] == 300

"""Crash safety and consistency: SIGKILLed ingests, the FAISS file as a checkpoint of SQLite,
verify / repair / compact, refusing a foreign encoder, and failing writes (disk full, I/O errors).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from beto_search import SearchEngine
from beto_search.cli import cli
from beto_search.errors import ManifestMismatchError, StorageError
from beto_search.index.store import Store
from beto_search.index.vector_cache import VectorCache
from beto_search.testing import SPANISH_WORDS
from beto_search.vector_index import checkpoints
from tests.encoders import SmallHashEncoder as HashEncoder


class RaisingEncoder:
    """Looks like the index's encoder but must never be asked to encode."""

    def __init__(self, name: str, dimension: int, pooling: str | None) -> None:
        self.name, self.dimension, self.pooling = name, dimension, pooling

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        raise AssertionError("the encoder was called")

    encode_queries = encode_documents
    encode_token_ids = encode_documents


def raising_for(index: Path) -> RaisingEncoder:
    with SearchEngine.open(index, create=False) as engine:
        m = engine.manifest
    return RaisingEncoder(m["encoder"], m["dimension"], m["pooling"])


def one_sentence_error(res) -> str:
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    return lines[0]


def state(index: Path) -> tuple:
    with SearchEngine.open(index, create=False) as engine:
        info = engine.info()
        return info["documents"], info["chunks"], engine.counts()["embeddings"], info["seq"]


# ----- SIGKILL during ingest ------------------------------------------------------------------
def _kill_corpus(folder: Path, files: range, notes: int = 0) -> dict[str, str]:
    """130 short documents per .jsonl file and ``notes`` .txt files (128-document transactions)."""
    rng = random.Random(files.start)
    words = list(SPANISH_WORDS)
    expected: dict[str, str] = {}
    folder.mkdir(exist_ok=True)
    for f in files:
        with (folder / f"lote{f}.jsonl").open("w", encoding="utf-8") as fh:
            for i in range(130):
                doc_id = f"l{f}-{i}"
                text = " ".join(rng.choice(words) for _ in range(25)) + f" número {f}-{i}."
                expected[doc_id] = text
                fh.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
    for i in range(notes):
        text = f"Nota {i}\n" + " ".join(rng.choice(words) for _ in range(40)) + "\n"
        (folder / f"nota{i:02d}.txt").write_text(text, encoding="utf-8")
        expected[f"nota{i:02d}.txt"] = text
    return expected


def _cli_command() -> list[str]:
    script = Path(sys.executable).parent / "beto-search"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from beto_search.cli import main; main()"]


def _docs(db: Path) -> int | None:
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM documents").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return None


def _has_manifest(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM manifest").fetchone()[0] > 0
        finally:
            con.close()
    except sqlite3.Error:
        return False


def _check_all_or_nothing(index: Path, expected: dict[str, str]) -> int:
    """Every stored document is whole (row, chunks, vectors, FTS rows) and has the source text."""
    with SearchEngine.open(index, create=False) as engine:
        if engine.manifest is None:
            assert engine.counts()["documents"] == 0
            return 0
        assert engine.verify() == []
        ids = {c.doc_id for batch in engine.iter_chunks() for c in batch}
        c = engine.counts()
        assert len(ids) == c["documents"]  # no document without chunks
        for doc_id in ids:
            doc = engine.get_document(doc_id)
            assert expected[doc_id] == doc["text"]
            assert doc["chunks"], doc_id
        assert c["chunks"] == c["embeddings"]
        return len(ids)


@pytest.mark.slow
def test_sigkill_during_ingest_then_verify_and_rerun(tiny_model: Path, tmp_path: Path) -> None:
    expected = _kill_corpus(tmp_path / "docs", range(4), notes=40)
    index = tmp_path / "idx"
    db = index / "index.db"
    env = dict(os.environ, BETO_SEARCH_MODEL=str(tiny_model), HF_HUB_OFFLINE="1")
    cmd = [*_cli_command(), "ingest", str(tmp_path / "docs"), "--index", str(index), "-q", "--json"]
    rng = random.Random(3)

    def after_docs(n: int):
        return lambda start, base: (_docs(db) or 0) >= base + n

    def delay_after_new_docs(delay: float):
        seen: list[float] = []

        def trigger(start: float, base: int) -> bool:
            if not seen and (_docs(db) or 0) > base:
                seen.append(time.monotonic())
            return bool(seen) and time.monotonic() - seen[0] > delay

        return trigger

    kill_points = [
        ("manifest written, no document yet", lambda start, base: _has_manifest(db)),
        ("after the first committed batch", after_docs(1)),
        ("random delay after a batch", delay_after_new_docs(rng.uniform(0.05, 0.6))),
        (
            "all documents committed (FAISS save / exit)",
            lambda start, base: _docs(db) == len(expected),
        ),
        (
            "new files arrived; random delay after a batch",
            delay_after_new_docs(rng.uniform(0.05, 0.6)),
        ),
        ("after the next committed batch", after_docs(1)),
    ]
    killed = 0
    present = 0
    for what, trigger in kill_points:
        if what.startswith("new files arrived"):
            expected.update(_kill_corpus(tmp_path / "docs", range(4, 8)))
        base = _docs(db) or 0
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            while proc.poll() is None and not trigger(start, base):
                if time.monotonic() - start > 300:
                    raise AssertionError(f"ingest did not reach the kill point: {what}")
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        killed += proc.returncode == -signal.SIGKILL
        if db.exists():  # ``beto-search verify`` (in-process: it needs no model)
            res = CliRunner().invoke(cli, ["verify", "--index", str(index)])
            assert res.exit_code == 0, (what, res.output)
        present = _check_all_or_nothing(index, expected) if db.exists() else 0
        assert present >= base, what  # committed batches are never lost
    expected.update(_kill_corpus(tmp_path / "docs", range(8, 9)))  # the re-run has work to do
    total = len(expected)
    print(
        f"{len(kill_points)} kill points, {killed} ingests killed mid-way, "
        f"{present} of {total} documents present before the re-run"
    )
    assert killed >= len(kill_points) - 1, f"only {killed} ingests were killed mid-way"

    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["unchanged"] == present
    assert summary["added"] == total - present
    assert summary["added"] + summary["unchanged"] == total
    assert summary["chunks"] == summary["added"]  # only the missing documents were encoded
    assert _check_all_or_nothing(index, expected) == total
    res = subprocess.run(
        [*_cli_command(), "verify", "--index", str(index)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert f"ok: {total} documents" in res.stdout
    assert not list(index.glob(".vectors-*")), "temporary FAISS files of killed writers remain"


def test_temporary_files_of_a_killed_save_are_removed(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    with SearchEngine.open(index, HashEncoder()) as engine:
        engine.add([{"id": "a", "text": "uno"}])
    stale = index / ".vectors-000000000009.faiss.tmp-999999"
    stale.write_bytes(b"half a checkpoint")  # what SIGKILL during VectorIndex.save leaves
    with SearchEngine.open(index, HashEncoder()) as engine:
        engine.add([{"id": "b", "text": "dos"}])
    # the new checkpoint and the previous one (kept for readers one step behind), nothing else
    assert not stale.exists() and len(checkpoints(index)) == 2


# ----- the FAISS file is a checkpoint ---------------------------------------------------------
def _damage(index: Path, how: str) -> None:
    ((_, path),) = checkpoints(index)
    if how == "deleted":
        path.unlink()
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(os.urandom(4096))


@pytest.mark.parametrize("how", ["deleted", "truncated", "empty", "garbage"])
def test_damaged_faiss_file_healed_from_sqlite_without_encoder(
    index_copy: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = state(index_copy)
    enc = raising_for(index_copy)
    _damage(index_copy, how)
    with (
        caplog.at_level(logging.WARNING, logger="beto_search"),
        SearchEngine.open(index_copy, enc, create=False) as engine,
    ):
        vi = engine.vectors()
        assert vi.ntotal == before[1]
        sql_ids = {c.chunk_id for batch in engine.iter_chunks() for c in batch}
        assert set(vi.ids().tolist()) == sql_ids
        assert engine.verify() == []
        some = next(engine.iter_chunks(1))[0].doc_id
        assert engine.similar(some, k=3)  # searching from stored vectors needs no encoder
    assert any("rebuilding the vector index from SQLite" in r.getMessage() for r in caplog.records)
    if how != "deleted":
        assert any("unreadable" in r.getMessage() for r in caplog.records)
    assert state(index_copy) == before


def test_repair_writes_a_fresh_checkpoint(
    index_copy: Path, cli_run, caplog: pytest.LogCaptureFixture
) -> None:
    _damage(index_copy, "truncated")
    res = cli_run("repair", "--index", index_copy)
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(f"rebuilt the vector index: {state(index_copy)[1]} vectors")
    enc = raising_for(index_copy)
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING, logger="beto_search"),
        SearchEngine.open(index_copy, enc, create=False) as engine,
    ):
        engine.vectors()
    assert not caplog.records  # the new file loads as is
    assert cli_run("verify", "--index", index_copy).exit_code == 0


def test_stale_checkpoint_never_yields_ids_sqlite_lacks(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    texts = {f"d{i}": f"tema{i} " * 5 + "común" for i in range(12)}
    with SearchEngine.open(index, HashEncoder()) as engine:
        engine.add([{"id": k, "text": v} for k, v in texts.items()])
    ((_, old),) = checkpoints(index)
    stale = old.read_bytes()
    with SearchEngine.open(index, HashEncoder()) as engine:
        engine.delete(["d0"])
        engine.add([{"id": "d12", "text": "tema12 " * 5 + "común"}])
    (_, new), *_ = checkpoints(index)  # the newest (the previous one is kept for readers)
    new.write_bytes(stale)  # same count of vectors, but d0's id and not d12's: a lying cache
    with SearchEngine.open(index, HashEncoder(), create=False) as engine:
        sql_ids = {c.chunk_id for batch in engine.iter_chunks() for c in batch}
        for q in ["tema0 común", "tema12", "común"]:
            for mode in ("semantic", "hybrid"):
                hits = engine.search(q, k=20, mode=mode)
                assert {h.chunk_id for h in hits} <= sql_ids
                assert "d0" not in {h.doc_id for h in hits}
        assert all(h.chunk_id in sql_ids for h in engine.similar("d1", k=20))
        problems = engine.verify()
        assert "1 chunks have no vector in the FAISS index" in problems
        assert "the FAISS index holds 1 ids SQLite lacks" in problems
        engine.repair()
        assert engine.verify() == []
        assert engine.search("tema12", k=1, mode="semantic")[0].doc_id == "d12"


def test_crash_between_sqlite_commit_and_checkpoint_catches_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = tmp_path / "idx"
    with SearchEngine.open(index, HashEncoder()) as engine:
        engine.add([{"id": f"a{i}", "text": f"primero {i}"} for i in range(5)])
    seq_file = checkpoints(index)[0][0]
    with SearchEngine.open(index, HashEncoder()) as engine, monkeypatch.context() as mp:
        # the process "dies" after committing to SQLite, before any checkpoint
        mp.setattr(VectorCache, "checkpoint", lambda self: None)
        engine.add([{"id": f"b{i}", "text": f"segundo {i}"} for i in range(5)])
        engine.delete(["a0"])
    assert checkpoints(index)[0][0] == seq_file  # the old checkpoint is all there is
    with SearchEngine.open(index, RaisingEncoder("hash-encoder", 32, None), create=False) as engine:
        vi = engine.vectors()
        assert vi.seq == engine.info()["seq"] and vi.ntotal == 9
        assert engine.verify() == []


# ----- verify / repair / compact --------------------------------------------------------------
def test_verify_fails_on_a_chunk_without_embedding(index_copy: Path, cli_run) -> None:
    assert cli_run("verify", "--index", index_copy).exit_code == 0
    con = sqlite3.connect(index_copy / "index.db")
    doc_id = con.execute("SELECT id FROM documents ORDER BY id LIMIT 1").fetchone()[0]
    con.execute(
        'INSERT INTO chunks(doc_id, ordinal, start, "end", text) VALUES (?, 99, 0, 5, ?)',
        (doc_id, "hola"),
    )
    con.commit()
    con.close()
    res = cli_run("verify", "--index", index_copy)
    assert res.exit_code == 1
    assert "problem: 1 chunks have no vector of dimension 32" in res.stderr
    assert "problem: the lexical index has" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("Error: ")
    # repair re-encodes the broken document from its stored text and rebuilds the FAISS file
    res = cli_run("repair", "--index", index_copy)
    assert res.exit_code == 0 and "re-encoded 1 document whose" in res.output
    res = cli_run("verify", "--index", index_copy)
    assert res.exit_code == 0, res.output
    con = sqlite3.connect(index_copy / "index.db")
    assert (
        con.execute(
            "SELECT count(*) FROM chunks WHERE doc_id = ? AND ordinal = 99", (doc_id,)
        ).fetchone()[0]
        == 0
    )
    con.close()


def test_verify_fails_on_a_bad_vector_blob(index_copy: Path) -> None:
    con = sqlite3.connect(index_copy / "index.db")
    con.execute(
        "UPDATE embeddings SET vector = x'00' WHERE chunk_id = (SELECT min(chunk_id) "
        "FROM embeddings)"
    )
    con.commit()
    con.close()
    res = CliRunner().invoke(cli, ["verify", "--index", str(index_copy)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "chunks have no vector of dimension 32" in res.stderr
    assert CliRunner().invoke(cli, ["repair", "--index", str(index_copy)]).exit_code == 0
    assert CliRunner().invoke(cli, ["verify", "--index", str(index_copy)]).exit_code == 0


def test_compact_reclaims_space_after_deletes(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    rng = random.Random(1)
    words = [f"w{i}" for i in range(3000)]
    docs = [
        {"id": f"d{i}", "text": " ".join(rng.choice(words) for _ in range(150))}
        for i in range(1500)
    ]
    with SearchEngine.open(index, HashEncoder()) as engine:
        engine.add(docs)
        gone = [d["id"] for d in docs[100:]]
        engine.delete(gone)
        out = engine.compact()
        assert out["bytes_after"] < 0.4 * out["bytes_before"], out
        assert engine.verify() == []
        assert (
            sqlite3.connect(index / "index.db")
            .execute(  # a plain SQLite file
                "SELECT count(*) FROM changes"
            )
            .fetchone()[0]
            == 0
        )
        assert len(checkpoints(index)) == 1
        hits = engine.search(docs[500]["text"][:60], k=10, mode="hybrid")
        assert not {h.doc_id for h in hits} & set(gone)
        engine.add([{"id": "after", "text": "documento después de compactar"}])
    with SearchEngine.open(index, RaisingEncoder("hash-encoder", 32, None), create=False) as e:
        assert e.vectors().ntotal == 101 and e.verify() == []


# ----- model safety ---------------------------------------------------------------------------
class WrongOutputEncoder(RaisingEncoder):
    """Declares the index's dimension but produces vectors of another one."""

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), self.dimension // 2), dtype=np.float32)

    encode_queries = encode_documents


def test_foreign_encoders_refused_before_writing(index_copy: Path) -> None:
    before = state(index_copy)
    m = raising_for(index_copy)
    cases = [
        (HashEncoder(), "was built with encoder"),
        (
            RaisingEncoder(m.name, 16, m.pooling),
            "gives 16-dimensional vectors but the index holds 32",
        ),
        (RaisingEncoder(m.name, 32, "cls"), "(pooling mean), not"),
    ]
    for enc, words in cases:
        with pytest.raises(ManifestMismatchError) as err:
            SearchEngine.open(index_copy, enc, create=False)
        msg = str(err.value)
        assert words in msg and "\n" not in msg and msg.endswith(".")
    with (
        SearchEngine.open(index_copy, WrongOutputEncoder(m.name, 32, m.pooling)) as engine,
        pytest.raises(ManifestMismatchError, match="returned vectors of shape"),
    ):
        engine.add([{"id": "nuevo", "text": "un documento nuevo"}])
    assert state(index_copy) == before


def test_lying_encoder_refused_on_a_new_index(tmp_path: Path) -> None:
    with SearchEngine.open(tmp_path / "idx", WrongOutputEncoder("liar", 32, None)) as engine:
        with pytest.raises(ManifestMismatchError, match="says dimension 32 but produced vectors"):
            engine.add([{"id": "a", "text": "hola"}])
        assert engine.manifest is None and engine.counts()["documents"] == 0
    assert checkpoints(tmp_path / "idx") == []


def test_cli_refuses_other_model_or_pooling(index_copy: Path, cli_run, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("un documento\n")
    before = state(index_copy)
    line = one_sentence_error(
        cli_run("ingest", docs, "--index", index_copy, "--pooling", "max", "--model", cli_run.model)
    )
    assert "created with pooling 'mean', not 'max'" in line
    line = one_sentence_error(
        cli_run("ingest", docs, "--index", index_copy, "--model", tmp_path / "otro-modelo")
    )
    assert "created with model" in line
    assert state(index_copy) == before


# ----- failing writes -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "exc",
    [
        sqlite3.OperationalError("database or disk is full"),
        sqlite3.OperationalError("disk I/O error"),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
)
def test_write_errors_leave_previous_state_readable(
    index_copy: Path, cli_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"n{i}.txt").write_text(f"Documento nuevo {i} sobre volcanes.\n")
    before = state(index_copy)

    def fail(self, prepared):
        raise exc

    monkeypatch.setattr(Store, "put_documents", fail)
    line = one_sentence_error(
        cli_run("ingest", docs, "--index", index_copy, "--model", cli_run.model, "-q")
    )
    assert "nothing was changed" in line and (exc.args[-1] in line or str(exc) in line)
    monkeypatch.undo()
    assert state(index_copy) == before
    assert cli_run("verify", "--index", index_copy).exit_code == 0
    res = cli_run("query", "volcanes", "--index", index_copy, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["results"]
    assert not list(index_copy.glob(".vectors-*"))


def test_checkpoint_write_error_is_one_sentence_and_heals(
    index_copy: Path, cli_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import faiss

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "n.txt").write_text("Documento nuevo sobre volcanes.\n")
    before = state(index_copy)

    def full(index, path):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(faiss, "write_index", full)
    line = one_sentence_error(
        cli_run("ingest", docs, "--index", index_copy, "--model", cli_run.model, "-q")
    )
    assert "could not write the vector index file" in line.lower()
    monkeypatch.undo()
    assert not list(index_copy.glob(".vectors-*"))  # no partial file left behind
    assert state(index_copy)[0] == before[0] + 1  # the documents themselves were committed
    enc = raising_for(index_copy)
    with SearchEngine.open(index_copy, enc, create=False) as engine:
        assert engine.verify() == []


def test_store_write_turns_os_errors_into_storage_errors(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    with pytest.raises(StorageError, match="nothing was changed"), store.write():
        store.conn.execute("INSERT INTO meta(key, value) VALUES ('k', 1)")
        raise OSError(errno.EIO, "Input/output error")
    assert store.conn.execute("SELECT count(*) FROM meta").fetchone()[0] == 0
    store.close()

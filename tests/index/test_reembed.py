"""Re-embedding an index: the switch, resuming, stragglers, SIGKILL anywhere, readers elsewhere."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from beto_search import SearchEngine
from beto_search.cli import cli
from beto_search.errors import ManifestMismatchError
from beto_search.index.reembed import pending, reembed
from beto_search.testing import SPANISH_WORDS
from tests.paths import ROOT


class WordHash:
    """Deterministic bag-of-words vectors; ``salt`` and ``dimension`` make different models."""

    pooling = None

    def __init__(self, name: str = "hash-old", dimension: int = 32, salt: int = 0) -> None:
        self.name, self.dimension, self.salt = name, dimension, salt
        self.calls = 0

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(f"{self.salt}:{w}".encode()) % self.dimension] += 1.0
            out[i, 0] += 1e-3
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    encode_queries = encode_documents


def docs(n: int, start: int = 0) -> list[dict[str, str]]:
    words = list(SPANISH_WORDS)
    out = []
    for i in range(start, start + n):
        text = " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(12)) + f" número {i}."
        out.append({"id": f"d{i}", "text": text, "title": f"Doc {i}"})
    return out


def build(folder: Path, n: int = 60, enc: WordHash | None = None) -> Path:
    with SearchEngine.open(folder, encoder=enc or WordHash()) as engine:
        engine.add(docs(n))
    return folder


def stored(folder: Path) -> tuple[dict, dict[int, str], dict[int, np.ndarray]]:
    """(manifest, chunk texts, stored vectors) read straight from SQLite."""
    con = sqlite3.connect(folder / "index.db")
    try:
        manifest = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM manifest")}
        texts = dict(con.execute("SELECT id, text FROM chunks"))
        vecs = {
            cid: np.frombuffer(blob, dtype=np.float32)
            for cid, blob in con.execute("SELECT chunk_id, vector FROM embeddings")
        }
    finally:
        con.close()
    return manifest, texts, vecs


def assert_wholly(folder: Path, models: dict[str, WordHash]) -> str:
    """Every vector is the manifest's model's vector of its chunk: wholly old or wholly new."""
    manifest, texts, vecs = stored(folder)
    enc = models[manifest["encoder"]]
    assert manifest["dimension"] == enc.dimension
    assert set(vecs) == set(texts)
    ids = sorted(texts)
    want = enc.encode_documents([texts[i] for i in ids])
    got = np.stack([vecs[i] for i in ids])
    np.testing.assert_allclose(got, want, atol=1e-5)
    return manifest["encoder"]


def test_reembed_switches_model_and_searches_use_it(tmp_path: Path) -> None:
    old, new = WordHash(), WordHash("hash-new", 48, salt=7)
    index = build(tmp_path / "idx")
    with SearchEngine.open(index, encoder=old) as engine:
        before = engine.search("río montaña", k=3, mode="semantic")
        result = reembed(engine.ctx, new)
        assert (result.generation, result.encoded, result.resumed) == (1, 60, 0)
        m = engine.manifest
        assert (m["encoder"], m["dimension"], m["generation"]) == ("hash-new", 48, 1)
        after = engine.search("río montaña", k=3, mode="semantic")
        assert engine.verify() == []
    assert assert_wholly(index, {"hash-old": old, "hash-new": new}) == "hash-new"
    qv = new.encode_queries(["río montaña"])[0]
    _, _texts, vecs = stored(index)
    best = max(vecs, key=lambda c: float(vecs[c] @ qv))
    assert after[0].chunk_id == best and after[0].dense_score == pytest.approx(
        float(vecs[best] @ qv)
    )
    assert [h.dense_score for h in before] != [h.dense_score for h in after]
    with pytest.raises(ManifestMismatchError):  # the old model no longer fits the index
        SearchEngine.open(index, encoder=old)
    with SearchEngine.open(index, encoder=new) as engine:  # a fresh process: rebuilt FAISS cache
        assert engine.search("río montaña", k=3, mode="semantic")[0].chunk_id == best
        assert engine.info()["generation"] == 1


class FailingAfter(WordHash):
    def __init__(self, batches: int, **kw) -> None:
        super().__init__(**kw)
        self.left = batches

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        if len(texts) > 1:  # not the one-text dimension probe
            if self.left == 0:
                raise RuntimeError("interrupted")
            self.left -= 1
        return super().encode_documents(texts)


def test_interrupted_reembed_keeps_old_index_and_resumes(tmp_path: Path) -> None:
    old = WordHash()
    index = build(tmp_path / "idx")
    with SearchEngine.open(index, encoder=old) as engine:
        with pytest.raises(RuntimeError):
            reembed(
                engine.ctx, FailingAfter(2, name="hash-new", dimension=48, salt=7), batch_size=10
            )
        assert engine.manifest["encoder"] == "hash-old"
        assert pending(engine.ctx)["vectors_done"] == 20
        assert engine.info()["reembed_pending"]["encoder"] == "hash-new"
        assert engine.search("río", k=2, mode="semantic")  # still answers with the old model
        assert engine.verify() == []
    assert assert_wholly(index, {"hash-old": old}) == "hash-old"
    new = WordHash("hash-new", 48, salt=7)
    with SearchEngine.open(index, encoder=old) as engine:
        result = reembed(engine.ctx, new, batch_size=10)
    assert (result.resumed, result.encoded) == (20, 40)
    with SearchEngine.open(index, encoder=new) as engine:
        info = engine.info()
        assert info["reembed_pending"] is None and info["generation"] == 1
    assert assert_wholly(index, {"hash-new": new}) == "hash-new"


def test_a_different_target_starts_over(tmp_path: Path) -> None:
    old = WordHash()
    index = build(tmp_path / "idx")
    with SearchEngine.open(index, encoder=old) as engine:
        with pytest.raises(RuntimeError):
            reembed(
                engine.ctx, FailingAfter(2, name="hash-new", dimension=48, salt=7), batch_size=10
            )
        other = WordHash("hash-other", 40, salt=3)
        result = reembed(engine.ctx, other, batch_size=10)
        assert (result.resumed, result.encoded) == (0, 60)
        assert pending(engine.ctx) is None
    assert assert_wholly(index, {"hash-other": other}) == "hash-other"


def test_chunks_written_during_the_bulk_phase_are_covered(tmp_path: Path) -> None:
    old, new = WordHash(), WordHash("hash-new", 48, salt=7)
    index = build(tmp_path / "idx")

    def embedder(batches):
        todo = list(batches)  # the bulk phase has read every chunk it will see...
        if todo and not getattr(embedder, "done", False):
            embedder.done = True  # ...then another writer adds documents
            with SearchEngine.open(index, encoder=WordHash()) as other:
                other.add(docs(5, start=100))
        for batch in todo:
            yield new.encode_documents(batch)

    with SearchEngine.open(index, encoder=old) as engine:
        result = reembed(engine.ctx, new, embedder=embedder)
        assert result.stragglers == 5 and result.chunks == 65
        assert engine.verify() == []
    assert assert_wholly(index, {"hash-new": new}) == "hash-new"


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_reembed import WordHash
    from beto_search import SearchEngine
    from beto_search.index.reembed import reembed

    class Slow(WordHash):
        def encode_documents(self, texts):
            if len(texts) > 1:
                time.sleep(0.15)
            return super().encode_documents(texts)

    with SearchEngine.open(sys.argv[1], encoder=WordHash()) as engine:
        reembed(engine.ctx, Slow("hash-new", 48, salt=7), batch_size=8)
    print("done")
""")


def _count(db: Path, sql: str) -> int:
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute(sql).fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return -1


@pytest.mark.slow
def test_sigkill_anywhere_leaves_the_old_or_the_new_index(tmp_path: Path) -> None:
    old, new = WordHash(), WordHash("hash-new", 48, salt=7)
    models = {"hash-old": old, "hash-new": new}
    script = tmp_path / "child.py"
    script.write_text(KILL_SCRIPT.format(tests=str(ROOT / "tests" / "index")))
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        BETO_SEARCH_AUTOTUNE="0",
    )
    next_rows = "SELECT count(*) FROM embeddings_next"
    # (the manifest always holds a generation key: 0 until the first switch)
    generation = "SELECT count(*) FROM manifest WHERE key = 'generation' AND value = '1'"
    # 80 chunks in batches of 8 (0.15 s each): the kill points land in every phase
    points = [
        ("state written, nothing encoded", lambda db: _count(db, next_rows) == 0, 0.0),
        ("after the first batch", lambda db: _count(db, next_rows) >= 8, 0.0),
        ("half way", lambda db: _count(db, next_rows) >= 40, 0.0),
        ("every vector written (switch under way)", lambda db: _count(db, next_rows) >= 80, 0.0),
        ("just after the switch", lambda db: _count(db, generation) == 1, 0.0),
    ]
    seen = set()
    resumed_ok = False
    for n, (what, trigger, delay) in enumerate(points):
        index = build(tmp_path / f"idx-{n}", n=80)
        db = index / "index.db"
        if what == "half way":  # an earlier killed run left work: it must be resumed
            proc = subprocess.Popen(
                [sys.executable, str(script), str(index)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            while proc.poll() is None and _count(db, next_rows) < 16:
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
        proc = subprocess.Popen(
            [sys.executable, str(script), str(index)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        start = time.monotonic()
        try:
            while proc.poll() is None and not trigger(db):
                assert time.monotonic() - start < 120, f"the kill point was never reached: {what}"
                time.sleep(0.002)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            _out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode in (-signal.SIGKILL, 0), err.decode()
        res = CliRunner().invoke(cli, ["verify", "--index", str(index)])
        assert res.exit_code == 0, (what, res.output)
        which = assert_wholly(index, models)
        seen.add(which)
        if which == "hash-old":  # a re-run finishes the job, resuming what was written
            done = _count(db, next_rows)
            with SearchEngine.open(index, encoder=old) as engine:
                result = reembed(engine.ctx, new, batch_size=8)
            assert result.resumed == done
            resumed_ok |= done > 0 and result.encoded == 80 - done
            assert assert_wholly(index, models) == "hash-new"
            with SearchEngine.open(index, encoder=new) as engine:
                assert engine.verify() == [] and engine.search("río", k=3, mode="semantic")
    assert seen == {"hash-old", "hash-new"} and resumed_ok


READER_SCRIPT = textwrap.dedent("""
    import json, sys
    from beto_search import SearchEngine
    with SearchEngine.open(sys.argv[1], create=False) as engine:
        for line in sys.stdin:
            hit = engine.search(line.strip(), k=1, mode="semantic")[0]
            print(json.dumps({"encoder": engine.manifest["encoder"], "chunk": hit.chunk_id,
                              "dense": hit.dense_score}), flush=True)
""")


@pytest.mark.slow
def test_reader_in_another_process_follows_the_switch(tiny_model: Path, tmp_path: Path) -> None:
    from beto_search import BetoEncoder
    from beto_search.testing import build_bert_folder

    other = build_bert_folder(
        tmp_path / "other-model", tiny_model / "vocab.txt", hidden=48, heads=2, seed=5
    )
    index = tmp_path / "idx"
    with SearchEngine.open(index, encoder=BetoEncoder(str(tiny_model))) as engine:
        engine.add(docs(30))
    script = tmp_path / "reader.py"
    script.write_text(READER_SCRIPT)
    env = dict(
        os.environ,
        BETO_SEARCH_AUTOTUNE="0",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    reader = subprocess.Popen(
        [sys.executable, str(script), str(index)],
        env=env,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        reader.stdin.write("río montaña\n")
        reader.stdin.flush()
        first = json.loads(reader.stdout.readline())
        assert first["encoder"] == str(tiny_model)
        with SearchEngine.open(index) as engine:
            engine.reembed(str(other))
            want = engine.search("río montaña", k=1, mode="semantic")[0]
        reader.stdin.write("río montaña\n")
        reader.stdin.flush()
        second = json.loads(reader.stdout.readline())
    finally:
        reader.stdin.close()
        reader.wait(timeout=60)
    assert second["encoder"] == str(other.resolve())
    assert (second["chunk"], second["dense"]) == (
        want.chunk_id,
        pytest.approx(want.dense_score, abs=1e-5),
    )


def test_cli_reembed(
    index_copy: Path, tiny_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from beto_search.testing import build_bert_folder

    other = build_bert_folder(tmp_path / "other-model", tiny_model / "vocab.txt", seed=9)
    with caplog.at_level(logging.WARNING, logger="beto_search"):
        res = CliRunner().invoke(
            cli, ["reembed", "--index", str(index_copy), "--model", str(other), "--json"]
        )
    assert res.exit_code == 0, res.output
    # the new generation's first cache build is expected: no warning about it
    assert not [r for r in caplog.records if "vector index" in r.getMessage()], caplog.text
    out = json.loads(res.stdout)
    assert out["generation"] == 1 and out["encoded"] == out["chunks"] > 0
    res = CliRunner().invoke(cli, ["info", "--index", str(index_copy), "--json"])
    info = json.loads(res.stdout)
    assert (info["encoder"], info["generation"]) == (str(other.resolve()), 1)
    res = CliRunner().invoke(
        cli, ["reembed", "--index", str(tmp_path / "none"), "--model", str(other)]
    )
    assert res.exit_code == 1 and "Traceback" not in res.output


def test_an_open_engine_follows_or_refuses_at_its_next_query(tmp_path: Path) -> None:
    """Another engine on the same index (as another process would be): it sees a fusion tuned
    elsewhere and a re-embed at its next query; a passed-in encoder of the old model is refused,
    and an engine that builds its encoder from the manifest switches to the new one."""
    old, new = WordHash(), WordHash("hash-new", 48, salt=7)
    index = build(tmp_path / "idx")
    with (
        SearchEngine.open(index, encoder=old) as writer,
        SearchEngine.open(index, encoder=old) as reader,
    ):
        assert reader.search("río", k=2, fusion=None)
        writer.set_default_fusion({"method": "rrf", "alpha": 0.5})
        reader.search("río", k=2)
        assert reader.manifest.fusion == {"method": "rrf", "alpha": 0.5}
        reembed(writer.ctx, new)
        for mode in ("semantic", "lexical"):  # as opening it with that encoder would be
            with pytest.raises(ManifestMismatchError):
                reader.search("río", k=2, mode=mode)
        with pytest.raises(ManifestMismatchError):  # never old-model vectors in a new index
            reader.add(docs(1, start=500))
        assert writer.search("río", k=2, mode="semantic")[0].dense_score is not None

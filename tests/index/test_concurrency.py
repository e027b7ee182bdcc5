"""One writer, many readers: queries during an ingest in another process, a second writer that
waits then fails naming the holder, and a lock left by a dead process taken over.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from beto_search import SearchEngine
from beto_search.errors import LockTimeoutError
from beto_search.index.locking import WriteLock
from tests.paths import ROOT

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from beto_search.index.locking import WriteLock
    lock = WriteLock(Path(sys.argv[1]))
    lock.acquire()
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    lock.release()
""")


def _hold_lock(folder: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), str(seconds)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_waits_then_fails_naming_the_holder(
    index_copy: Path, cli_run, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Un documento que espera su turno.\n")
    holder = _hold_lock(index_copy, 30)
    try:
        started = time.monotonic()
        res = cli_run(
            "ingest", docs, "--index", index_copy, "--model", cli_run.model, "-q", "--wait", "1.5"
        )
        waited = time.monotonic() - started
        assert res.exit_code == 1 and "Traceback" not in res.output
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"Error: The index is being written by process {holder.pid} ")
        assert "--wait" in lines[0]
        assert waited >= 1.5
        for cmd in (["delete", "x"], ["repair"], ["compact"]):
            res = cli_run(*cmd, "--index", index_copy)
            assert res.exit_code == 1
            assert (
                f"process {holder.pid}" in res.stderr and len(res.stderr.strip().splitlines()) == 1
            )
        # readers are not blocked by the writer's lock
        res = cli_run("query", "documento", "--index", index_copy, "--json")
        assert res.exit_code == 0, res.output
    finally:
        holder.kill()
        holder.wait()
    with SearchEngine.open(index_copy, create=False) as engine:
        assert engine.get_document("a.txt") is None


def test_waiting_writer_proceeds_when_the_holder_finishes(index_copy: Path, tiny_encoder) -> None:
    holder = _hold_lock(index_copy, 1.0)
    try:
        with SearchEngine.open(index_copy, tiny_encoder, wait=60) as engine:
            started = time.monotonic()
            engine.add([{"id": "tarde", "text": "llegó después"}])
            assert time.monotonic() - started > 0.3
            assert engine.get_document("tarde") is not None
    finally:
        holder.wait(timeout=30)


def test_stale_lock_of_a_dead_process_is_taken_over(index_copy: Path, tiny_encoder) -> None:
    holder = _hold_lock(index_copy, 600)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock = index_copy / "write.lock"
    assert lock.read_text() == str(holder.pid)  # the dead holder's pid is still written there
    with SearchEngine.open(index_copy, tiny_encoder) as engine:  # wait=0: no waiting needed
        engine.add([{"id": "nuevo", "text": "tras un escritor muerto"}])
        assert engine.get_document("nuevo") is not None
    assert lock.read_text() == ""  # released cleanly
    # a pid file with garbage or an unknown pid is no obstacle either
    lock.write_text("not-a-pid")
    with WriteLock(index_copy):
        assert lock.read_text() == str(os.getpid())


def test_lock_error_without_a_readable_holder(tmp_path: Path) -> None:
    with WriteLock(tmp_path):
        (tmp_path / "write.lock").write_text("")  # holder unknown
        with pytest.raises(LockTimeoutError, match="written by another process"):
            WriteLock(tmp_path, wait=0.2).acquire()


READER = textwrap.dedent("""
    import json, sys, time, traceback
    from pathlib import Path
    from beto_search import SearchEngine
    index, stop = Path(sys.argv[1]), Path(sys.argv[2])
    queries = ["río", "historia de la independencia", "cómo preparar una paella", "vacunas",
               '"sin cerrar (', "lote número"]
    done, failures, seen_docs, reopen = 0, [], set(), 0
    engine = SearchEngine.open(index, create=False)
    engine.search("calentar", mode="semantic")
    print("ready", flush=True)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        stopping = stop.exists()
        for mode in ("semantic", "lexical", "hybrid"):
            q = queries[done % len(queries)]
            try:
                hits = engine.search(q, k=5, mode=mode)
                ids = {h.chunk_id for h in hits}
                have = {c["chunk_id"] for h in hits
                        for c in (engine.get_document(h.doc_id) or {"chunks": []})["chunks"]}
                if not ids <= have:
                    failures.append(f"{mode} {q!r}: chunk ids SQLite lacks {sorted(ids - have)}")
                seen_docs.add(engine.counts()["documents"])
            except Exception:
                failures.append(traceback.format_exc(limit=3))
            done += 1
        if done % 15 == 0:  # reopen now and then: load the newest checkpoint from scratch
            engine.close()
            engine = SearchEngine.open(index, create=False)
            reopen += 1
        if stopping:
            break
    print(json.dumps({"queries": done, "failures": failures[:5], "n_failures": len(failures),
                      "reopened": reopen, "doc_counts": sorted(seen_docs)}))
""")


@pytest.mark.slow
def test_queries_in_another_process_during_ingest(
    index_copy: Path, tiny_model: Path, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for f in range(4):
        with (docs / f"lote{f}.jsonl").open("w", encoding="utf-8") as fh:
            for i in range(150):
                text = f"Lote {f} número {i}: el río y la historia de la ciudad, documento {i}."
                fh.write(json.dumps({"id": f"l{f}-{i}", "text": text}, ensure_ascii=False) + "\n")
    env = dict(os.environ, BETO_SEARCH_MODEL=str(tiny_model), HF_HUB_OFFLINE="1")
    with SearchEngine.open(index_copy, create=False) as engine:
        before = engine.counts()["documents"]
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(index_copy), str(stop)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()[-2000:]
        writer = subprocess.run(
            [
                sys.executable,
                "-c",
                "from beto_search.cli import main; main()",
                "ingest",
                str(docs),
                "--index",
                str(index_copy),
                "-q",
                "--json",
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=400,
        )
        stop.touch()
        out, _err = reader.communicate(timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
    assert writer.returncode == 0, writer.stderr
    assert json.loads(writer.stdout.strip().splitlines()[-1])["added"] == 600
    report = json.loads(out.strip().splitlines()[-1])
    print(
        f"{report['queries']} queries ({report['reopened']} reopens) during the ingest, "
        f"{report['n_failures']} failures, document counts seen {report['doc_counts']}"
    )
    assert report["n_failures"] == 0, report["failures"]
    assert report["queries"] >= 30, report
    assert report["doc_counts"][0] >= before and report["doc_counts"][-1] == before + 600
    with SearchEngine.open(index_copy, create=False) as engine:
        assert engine.verify() == []

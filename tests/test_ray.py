"""Distributed encoding on a real two-node Ray cluster (two ``ray start`` nodes on this machine).

One cluster serves the whole module (Ray starts slowly on small machines). Each test compares
with a local ingest of the same corpus: same documents, chunks and ids, embeddings within 1e-4
cosine; a worker killed mid-ingest and a driver killed mid-ingest lose and duplicate nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from beto_search import SearchEngine
from beto_search.cli import cli
from beto_search.distributed import RayEmbedder  # imports ray lazily
from beto_search.testing import SPANISH_WORDS
from tests.paths import CORPUS, ROOT


def _ray():
    return pytest.importorskip(
        "ray", reason="Ray is not installed (pip install 'beto-search[ray]')"
    )


RAY = Path(sys.executable).parent / "ray"
ACTOR_TITLE = "MapBatches(_ChunkEncoder)"  # in the process title of each encoding actor


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cluster_env() -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
        HF_HUB_OFFLINE="1",
        RAY_AUTH_MODE="disabled",  # no token written under ~/.ray by a throwaway cluster
        RAY_USAGE_STATS_ENABLED="0",
        RAY_DEDUP_LOGS="0",
        OMP_NUM_THREADS="1",
    )


def _pids_under(temp_dir: str) -> list[int]:
    """Processes of the nodes started with ``temp_dir`` (their command lines name it)."""
    import psutil

    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(temp_dir in part for part in (p.info["cmdline"] or [])):
                out.append(p.info["pid"])
        except (psutil.Error, TypeError):
            continue
    return out


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head node and a worker node, one CPU each, each with its own temp dir; torn down whole."""
    ray = _ray()
    if not RAY.exists():
        pytest.skip("the 'ray' command is not installed next to this Python")
    env = _cluster_env()
    port = _free_port()
    address = f"127.0.0.1:{port}"
    temps = [tempfile.mkdtemp(prefix="bsray", dir="/tmp") for _ in range(2)]
    common = [
        "--num-cpus",
        "1",
        "--num-gpus",
        "0",
        "--object-store-memory",
        "200000000",
        "--disable-usage-stats",
        "--block",
    ]
    procs = []
    old_env = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the in-process driver must match the cluster
    os.environ.pop("RAY_ADDRESS", None)
    try:
        procs.append(
            subprocess.Popen(
                [
                    str(RAY),
                    "start",
                    "--head",
                    "--port",
                    str(port),
                    "--node-ip-address",
                    "127.0.0.1",
                    "--include-dashboard",
                    "false",
                    "--temp-dir",
                    temps[0],
                    *common,
                ],
                env=env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait_for_nodes(address, 1, procs)
        procs.append(
            subprocess.Popen(
                [
                    str(RAY),
                    "start",
                    "--address",
                    address,
                    "--node-ip-address",
                    "127.0.0.1",
                    "--temp-dir",
                    temps[1],
                    *common,
                ],
                env=env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait_for_nodes(address, 2, procs)
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for p in reversed(procs):  # SIGTERM: ``ray start --block`` stops its node's processes
            if p.poll() is None:
                p.terminate()
        for p in reversed(procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=60)
        for p in procs:  # whatever is left in the nodes' sessions or process groups
            for pid in _pids_under(temps[0]) + _pids_under(temps[1]):
                _kill(pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        for t in temps:
            shutil.rmtree(t, ignore_errors=True)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _alive_nodes(address: str) -> int:
    """Alive nodes as seen by a short-lived driver in a subprocess (keeps this one clean)."""
    code = (
        f"import ray; ray.init(address={address!r}, logging_level='ERROR'); "
        "print(sum(n['Alive'] for n in ray.nodes()))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        env=_cluster_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        return int(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


def _wait_for_nodes(address: str, n: int, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise AssertionError("a 'ray start' process exited early")
        if _alive_nodes(address) >= n:
            return
        time.sleep(1)
    raise AssertionError(f"the Ray cluster at {address} did not reach {n} nodes")


# ----- corpora and comparisons --------------------------------------------------------------
def _jsonl_corpus(folder: Path, files: int, per_file: int = 130) -> int:
    """Short one-chunk documents (128-document transactions), as the reliability tests use."""
    rng = random.Random(7)
    words = list(SPANISH_WORDS)
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        with (folder / f"lote{f}.jsonl").open("w", encoding="utf-8") as fh:
            for i in range(per_file):
                text = " ".join(rng.choice(words) for _ in range(25)) + f" número {f}-{i}."
                fh.write(json.dumps({"id": f"l{f}-{i}", "text": text}, ensure_ascii=False) + "\n")
    return files * per_file


def _rows(index: Path) -> tuple[list[tuple], np.ndarray]:
    """(doc id, ordinal, start, end, text) of every chunk in order, and their vectors."""
    con = sqlite3.connect(index / "index.db")
    try:
        rows = con.execute(
            "SELECT c.doc_id, c.ordinal, c.start, c.end, c.text, e.vector FROM chunks c "
            "JOIN embeddings e ON e.chunk_id = c.rowid ORDER BY c.doc_id, c.ordinal"
        ).fetchall()
    finally:
        con.close()
    vectors = np.stack([np.frombuffer(r[5], dtype=np.float32) for r in rows])
    return [r[:5] for r in rows], vectors


def _assert_same_index(index: Path, reference: Path) -> None:
    rows, vecs = _rows(index)
    ref_rows, ref_vecs = _rows(reference)
    assert len(rows) == len(set(rows)), "duplicated chunks"
    assert rows == ref_rows  # same documents, chunks, spans and texts
    cosine = (vecs * ref_vecs).sum(axis=1)
    assert cosine.min() >= 1 - 1e-4, cosine.min()
    with (
        SearchEngine.open(index, create=False) as engine,
        SearchEngine.open(reference, create=False) as ref,
    ):
        assert engine.verify() == []
        info, ref_info = engine.info(), ref.info()
        assert (info["documents"], info["chunks"]) == (ref_info["documents"], ref_info["chunks"])


def _local_index(tmp_path: Path, model: Path, docs: Path) -> Path:
    index = tmp_path / "local"
    with SearchEngine.open(index, model=str(model), device="cpu") as engine:
        engine.ingest([docs])
    return index


# ----- tests ---------------------------------------------------------------------------------
def test_local_path_never_imports_ray() -> None:
    code = (
        "import sys; import beto_search, beto_search.cli, beto_search.engine, "
        "beto_search.index.indexer, beto_search.distributed; print('ray' in sys.modules)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert res.stdout.strip() == "False", res.stderr


def test_without_ray_the_cli_says_how_to_install_it(
    cli_run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # ``import ray`` raises ImportError
    res = cli_run("ingest", CORPUS, "--index", tmp_path / "idx", "--model", cli_run.model, "--ray")
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines() == [
        (
            "Error: Distributed encoding needs Ray Data; install it with pip install "
            "'beto-search[ray]'."
        )
    ]
    assert not (tmp_path / "idx").exists()  # nothing opened, nothing loaded


def test_workers_get_the_index_encoder_facts(tiny_model: Path, tmp_path: Path) -> None:
    _ray()
    from beto_search.errors import InputError

    with SearchEngine.open(tmp_path / "idx", model=str(tiny_model), pooling="max") as engine:
        engine.add([{"id": "a", "text": "El río Ebro pasa por Zaragoza."}])
    with SearchEngine.open(tmp_path / "idx", create=False) as engine:
        embedder = RayEmbedder.for_engine(engine, workers=3)
        m = engine.manifest
        assert m is not None
        assert (embedder.model, embedder.pooling, embedder.precision, embedder.dimension) == (
            m.encoder,
            "max",
            m.precision,
            m.dimension,
        )
        assert embedder.precision == "fp32" and embedder.workers == 3  # concrete, not "auto"
    with pytest.raises(InputError, match="concrete precision"):
        RayEmbedder(str(tiny_model), precision="auto")


@pytest.mark.slow
def test_two_nodes_encode_and_match_a_local_ingest(
    cluster: str, tiny_model: Path, tmp_path: Path
) -> None:
    docs = CORPUS
    reference = _local_index(tmp_path, tiny_model, docs)
    index = tmp_path / "ray"
    with SearchEngine.open(index, model=str(tiny_model), device="cpu") as engine:
        with RayEmbedder.for_engine(
            engine, address=cluster, workers=2, cpus_per_worker=1, rows_per_task=2
        ) as embedder:
            summary = engine.ingest([docs], embedder=embedder)
            assert summary.added == 54 and summary.chunks == sum(embedder.nodes.values())
            assert len(embedder.nodes) == 2, f"encoding ran on {dict(embedder.nodes)}"
            # texts in, as a re-embedding of an index that does not tokenize with the model
            # would send them; an empty batch keeps its place
            texts = [["El río Ebro.", "La montaña nevada."], [], ["Una canción popular."]]
            out = list(embedder(texts))
            local = engine.encoder
            assert [v.shape for v in out] == [
                (2, local.dimension),
                (0, local.dimension),
                (1, local.dimension),
            ]
            for got, batch in zip(out, texts, strict=True):
                if batch:
                    cosine = (got * local.encode_documents(batch)).sum(axis=1)
                    assert cosine.min() >= 1 - 1e-4
        assert _ray().is_initialized() is False  # the embedder disconnected what it connected
    _assert_same_index(index, reference)


@pytest.mark.slow
def test_worker_killed_mid_ingest_loses_and_duplicates_nothing(
    cluster: str, tiny_model: Path, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    _jsonl_corpus(docs, 5)  # 650 one-chunk documents: 6 transactions
    reference = _local_index(tmp_path, tiny_model, docs)
    index = tmp_path / "ray"
    killed: list[int] = []
    with SearchEngine.open(index, model=str(tiny_model), device="cpu") as engine:
        embedder = RayEmbedder.for_engine(
            engine, address=cluster, workers=2, cpus_per_worker=1, rows_per_task=2
        )

        def killing(batches):  # SIGKILL an encoding actor once the first batch is written
            for n, vectors in enumerate(embedder(batches)):
                if n == 1:
                    victim = next(iter(embedder.pids))
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)
                yield vectors

        with embedder:
            summary = engine.ingest([docs], embedder=killing)
    assert killed, "no actor was killed: the ingest had a single batch"
    assert summary.added == 650 and summary.chunks == 650
    assert sum(embedder.pids.values()) == 650  # each chunk encoded once, as far as results go
    import psutil

    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == "zombie"
    _assert_same_index(index, reference)


def _cli(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "beto-search"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "beto_search.cli"]
    return [*base, *args]


def _count(db: Path, table: str = "documents") -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_driver_killed_then_verify_and_rerun_encodes_only_the_rest(
    cluster: str, tiny_model: Path, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    total = _jsonl_corpus(docs, 6)
    reference = _local_index(tmp_path, tiny_model, docs)
    index = tmp_path / "ray"
    db = index / "index.db"
    env = dict(_cluster_env(), BETO_SEARCH_MODEL=str(tiny_model))
    # windows of 200 chunks: the driver waits on the cluster between windows, where it dies
    cmd = _cli(
        "ingest",
        str(docs),
        "--index",
        str(index),
        "-q",
        "--json",
        "--device",
        "cpu",
        "--ray",
        cluster,
        "--ray-workers",
        "2",
        "--ray-window",
        "200",
    )
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        start = time.monotonic()
        while proc.poll() is None and _count(db) == 0:
            if time.monotonic() - start > 300:
                proc.kill()
                pytest.fail(f"the ingest wrote nothing in 300 s: {proc.communicate()[1][-2000:]!r}")
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    present = _count(db)
    assert 0 < present < total, f"{present} of {total} documents: not killed mid-way"
    res = CliRunner().invoke(cli, ["verify", "--index", str(index)])
    assert res.exit_code == 0, res.output

    rerun = subprocess.run(
        [*cmd[:-4], "--ray-workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["unchanged"] == present
    assert summary["added"] == total - present
    assert summary["chunks"] == total - present  # only what was missing was encoded
    _assert_same_index(index, reference)


@pytest.mark.slow
def test_reembed_on_two_nodes_matches_a_local_reembed(
    cluster: str, tiny_model: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from beto_search.cli import cli
    from beto_search.testing import build_bert_folder

    target = build_bert_folder(
        tmp_path / "target", tiny_model / "vocab.txt", seed=7
    )  # another model of the same shape: new vectors for every chunk
    base = _local_index(tmp_path, tiny_model, CORPUS)
    local, distributed = tmp_path / "reembed-local", tmp_path / "reembed-ray"
    shutil.copytree(base, local)
    shutil.copytree(base, distributed)
    with SearchEngine.open(local, create=False, device="cpu") as engine:
        engine.reembed(str(target))
    res = CliRunner().invoke(
        cli,
        [
            "reembed", "--index", str(distributed), "--model", str(target), "--device", "cpu",
            "--ray", cluster, "--ray-workers", "2", "--json", "-q",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["generation"] == 1 and out["chunks"] == sum(out["ray_nodes"].values())
    assert len(out["ray_nodes"]) == 2, f"encoding ran on {out['ray_nodes']}"
    _assert_same_index(distributed, local)
    with SearchEngine.open(distributed, create=False) as engine:
        assert engine.manifest is not None and engine.manifest.encoder == str(target.resolve())

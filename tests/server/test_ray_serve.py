"""``beto-search serve --ray`` on a real two-node Ray cluster (two ``ray start`` nodes here).

The fast tests drive ``RayEngine`` (the ingress's engine) over stand-in handles: shards that fail
or hang leave a search partial and named, never an error or a hang. The slow test starts one
``serve --ray --replicas 2`` over a 2-shard index on the cluster of tests/test_ray.py and checks:
the same top results as the library on the same index; replicas on both nodes; a replica killed
-9 during concurrent queries (at most 5 % fail or are partial, all answer after the restart); a
document written through the API found within 10 s; a graceful shutdown on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from beto_search import SearchEngine
from tests.encoders import HashEncoder
from tests.paths import CORPUS, ROOT
from tests.test_ray import _cluster_env, _free_port, _ray, cluster  # noqa: F401

KEY = "clave-de-prueba"
QUERIES = ["río", "montaña nevada", "canción popular", "historia de España", "el mar"]


# ----- RayEngine over stand-in handles (no Ray) --------------------------------------------------
class _Response:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def result(self, timeout_s: float | None = None) -> Any:
        return self.fn(timeout_s)


class _Method:
    def __init__(self, handle: _Handle, name: str) -> None:
        self.handle, self.name = handle, name

    def remote(self, *args: Any) -> _Response:
        h = self.handle

        def answer(timeout_s: float | None) -> Any:
            if h.mode == "dead":
                raise RuntimeError("ActorDiedError")
            if h.mode == "hang":
                time.sleep(timeout_s or 0)
                raise TimeoutError
            return getattr(h.replica, self.name)(*args)

        return _Response(answer)


class _Handle:
    """What a Ray Serve handle gives: ``handle.method.remote(...).result(timeout_s=...)``."""

    def __init__(self, replica: Any) -> None:
        self.replica, self.mode = replica, "ok"

    def __getattr__(self, name: str) -> _Method:
        return _Method(self, name)


@pytest.fixture
def sharded(tmp_path: Path) -> Path:
    docs = [
        {"id": f"d{i}", "text": f"El río número {i} baja de la montaña nevada hacia el mar."}
        for i in range(40)
    ]
    with SearchEngine.open(tmp_path / "idx", HashEncoder(), index_type="flat", shards=2) as e:
        e.add(docs)
    return tmp_path / "idx"


def _ray_engine(index: Path, timeout: float = 1.0) -> tuple[Any, list[_Handle]]:
    from beto_search.server.app import ServerSettings
    from beto_search.server.ray_serve import RayEngine, ShardReplica, shard_folders

    settings = ServerSettings(index=str(index))
    handles = [_Handle(ShardReplica(str(f), {})) for f in shard_folders(index)]
    return RayEngine(handles, settings, timeout=timeout, write_timeout=timeout), handles


def test_ray_engine_matches_the_sharded_engine(sharded: Path) -> None:
    engine, _ = _ray_engine(sharded)
    qvec = np.asarray(HashEncoder().encode_queries(["río montaña"]), dtype=np.float32)[0]
    with SearchEngine.open(sharded, HashEncoder(), create=False) as local:
        for mode in ("hybrid", "semantic", "lexical"):
            want = local.search("río montaña", k=10, mode=mode)
            got = engine.search("río montaña", k=10, mode=mode, query_vector=qvec)
            assert [(h.doc_id, round(h.score, 6)) for h in got] == [
                (h.doc_id, round(h.score, 6)) for h in want
            ]
            assert [(h.snippet, h.location, h.dense_score) for h in got] == [
                (h.snippet, h.location, h.dense_score) for h in want
            ]
            assert got.failed_shards == []
        assert [h.doc_id for h in engine.similar("d3", 5)] == [
            h.doc_id for h in local.similar("d3", 5)
        ]
        assert engine.get_document("d7") == local.get_document("d7")
        assert engine.info()["documents"] == 40


class _LengthReranker:
    """A stand-in cross-encoder: shorter passages first."""

    name, precision = "length", "fp32"

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        return -np.asarray([len(p) for p in passages], dtype=np.float64)


def test_ray_engine_scores_lexically_as_the_sharded_engine(tmp_path: Path) -> None:
    """Global bm25 statistics, the rerank stage and the filter warnings, as ShardedEngine: on
    documents whose term statistics differ by shard (each shard's own bm25 would rank them
    otherwise)."""
    words = [
        "montaña",
        "nevada",
        "valle",
        "bosque",
        "puente",
        "molino",
        "camino",
        "pueblo",
        "iglesia",
        "castillo",
    ]
    docs = [
        {
            "id": f"v{i}",
            "text": "río " * (1 + i % 4) + " ".join(words[(i * 7 + j) % 10] for j in range(i % 11)),
            "metadata": {"tema": "agua" if i % 2 else "tierra"},
        }
        for i in range(60)
    ]
    with SearchEngine.open(tmp_path / "v", HashEncoder(), index_type="flat", shards=3) as e:
        e.add(docs)
    engine, _ = _ray_engine(tmp_path / "v")
    with SearchEngine.open(tmp_path / "v", HashEncoder(), create=False) as local:
        for q in ("río montaña", "castillo puente río"):
            qvec = np.asarray(HashEncoder().encode_queries([q]), dtype=np.float32)[0]
            for mode in ("hybrid", "lexical"):
                for kw in ({}, {"rerank": _LengthReranker(), "rerank_depth": 5}):
                    want = local.search(q, k=8, mode=mode, **kw)
                    got = engine.search(q, k=8, mode=mode, query_vector=qvec, **kw)
                    assert [h.to_dict() for h in got] == [h.to_dict() for h in want], (q, kw)
                    assert got.failed_shards == [] and got.warnings == []
        want = local.search("río", k=5, where={"temas": "agua"})
        got = engine.search("río", k=5, where={"temas": "agua"}, query_vector=qvec)
        assert got.warnings == want.warnings and "temas" in got.warnings[0] and list(got) == []


@pytest.mark.parametrize("mode", ["dead", "hang"])
def test_a_shard_down_leaves_the_search_partial_and_named(sharded: Path, mode: str) -> None:
    from beto_search.errors import StorageError

    engine, handles = _ray_engine(sharded, timeout=0.5)
    qvec = np.asarray(HashEncoder().encode_queries(["río"]), dtype=np.float32)[0]
    whole = engine.search("río", k=40, query_vector=qvec)
    handles[1].mode = mode
    started = time.monotonic()
    hits = engine.search("río", k=40, query_vector=qvec)
    assert time.monotonic() - started < 5  # bounded by the timeout, never a hang
    assert hits.failed_shards == ["shard-1"]
    assert 0 < len(hits) < len(whole)
    from beto_search.shards import shard_of

    assert all(shard_of(h.doc_id, 2) == 0 for h in hits)
    with pytest.raises(StorageError, match="shard-1 of the index is not answering"):
        engine.add([{"id": next(f"n{i}" for i in range(99) if shard_of(f"n{i}", 2)), "text": "x"}])
    handles[1].mode = "ok"
    assert engine.search("río", k=40, query_vector=qvec).failed_shards == []


def test_local_serve_path_never_imports_ray(sharded: Path) -> None:
    code = (
        "import sys; from beto_search.server import create_app, ServerSettings; "
        "import beto_search.cli; from beto_search import SearchEngine; "
        "from tests.encoders import HashEncoder; "
        f"e = SearchEngine.open({str(sharded)!r}, HashEncoder(), create=False); "
        "e.search('río'); print('ray' in sys.modules)"
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


# ----- the real cluster ----------------------------------------------------------------------------
def _get(url: str, timeout: float = 30) -> dict[str, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=timeout) as res:
        return json.loads(res.read())


def _post(url: str, body: Any) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=60) as res:
        return json.loads(res.read())


def _search(base: str, q: str, k: int = 5) -> dict[str, Any]:
    return _get(f"{base}/api/search?q={urllib.request.quote(q)}&k={k}")


@pytest.fixture(scope="module")
def served(cluster: str, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:  # noqa: F811
    """``serve --ray CLUSTER --replicas 2`` over a 2-shard index of the Spanish corpus."""
    index = tmp_path_factory.mktemp("rayserve") / "idx"
    with SearchEngine.open(index, model=str(tiny_model), device="cpu", shards=2) as engine:
        engine.ingest([CORPUS])
    port = _free_port()
    log = open(index.parent / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "beto_search.cli", "serve", "--index", str(index), "--ray",
         cluster, "--replicas", "2", "--port", str(port), "--api-key", KEY],
        env=_cluster_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise AssertionError((index.parent / "serve.log").read_text()[-3000:])
            with contextlib.suppress(OSError, ValueError):
                if _search(base, "río", 1)["results"]:
                    break
            assert time.monotonic() < deadline, (index.parent / "serve.log").read_text()[-3000:]
            time.sleep(2)
        yield base, index, proc, cluster
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=90)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _shard_replicas(address: str) -> list[dict[str, Any]]:
    """Live shard replicas as {pid, node, name}: asked through the shards' own handles (many
    calls, spread over the replicas by Ray Serve's router) by a short-lived driver."""
    code = (
        "import json, ray; from ray import serve; "
        f"ray.init(address={address!r}, logging_level='ERROR'); "
        "seen = {}\n"
        "for name in ('shard-0', 'shard-1'):\n"
        "    h = serve.get_deployment_handle(name, app_name='beto-search')\n"
        "    for _ in range(24):\n"
        "        try:\n"
        "            w = h.where.remote().result(timeout_s=10)\n"
        "        except Exception:\n"
        "            continue\n"
        "        seen[w['pid']] = dict(w, name=name)\n"
        "print(json.dumps(list(seen.values())))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        env=_cluster_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    lines = res.stdout.strip().splitlines()
    assert lines, res.stderr[-2000:]
    return json.loads(lines[-1])


@pytest.mark.slow
def test_serve_on_ray(served: Any, tiny_model: Path) -> None:
    base, index, proc, address = served
    # the same top results as the library (the CLI's engine) on the same index, with the same
    # scores: lexical ones under global bm25 statistics over the shards, as ShardedEngine
    with SearchEngine.open(index, create=False, device="cpu") as local:
        for q in QUERIES:
            for mode in ("hybrid", "lexical"):
                want = local.search(q, k=5, mode=mode)
                got = _get(f"{base}/api/search?q={urllib.request.quote(q)}&k=5&mode={mode}")
                assert [r["doc_id"] for r in got["results"]] == [h.doc_id for h in want], q
                assert [r["score"] for r in got["results"]] == pytest.approx(
                    [h.score for h in want], rel=1e-6, abs=1e-9
                ), (q, mode)
                assert got["partial"] is False and got["failed_shards"] == []
    assert _get(f"{base}/api/info")["shards"] == 2
    with urllib.request.urlopen(f"{base}/", timeout=30) as res:  # the same page
        assert b"<html" in res.read().lower()

    # two deployments of two replicas, spread over both nodes
    deadline = time.monotonic() + 180  # each replica answers once it has started
    while len(replicas := _shard_replicas(address)) < 4:
        assert time.monotonic() < deadline, replicas
        time.sleep(2)
    assert len(replicas) == 4, replicas
    assert len({r["node"] for r in replicas}) == 2, replicas

    # a replica of shard-0 killed -9 during concurrent queries
    victim = next(r for r in replicas if "shard-0" in r["name"])
    outcomes: list[str] = []

    def query(i: int) -> None:
        try:
            out = _search(base, QUERIES[i % len(QUERIES)])
            outcomes.append("partial" if out["partial"] else "ok")
        except (OSError, ValueError) as exc:
            outcomes.append(f"error {exc}")

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(query, i) for i in range(40)]
        time.sleep(0.5)
        os.kill(victim["pid"], signal.SIGKILL)
        futures += [pool.submit(query, i) for i in range(40, 80)]
        for f in futures:
            f.result()
    bad = [o for o in outcomes if o != "ok"]
    assert len(bad) <= 0.05 * len(outcomes), bad
    deadline = time.monotonic() + 120  # Ray Serve restarts the replica
    while len([r for r in _shard_replicas(address) if r["pid"] != victim["pid"]]) < 4:
        assert time.monotonic() < deadline, "the killed replica was not restarted"
        time.sleep(2)
    assert all(not _search(base, q)["partial"] for q in QUERIES)

    # a document written through the API, found within 10 s
    doc = {"id": "nuevo-1", "text": "El ornitorrinco azul nada en el embalse de Mequinenza."}
    assert _post(f"{base}/api/documents", {"documents": [doc]})["added"] == 1
    deadline = time.monotonic() + 10
    while True:
        hits = _search(base, "ornitorrinco Mequinenza")["results"]
        if hits and hits[0]["doc_id"] == "nuevo-1":
            break
        assert time.monotonic() < deadline, hits
        time.sleep(0.5)

    # graceful shutdown: SIGTERM ends the process cleanly and frees the port
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 0
    with pytest.raises((urllib.error.URLError, OSError)):
        _search(base, "río")


def test_serve_ray_refuses_an_exposed_keyless_server_before_starting_ray(
    cli_run, sharded: Path
) -> None:
    res = cli_run("serve", "--index", sharded, "--ray", "--host", "0.0.0.0")
    assert res.exit_code == 1
    assert "without an API key" in res.stderr and "Traceback" not in res.output + res.stderr
    assert res.stderr.count("\n") == 1
    res = cli_run("serve", "--index", sharded, "--replicas", "2")
    assert res.exit_code == 2 and "--replicas needs --ray" in res.stderr

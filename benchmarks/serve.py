"""`beto-search serve` under load: N concurrent clients over loopback for a bounded time.

Builds an index of ``--chunks`` chunks with ``add_embeddings`` (clustered random unit vectors and
short texts of corpus words: no encoding needed), whose encoder is a full-size BETO with random
weights (BETO's vocabulary and shape, so query encoding costs what BETO's does). Starts
``beto-search serve`` in a subprocess, then for each mode (lexical, hybrid) and client count runs
the clients for ``--seconds``, while another process keeps upserting and deleting documents in
the same index, and a ``compact`` runs in the middle of each multi-client phase. Reports QPS,
p50/p95/p99, errors, hits on documents deleted before the request started, the server's RSS over
the run, and the raw throughput of the encoder the server encodes queries with
(``engine.query_encoder`` of the same index: model, precision and runtime), measured in the same
run with the server stopped (batch 1 and batches of the client count), before and after the load.

    python benchmarks/serve.py --chunks 100000 --seconds 20 --clients 1,8

``--ray``: instead, the same index served three ways one after the other, with the same clients
and no churn: local ``serve``, ``serve --ray --replicas 1`` and ``serve --ray --replicas 2`` (a
local Ray instance started by the server): QPS and p50/p95 of each, i.e. what Ray Serve's proxy,
the ingress and the shard handles cost, and what a second replica gives on this machine.

    python benchmarks/serve.py --ray --chunks 20000 --seconds 15 --clients 1,4

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from beto_search import SearchEngine
from beto_search.backends import open_encoder
from beto_search.encoder import Encoder

from common import CORPUS, emit, full_beto, loadavg, paragraphs, percentiles, queries_from

CLI = [sys.executable, "-m", "beto_search.cli"]
INGESTER = """
import json, sys, time
import numpy as np
from beto_search import SearchEngine
idx, words, log, stop = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
rng = np.random.default_rng(1)
prev, n = [], 0
with SearchEngine.open(idx, create=False, wait=60) as engine, open(log, "w") as out:
    dim = int(engine.manifest.dimension)
    while not __import__("os").path.exists(stop):
        ids = [f"churn-{n}-{i}" for i in range(20)]
        n += 1
        vecs = rng.standard_normal((len(ids), dim)).astype(np.float32)
        engine.add_embeddings([{"id": i, "text": "marcador rotativo " + " ".join(rng.choice(words, 25))}
                               for i in ids],
                              vecs)
        if prev:
            engine.delete(prev)
            out.write(json.dumps({"deleted": prev, "at": time.time()}) + "\\n")
            out.flush()
        prev = ids
        time.sleep(1.0)
"""


def corpus_words_and_queries() -> tuple[list[str], list[str]]:
    """Words for the synthetic texts and short queries, from the Spanish corpus."""
    paras = paragraphs(CORPUS, min_words=4)
    words = sorted({w for p in paras for w in p.lower().split() if w.isalpha() and len(w) >= 3})
    return words, queries_from(paras, words=10)


def pct(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    out = percentiles(xs)
    return {k: round(v, 1) for k, v in out.items() if k != "mean_ms"}


def build_index(folder: Path, model: Path, precision: str, chunks: int, words: list[str]) -> str:
    rng = np.random.default_rng(0)
    enc = open_encoder(str(model), precision=precision, device="cpu")
    with SearchEngine.open(folder, encoder=enc) as engine:
        engine.add([{"id": "seed", "text": "índice de prueba"}])  # the manifest, from the encoder
        dim = int(enc.dimension)
        centres = rng.standard_normal((max(16, chunks // 1000), dim)).astype(np.float32)
        step = 25_000
        for start in range(0, chunks - 1, step):
            n = min(step, chunks - 1 - start)
            vecs = centres[rng.integers(0, len(centres), n)]
            vecs = vecs + 0.8 * rng.standard_normal((n, dim)).astype(np.float32)
            recs = [
                {"id": f"s{start + i}", "text": " ".join(rng.choice(words, 25))} for i in range(n)
            ]
            engine.add_embeddings(recs, vecs)
        return engine.vectors().kind


def warm_up(enc: Encoder, texts: list[str], tries: int = 12) -> None:
    """The first few calls of a model can be many times slower: call until one is fast."""
    first = None
    for _ in range(tries):
        t = time.perf_counter()
        enc.encode_queries(texts)
        took = time.perf_counter() - t
        first = first or took
        if took < first / 4:
            break


def raw_encoding_in_thread(index: Path, queries: list[str], batch: int, seconds: float) -> float:
    """``raw_encoding`` of the encoder the server uses: the index's ``query_encoder`` (the light
    ONNX Runtime graph where the index allows it), loaded in one thread and run in another, as the
    server's batcher does."""
    with SearchEngine.open(index, create=False) as engine:
        enc = engine.query_encoder
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(raw_encoding, enc, queries, batch, seconds).result()


def raw_encoding(enc: Encoder, queries: list[str], batch: int, seconds: float) -> float:
    """Queries per second of the encoder alone, in batches of ``batch``."""
    warm_up(enc, queries[:batch])
    done, i, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        part = [queries[(i + j) % len(queries)] for j in range(batch)]
        enc.encode_queries(part)
        done, i = done + batch, i + batch
    return done / (time.perf_counter() - t0)


class Phase:
    """Clients hammering the server for a bounded time; latencies, errors, churn hits."""

    def __init__(self, base: str, mode: str, clients: int, seconds: float, queries: list[str]):
        self.base, self.mode, self.clients, self.seconds = base, mode, clients, seconds
        self.queries = queries
        self.lat: list[float] = []
        self.errors: list[str] = []
        self.churn_hits: list[tuple[float, str]] = []  # (request start, churn doc id)
        self.lock = threading.Lock()

    def client(self, n: int, deadline: float) -> None:
        rng = np.random.default_rng(n)
        with httpx.Client(base_url=self.base, timeout=30) as c:
            while time.monotonic() < deadline:
                q = self.queries[int(rng.integers(len(self.queries)))]
                if rng.random() < 0.25:  # asks for the documents the ingester adds and deletes
                    q = "marcador rotativo " + q
                started_wall, t = time.time(), time.perf_counter()
                try:
                    r = c.get("/api/search", params={"q": q, "mode": self.mode, "k": 10})
                    took = time.perf_counter() - t
                    ok = r.status_code == 200
                    body = r.json() if ok else None
                except httpx.HTTPError as exc:
                    ok, body, took = False, None, time.perf_counter() - t
                    r = exc  # type: ignore[assignment]
                with self.lock:
                    if ok and body is not None:
                        self.lat.append(took)
                        self.churn_hits += [
                            (started_wall, h["doc_id"])
                            for h in body["results"]
                            if h["doc_id"].startswith("churn-")
                        ]
                    else:
                        self.errors.append(str(getattr(r, "status_code", r))[:100])

    def run(self, middle: Callable[[], None] | None = None) -> float:
        """Run the clients; ``middle`` starts halfway (in its own thread: it may outlast them)."""
        deadline = time.monotonic() + self.seconds
        threads = [
            threading.Thread(target=self.client, args=(i, deadline)) for i in range(self.clients)
        ]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        side = None
        if middle is not None:
            time.sleep(self.seconds / 2)
            side = threading.Thread(target=middle)
            side.start()
        for t in threads:
            t.join()
        took = time.perf_counter() - t0  # the clients' window, not the compact's
        if side is not None:
            side.join()
        return took


def ray_comparison(
    index: Path, queries: list[str], clients: list[int], modes: list[str], args: Any
) -> dict[str, Any]:
    """Local serve vs serve --ray with 1 and 2 replicas, side by side on the same index."""
    configs = {
        "local": [],
        "ray-1-replica": ["--ray", "--replicas", "1"],
        "ray-2-replicas": ["--ray", "--replicas", "2"],
    }
    out: dict[str, Any] = {}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    for name, extra in configs.items():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        cmd = [*CLI, "serve", "--index", str(index), "--port", str(port)]
        server = subprocess.Popen(
            [*cmd, "--precision", args.precision, *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        t0 = time.perf_counter()
        try:
            deadline = time.monotonic() + 600
            while True:
                try:
                    r = httpx.get(f"{base}/api/search", params={"q": queries[0]}, timeout=60)
                    if r.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{name}: the server did not start")
                time.sleep(1)
            started = round(time.perf_counter() - t0, 1)
            for q in queries[:10]:  # warm-up
                httpx.get(f"{base}/api/search", params={"q": q}, timeout=120)
            for mode in modes:
                for n in clients:
                    phase = Phase(base, mode, n, args.seconds, queries)
                    took = phase.run()
                    r = {
                        "qps": round(len(phase.lat) / took, 1),
                        **pct(phase.lat),
                        "errors": len(phase.errors),
                        "ready_s": started,
                    }
                    out[f"{name} {mode} {n}"] = r
                    print(
                        f"{name:15s} {mode:8s} {n} clients: {r['qps']} q/s  p50 {r['p50_ms']} ms"
                        f"  p95 {r['p95_ms']} ms  errors {r['errors']}  (ready in {started}s)",
                        flush=True,
                    )
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=20.0, help="per phase")
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--modes", default="lexical,hybrid")
    # onnx-int8: the fastest query graph on CPU (its queries run on the index's own int8 graph)
    ap.add_argument("--precision", default="onnx-int8")
    ap.add_argument("--no-compact", action="store_true", help="no compact during the phases")
    ap.add_argument("--raw-seconds", type=float, default=6.0, help="per raw-encoding batch size")
    ap.add_argument("--model-dir", default=None, help="reuse (or build into) this folder")
    ap.add_argument("--index-dir", default=None, help="reuse (or build into) this folder")
    ap.add_argument(
        "--ray", action="store_true", help="local serve vs serve --ray, 1 and 2 replicas"
    )
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="serve-bench-")
    work = Path(tmp.name)
    model = full_beto(Path(args.model_dir) if args.model_dir else work / "beto-full")
    words, queries = corpus_words_and_queries()
    index = Path(args.index_dir) if args.index_dir else work / "idx"
    t0 = time.perf_counter()
    if not (index / "index.db").exists():
        kind = build_index(index, model, args.precision, args.chunks, words)
    else:
        with SearchEngine.open(index, create=False) as engine:
            kind = engine.vectors().kind
    print(
        f"index: {args.chunks} chunks ({kind}) ready in {time.perf_counter() - t0:.1f}s", flush=True
    )
    clients = [int(c) for c in args.clients.split(",")]
    if args.ray:
        phases = ray_comparison(index, queries, clients, args.modes.split(","), args)
        emit(
            {
                "chunks": args.chunks,
                "index_type": kind,
                "precision": args.precision,
                "seconds_per_phase": args.seconds,
                "load_average": loadavg(),
                "phases": phases,
            }
        )
        if not args.index_dir:
            tmp.cleanup()
        return 0

    # the raw encoder, same model and precision, before the server starts (nothing else running)
    # measured before and after the load (the CPU is shared: the better of the two counts)
    raw_runs = [
        {
            b: raw_encoding_in_thread(index, queries, b, args.raw_seconds)
            for b in sorted({1, *clients})
        }
    ]
    print(f"raw query encoding ({args.precision}, before): {raw_runs[0]} queries/s", flush=True)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [*CLI, "serve", "--index", str(index), "--port", str(port), "--precision", args.precision],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ingester = None
    stop = work / "stop"
    base = f"http://127.0.0.1:{port}"
    rss: list[tuple[str, float]] = []
    results: dict[str, dict] = {}
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: {server.stderr.read()[-2000:]}")
            time.sleep(0.5)
        proc = psutil.Process(server.pid)
        sampling = threading.Event()
        label = ["warm-up"]

        def sample() -> None:
            while not sampling.is_set():
                rss.append((label[0], proc.memory_info().rss / 2**20))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for q in queries[:10]:  # warm-up: the FAISS file loaded, the model's first slow calls
            httpx.get(f"{base}/api/search", params={"q": q}, timeout=120)
        log = work / "churn.jsonl"
        ingester = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(INGESTER),
                str(index),
                json.dumps(words),
                str(log),
                str(stop),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        compacts: list[dict] = []

        def compact() -> None:
            t = time.perf_counter()
            out = subprocess.run(
                [*CLI, "compact", "--index", str(index), "--wait", "120"],
                check=False,
                env=env,
                capture_output=True,
                text=True,
            )
            compacts.append({"rc": out.returncode, "seconds": round(time.perf_counter() - t, 1)})

        for mode in args.modes.split(","):
            for n in clients:
                label[0] = f"{mode}-{n}"
                phase = Phase(base, mode, n, args.seconds, queries)
                took = phase.run(compact if n > 1 and not args.no_compact else None)
                deleted_at = {}
                if log.exists():
                    for line in log.read_text().splitlines():
                        rec = json.loads(line)
                        deleted_at.update({d: rec["at"] for d in rec["deleted"]})
                stale = sum(
                    1
                    for start, d in phase.churn_hits
                    if d in deleted_at and start > deleted_at[d] + 0.05
                )
                mem = [m for lab, m in rss if lab == label[0]]
                results[label[0]] = {
                    "clients": n,
                    "mode": mode,
                    "requests": len(phase.lat),
                    "qps": round(len(phase.lat) / took, 1),
                    **pct(phase.lat),
                    "errors": len(phase.errors),
                    "error_samples": phase.errors[:3],
                    "hits_on_deleted_docs": stale,
                    "churn_hits": len(phase.churn_hits),
                    "rss_mib_first_last_max": [round(mem[0]), round(mem[-1]), round(max(mem))]
                    if mem
                    else None,
                    "compact": compacts[-1] if n > 1 and compacts and not args.no_compact else None,
                }
                r = results[label[0]]
                print(
                    f"{mode:8s} {n} clients: {r['qps']} q/s  p50 {r['p50_ms']} ms  "
                    f"p95 {r['p95_ms']} ms  p99 {r['p99_ms']} ms  errors {r['errors']}  "
                    f"deleted-doc hits {stale} (of {len(phase.churn_hits)} churn hits)  RSS MiB {r['rss_mib_first_last_max']}  "
                    f"compact {r['compact']}",
                    flush=True,
                )
        sampling.set()
    finally:
        stop.touch()
        if ingester is not None:
            try:
                ingester.wait(timeout=60)
            except subprocess.TimeoutExpired:
                ingester.kill()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    raw_runs.append(
        {
            b: raw_encoding_in_thread(index, queries, b, args.raw_seconds)
            for b in sorted({1, *clients})
        }
    )
    print(f"raw query encoding ({args.precision}, after): {raw_runs[1]} queries/s", flush=True)
    raw = {f"batch_{b}": round(max(r[b] for r in raw_runs), 1) for b in raw_runs[0]}
    with SearchEngine.open(index, create=False) as engine:
        problems = engine.verify()
    print(f"index verifies after the run: {problems or 'ok'}", flush=True)
    hybrid_n = results.get(f"hybrid-{max(clients)}", {})
    ratio = None
    if hybrid_n.get("qps") and raw.get(f"batch_{max(clients)}"):
        ratio = round(hybrid_n["qps"] / raw[f"batch_{max(clients)}"], 2)
    print(f"hybrid {max(clients)} clients / raw encoding at batch {max(clients)}: {ratio}")
    summary = {
        "chunks": args.chunks,
        "index_type": kind,
        "precision": args.precision,
        "seconds_per_phase": args.seconds,
        "load_average": loadavg(),
        "raw_encoding_qps": raw,
        "phases": results,
        "hybrid_vs_raw_encoding": ratio,
        "verify": problems,
    }
    if not args.index_dir:
        tmp.cleanup()
    emit(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

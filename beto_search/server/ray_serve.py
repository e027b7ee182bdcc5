"""``beto-search serve --ray``: the same HTTP API and page, served by Ray Serve over shards.

One Ray Serve deployment per shard (``shard-0``, ``shard-1``, ...; an unsharded index is one
shard), each with R replicas that open their shard folder read-mostly and answer candidate
searches with a query VECTOR (``shards.callers.answer``, the very function a local shard
runs); one ingress deployment runs the very FastAPI app of ``beto-search serve``
(``create_app``) over ``RayEngine`` (ray_engine.py), an engine-like object that encodes each
query once and runs ``ShardedEngine``'s merge (``shards.merge``: global bm25 statistics, fusion
once, rerank, filter warnings) over the deployments' handles, each call bounded by a timeout. A
shard with no live replica leaves the search ``partial`` (its name in ``failed_shards``), never
a 500 and never a hang; writes are routed by document id to their shard, where the shard's
write lock keeps one writer at a time and every replica catches up from SQLite.

Ray is imported only in this module's functions, and only when ``--ray`` is given.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BetoSearchError, IndexNotFoundError
from ..ingest import IngestSummary
from ..shards.callers import CandidateRequest, ShardAnswer, answer, searcher
from ..shards.layout import MANIFEST_NAME, read_layout
from .ray_engine import SHARD_TIMEOUT, RayEngine, deployment_name
from .settings import ServerSettings, check_bind

log = logging.getLogger(__name__)

APP_NAME = "beto-search"


class RayServeError(BetoSearchError):
    """Ray Serve is missing, or the served index cannot be deployed."""


def require_serve() -> Any:
    """Import ``ray.serve``, or fail with one sentence saying how to install it."""
    try:
        from ray import serve
    except ImportError:
        raise RayServeError(
            "serving on Ray needs Ray Serve; install it with pip install 'beto-search[ray]'."
        ) from None
    return serve


def shard_folders(index: Path) -> list[Path]:
    """The index's shard folders (an unsharded index is its own single shard)."""
    if (index / MANIFEST_NAME).exists():
        return [index / f for f in read_layout(index)]
    if not (index / "index.db").exists():
        raise IndexNotFoundError(
            f"there is no index at {index}; create one with 'beto-search ingest FOLDER "
            f"--index {index}' first."
        )
    return [index]


# ----- a shard replica -------------------------------------------------------------------------
class ShardReplica:
    """One replica of one shard: its folder opened as an ordinary index (own SQLite readers,
    FAISS cache caught up from SQLite at every search). It encodes no query; the full encoder
    is loaded on the first write routed here (the shard's write lock keeps one writer)."""

    def __init__(self, folder: str, settings: dict[str, Any]) -> None:
        from ..engine import SearchEngine

        self.engine = SearchEngine.open_folder(
            Path(folder),
            create=False,
            wait=float(settings.get("write_wait", 5.0)),
            model=settings.get("model"),
            precision=settings.get("precision"),
            device=settings.get("device", "auto"),
            batch_size=int(settings.get("batch_size", 16)),
        )
        writes = settings.get("api_key") and not settings.get("read_only")
        if writes and self.engine.manifest is not None:
            # the full encoder now (seconds), not in the time of the first write routed here
            self.engine.encoder  # noqa: B018

    def manifest(self) -> dict[str, Any] | None:
        m = self.engine.refresh()
        return m.to_dict() if m is not None else None

    def answer(self, request: CandidateRequest) -> ShardAnswer:
        """The shard's part of a search (``shards.callers.answer``: the same as a local shard's,
        with the candidates' locations so that the ingress places its hits without a second
        call)."""
        return answer(self.engine, request)

    def dense_scores(self, chunk_ids: list[int], query_vector: np.ndarray) -> dict[int, float]:
        return searcher(self.engine).dense_scores(chunk_ids, query_vector)

    def document_vector(self, doc_id: str) -> Any:
        return searcher(self.engine).document_vector(doc_id)

    def get_document(self, doc_id: str) -> dict[str, Any] | None:
        return self.engine.get_document(doc_id)

    def info(self) -> dict[str, Any]:
        return self.engine.info()

    def facets(self, limit: int) -> dict[str, list[tuple[Any, int]]]:
        return self.engine.facets(None, limit)

    def add(self, records: list[dict[str, Any]]) -> IngestSummary:
        summary = self.engine.add(records)
        summary.new_ids = set()  # not needed by the ingress: do not ship it back
        return summary

    def delete(self, ids: list[str]) -> list[str]:
        return self.engine.delete(ids)

    def where(self) -> dict[str, Any]:
        """This replica's process and node (tests, operators)."""
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}


# ----- the ingress -------------------------------------------------------------------------------
class Ingress:
    """The ingress replica: the FastAPI app of ``beto-search serve`` (built on the replica by
    ``build_app``'s builder; the shard deployments are bound here so that they are deployed with
    it, and reached through their handles by name)."""

    def __init__(self, *shards: Any) -> None:
        self.shards = shards


def build_app(
    settings: ServerSettings,
    replicas: int = 1,
    shard_cpus: float = 0.25,
    timeout: float = SHARD_TIMEOUT,
    gpus: float | None = None,
) -> Any:
    """The Ray Serve application: a deployment per shard (``replicas`` each) and the ingress."""
    from dataclasses import asdict

    serve = require_serve()
    folders = shard_folders(Path(settings.index))
    options = asdict(settings)
    count = len(folders)

    def asgi_app() -> Any:
        """Run on the ingress replica: ``create_app`` over a ``RayEngine`` on the shards."""
        from ray import serve

        from .app import create_app

        here = ServerSettings(**options)
        handles = [
            serve.get_deployment_handle(deployment_name(i), app_name=APP_NAME) for i in range(count)
        ]
        return create_app(here, engine=RayEngine(handles, here, timeout))

    shards = [
        serve.deployment(
            ShardReplica,
            name=deployment_name(i),
            num_replicas=replicas,
            ray_actor_options={"num_cpus": shard_cpus},
            max_ongoing_requests=32,
            health_check_period_s=2,
            health_check_timeout_s=10,
            graceful_shutdown_timeout_s=10,
        ).bind(str(folder.resolve()), options)
        for i, folder in enumerate(folders)
    ]
    actor: dict[str, Any] = {"num_cpus": shard_cpus}
    if gpus:  # the ingress encodes the queries: the GPU, when the cluster has one, is its
        actor["num_gpus"] = gpus
    ingress = serve.deployment(
        serve.ingress(asgi_app)(Ingress),
        name="ingress",
        num_replicas=1,
        ray_actor_options=actor,
        max_ongoing_requests=256,
        graceful_shutdown_timeout_s=30,
    )
    return ingress.bind(*shards)


def serve_on_ray(
    settings: ServerSettings,
    address: str | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    shard_cpus: float = 0.25,
    timeout: float = SHARD_TIMEOUT,
    ready: threading.Event | None = None,
) -> None:
    """Deploy the index on Ray Serve, proxy on ``host:port``, until SIGINT/SIGTERM; then the
    application is deleted (in-flight requests finish) and Serve shut down."""
    settings = dataclasses.replace(settings, host=host)  # the Host check accepts the bound name
    warning = check_bind(host, settings)
    if warning:
        log.warning(warning)
        print(f"warning: {warning}", flush=True)
    folders = shard_folders(Path(settings.index))
    serve = require_serve()
    import ray

    if not ray.is_initialized():
        try:
            ray.init(
                address=None if address in (None, "local") else address,
                logging_level=logging.WARNING,
                include_dashboard=False,
            )
        except (ConnectionError, ValueError, RuntimeError) as exc:
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise RayServeError(f"could not start or reach the Ray cluster ({why}).") from None
    gpus = 0.5 if ray.cluster_resources().get("GPU", 0) >= 1 else None
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        # the proxy on the head node only: the nodes of one machine would share its port
        serve.start(http_options={"host": host, "port": port, "location": "HeadOnly"})
        app = build_app(settings, replicas, shard_cpus, timeout, gpus)
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        print(
            f"serving {len(folders)} shard(s) x {replicas} replica(s) on Ray at "
            f"http://{host}:{port}/",
            flush=True,
        )
        if ready is not None:
            ready.set()
        while not stop.wait(0.5):
            pass
        print("shutting down", flush=True)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        try:
            serve.delete(APP_NAME)
            serve.shutdown()
        except Exception as exc:  # the cluster may be gone already: nothing left to stop
            log.warning("Ray Serve shutdown: %s", exc)

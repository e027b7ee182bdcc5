"""``beto-search serve --ray``: the same HTTP API and page, served by Ray Serve over shards.

One Ray Serve deployment per shard (``shard-0``, ``shard-1``, ...; an unsharded index is one
shard), each with R replicas that open their shard folder read-mostly and answer candidate
searches with a query VECTOR; one ingress deployment runs the very FastAPI app of
``beto-search serve`` (``create_app``) over ``RayEngine``, an engine-like object that encodes
each query once, fans the vector out to the shard deployments through their handles (bounded
by a timeout), merges the raw candidates and fuses once, as ``ShardedEngine`` does locally. A
shard with no live replica leaves the search ``partial`` (its name in ``failed_shards``), never
a 500 and never a hang; writes are routed by document id to their shard, where the shard's
write lock keeps one writer at a time and every replica catches up from SQLite.

Ray is imported only here, and only when ``--ray`` is given.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..encoder import Encoder, normalize_rows
from ..errors import BetoSearchError, IndexNotFoundError, InputError, StorageError
from ..fusion import FusionConfig, resolve
from ..index.manifest import Manifest
from ..index.searcher import (
    Candidates,
    add_snippets,
    check_search,
    fuse_mode,
    hits_from_rows,
    plain_snippets,
)
from ..ingest import IngestSummary, as_document
from ..readers import clean_text
from ..shards import MANIFEST_NAME, _best, _merge_summaries, _sort_key, read_layout, shard_of
from ..types import Hit, locate
from .settings import ServerSettings, check_bind

log = logging.getLogger(__name__)

APP_NAME = "beto-search"
SHARD_TIMEOUT = 5.0  # seconds a shard call may take before the search goes on without it
WRITE_TIMEOUT = 120.0  # seconds a write to a shard may take (encoding a batch of documents)
MANIFEST_TTL = 1.0  # seconds the ingress trusts its copy of the index's manifest


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


def deployment_name(i: int) -> str:
    return f"shard-{i}"


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

    def candidates(
        self,
        query: str,
        depth: int,
        mode: str,
        where: dict[str, str] | None,
        source: str | None,
        query_vector: np.ndarray | None,
        exclude: set[int] | None = None,
    ) -> tuple[Candidates, dict[str, Any]]:
        """The shard's raw candidates, and where pages or sections start in their documents
        (so that the ingress places its hits without a second call)."""
        from ..index.searcher import Searcher

        found = Searcher(self.engine).search_candidates(
            query, depth, mode, where, source, None, None, query_vector, exclude
        )
        docs = sorted({r.doc_id for r in found.rows.values()})
        return found, self.engine.store.locations(docs)

    def dense_scores(self, chunk_ids: list[int], query_vector: np.ndarray) -> dict[int, float]:
        from ..index.searcher import Searcher

        return Searcher(self.engine).dense_scores(chunk_ids, query_vector)

    def locate(self, hits: list[Hit]) -> list[Hit]:
        from ..index.searcher import Searcher

        Searcher(self.engine).locate(hits)
        return hits

    def document_vector(self, doc_id: str) -> Any:
        from ..index.searcher import Searcher

        return Searcher(self.engine).document_vector(doc_id)

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


# ----- the ingress's engine ----------------------------------------------------------------------
class PartialHits(list[Hit]):
    """Search results that name the shards that did not answer (``failed_shards``)."""

    failed_shards: list[str]


class RayEngine:
    """SearchEngine's serving methods over shard deployment handles: the query encoded once
    here, candidates merged before fusion, shards that fail or time out left out and named."""

    def __init__(
        self,
        handles: list[Any],
        settings: ServerSettings,
        timeout: float = SHARD_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        from ..analyzer import SpanishAnalyzer

        self.handles, self.settings, self.timeout = handles, settings, timeout
        self.write_timeout = write_timeout
        self.count = len(handles)
        self._manifest: Manifest | None = None
        self._manifest_at = 0.0
        self._encoder: Encoder | None = None
        self._encoder_generation: int | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._analyzer_cls = SpanishAnalyzer

    # ----- calls -------------------------------------------------------------------------------
    def _start(self, i: int, method: str, *args: Any) -> Any:
        return getattr(self.handles[i], method).remote(*args)

    def _result(
        self, i: int, method: str, response: Any, *args: Any, timeout: float | None = None
    ) -> Any:
        """A shard call's result; a library error passes through, anything else (a dead
        replica, a timeout) is retried once on another replica within the timeout (writes,
        given their own ``timeout``, are not retried: the first may still be running)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        for attempt in range(1 if timeout else 2):
            try:
                left = max(0.1, deadline - time.monotonic())
                return response.result(timeout_s=left)
            except BetoSearchError:
                raise
            except Exception as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, BetoSearchError):
                    raise cause from None
                log.warning("%s %s failed (%s)", deployment_name(i), method, type(exc).__name__)
                if attempt or timeout or time.monotonic() >= deadline:
                    raise _ShardDown(i) from None
                response = self._start(i, method, *args)
        raise _ShardDown(i)

    def _call(self, i: int, method: str, *args: Any) -> Any:
        return self._result(i, method, self._start(i, method, *args), *args)

    def _fan_out(self, method: str, args_of: Any) -> tuple[dict[int, Any], list[str]]:
        """``method`` on every shard at once; (answers by shard, names of shards that failed)."""
        started = {i: (self._start(i, method, *args_of(i)), args_of(i)) for i in range(self.count)}
        out: dict[int, Any] = {}
        failed: list[str] = []
        for i, (response, args) in started.items():
            try:
                out[i] = self._result(i, method, response, *args)
            except _ShardDown:
                failed.append(deployment_name(i))
        return out, failed

    def _must(self, i: int, method: str, *args: Any, timeout: float | None = None) -> Any:
        """A call that has no partial answer (a document, a write): 503 if the shard is down."""
        try:
            return self._result(i, method, self._start(i, method, *args), *args, timeout=timeout)
        except _ShardDown:
            raise StorageError(
                f"{deployment_name(i)} of the index is not answering; try again in a moment."
            ) from None

    # ----- manifest and encoder ----------------------------------------------------------------
    @property
    def manifest(self) -> Manifest | None:
        """The index's manifest (the first shard that has one), re-read every second."""
        now = time.monotonic()
        if self._manifest is not None and now - self._manifest_at < MANIFEST_TTL:
            return self._manifest
        answers, _ = self._fan_out("manifest", lambda i: ())
        found = [answers[i] for i in sorted(answers) if answers[i] is not None]
        if found or not answers:
            self._manifest = Manifest.from_dict(found[0]) if found else self._manifest
        else:
            self._manifest = None
        self._manifest_at = now
        return self._manifest

    @property
    def query_encoder(self) -> Encoder:
        """The light query encoder, built once here through ``open_encoder`` (rebuilt when the
        index is re-embedded)."""
        from ..backends import open_encoder

        m = self.manifest
        if m is None:
            raise InputError("the index is empty; ingest documents first.")
        with self._lock:
            if self._encoder is None or self._encoder_generation != m.generation:
                enc: Encoder = open_encoder(
                    self.settings.model or m.encoder,
                    pooling=m.pooling,
                    precision=self.settings.precision or m.precision,
                    device=self.settings.device,
                    batch_size=self.settings.batch_size,
                    queries_only=True,
                )
                m.check_encoder(Path(self.settings.index), enc)
                self._encoder, self._encoder_generation = enc, m.generation
            return self._encoder

    @property
    def encoder(self) -> Encoder:
        # documents are encoded by their shard's writer; the ingress only needs queries
        return self.query_encoder

    @property
    def analyzer(self) -> Any:
        analyzer = getattr(self._local, "analyzer", None)
        if analyzer is None:
            analyzer = self._local.analyzer = self._analyzer_cls()
        return analyzer

    def fusion_config(self, fusion: str | None = None, alpha: float | None = None) -> FusionConfig:
        m = self.manifest
        return resolve(m.to_dict() if m is not None else None, fusion, alpha)

    # ----- reading -----------------------------------------------------------------------------
    def global_id(self, shard: int, chunk_id: int) -> int:
        return chunk_id * self.count + shard

    def _merge(
        self, answers: dict[int, tuple[Candidates, dict[str, Any]]], depth: int
    ) -> tuple[Candidates, dict[str, Any]]:
        """The shards' candidates under global ids, each side cut to the best ``depth``, and
        their documents' locations."""
        dense: dict[int, float] = {}
        lexical: dict[int, float] = {}
        rows: dict[int, Any] = {}
        located: dict[str, Any] = {}
        parts = {i: a[0] for i, a in answers.items()}
        for a in answers.values():
            located.update(a[1])
        for i, c in parts.items():
            dense.update((self.global_id(i, k), v) for k, v in c.dense.items())
            lexical.update((self.global_id(i, k), v) for k, v in c.lexical.items())
            rows.update((self.global_id(i, k), r) for k, r in c.rows.items())
        reach = sum(c.reach for c in parts.values())
        return Candidates(_best(dense, depth), _best(lexical, depth), rows, reach), located

    def _query_vector(self, query: str, given: np.ndarray | None, dim: int) -> np.ndarray:
        if given is None:
            given = np.asarray(self.query_encoder.encode_queries([query]), dtype=np.float32)
        vec = np.asarray(given, dtype=np.float32).reshape(1, -1)
        if vec.shape != (1, dim):
            raise InputError(f"the query vector must have shape ({dim},), not {vec.shape}.")
        return normalize_rows(vec)

    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "hybrid",
        fusion: str | None = None,
        alpha: float | None = None,
        where: dict[str, str] | None = None,
        source: str | None = None,
        snippets: bool = True,
        query_vector: np.ndarray | None = None,
    ) -> PartialHits:
        """The k best documents across the live shards (``failed_shards``: the others)."""
        check_search(query, k, mode, fusion, alpha)
        out = PartialHits()
        out.failed_shards = []
        manifest = self.manifest
        if manifest is None:
            return out
        config = self.fusion_config(fusion, alpha)
        query = clean_text(query)
        qvec = None
        if mode != "lexical":
            qvec = self._query_vector(query, query_vector, manifest.dimension)
        depth = max(4 * k, 50)
        while True:
            parts, failed = self._fan_out(
                "candidates", lambda i, d=depth: (query, d, mode, where, source, qvec)
            )
            merged, located = self._merge(parts, depth)
            fused = fuse_mode(mode, config, merged.dense, merged.lexical)
            hits = hits_from_rows(fused, merged.dense, merged.lexical, merged.rows, k)
            if len(hits) >= k or depth >= merged.reach:
                break
            depth *= 4
        down = set(failed)
        if qvec is not None:  # exact dense scores of lexical-only hits, as one index gives
            for i in sorted({h.chunk_id % self.count for h in hits if h.dense_score is None}):
                ids = [h.chunk_id // self.count for h in hits if h.chunk_id % self.count == i]
                try:
                    exact = self._call(i, "dense_scores", ids, qvec)
                except _ShardDown:
                    down.add(deployment_name(i))
                    continue
                for h in hits:
                    if h.dense_score is None and h.chunk_id % self.count == i:
                        h.dense_score = exact.get(h.chunk_id // self.count)
        if snippets:
            add_snippets(hits, query, self.analyzer)
        _locate(hits, located)
        out.extend(hits)
        out.failed_shards = sorted(down, key=lambda n: int(n.rsplit("-", 1)[1]))
        return out

    def similar(self, doc_id: str, k: int = 10) -> PartialHits:
        """Documents closest to a stored one, across the live shards."""
        if not isinstance(k, int) or k < 1:
            raise InputError("the number of results (k) must be a whole number of at least 1.")
        home = shard_of(doc_id, self.count)
        found = self._must(home, "document_vector", doc_id)
        if found is None:
            raise InputError(f"there is no document '{doc_id}' in the index.")
        qvec, own = found
        depth = max(4 * k + len(own), 50)
        while True:
            parts, failed = self._fan_out(
                "candidates",
                lambda i, d=depth: (
                    "",
                    d,
                    "semantic",
                    None,
                    None,
                    qvec,
                    set(own) if i == home else None,
                ),
            )
            merged, located = self._merge(parts, depth)
            hits = hits_from_rows(merged.dense, merged.dense, {}, merged.rows, k)
            if len(hits) >= k or depth >= merged.reach:
                break
            depth *= 4
        plain_snippets(hits)
        _locate(hits, located)
        out = PartialHits(hits)
        out.failed_shards = failed
        return out

    def get_document(self, doc_id: str) -> dict[str, Any] | None:
        i = shard_of(doc_id, self.count)
        doc: dict[str, Any] | None = self._must(i, "get_document", doc_id)
        if doc is not None:
            for c in doc.get("chunks", []):
                c["chunk_id"] = self.global_id(i, int(c["chunk_id"]))
        return doc

    def info(self) -> dict[str, Any]:
        """Totals over the shards that answer, and each shard's counts."""
        answers, failed = self._fan_out("info", lambda i: ())
        if not answers:
            raise StorageError("no shard of the index is answering; try again in a moment.")
        per = [answers[i] for i in sorted(answers)]
        first = next((f for f in per if f.get("chunks")), per[0])
        out = {
            **first,
            "documents": sum(f["documents"] for f in per),
            "chunks": sum(f["chunks"] for f in per),
            "seq": sum(f["seq"] for f in per),
            "bytes_on_disk": sum(f["bytes_on_disk"] for f in per),
            "shards": self.count,
            "per_shard": [
                {"shard": deployment_name(i), "documents": f["documents"], "chunks": f["chunks"]}
                for i, f in sorted(answers.items())
            ],
            "partial": bool(failed),
            "failed_shards": failed,
        }
        out.pop("files", None)
        return out

    def facets(self, limit: int = 20) -> dict[str, list[tuple[Any, int]]]:
        answers, _ = self._fan_out("facets", lambda i: (1_000_000,))
        total: dict[str, dict[Any, int]] = {}
        for part in answers.values():
            for key, values in part.items():
                per = total.setdefault(key, {})
                for value, n in values:
                    per[value] = per.get(value, 0) + n
        return {
            key: sorted(per.items(), key=lambda vn: (-vn[1], *_sort_key(vn[0])))[:limit]
            for key, per in sorted(total.items())
        }

    # ----- writing -----------------------------------------------------------------------------
    def add(self, records: list[dict[str, Any]]) -> IngestSummary:
        """Each document to its shard's writer (whole documents: a shard that is down refuses
        its part with a 503, the others are written)."""
        routed: dict[int, list[dict[str, Any]]] = {}
        for r in records:
            routed.setdefault(shard_of(as_document(r).id, self.count), []).append(r)
        return _merge_summaries(
            [self._must(i, "add", part, timeout=self.write_timeout) for i, part in routed.items()]
        )

    def delete(self, ids: list[str]) -> list[str]:
        routed: dict[int, list[str]] = {}
        for doc_id in ids:
            routed.setdefault(shard_of(doc_id, self.count), []).append(doc_id)
        return [
            d
            for i, part in routed.items()
            for d in self._must(i, "delete", part, timeout=self.write_timeout)
        ]

    def close(self) -> None:
        """Nothing to release here: the shard replicas own their folders."""


def _locate(hits: list[Hit], located: dict[str, Any]) -> None:
    """Each hit's page or section (``Searcher.locate``, from the locations the shards sent)."""
    for h in hits:
        if h.doc_id in located:
            if h.highlight_spans:
                span = (min(a for a, _ in h.highlight_spans), max(b for _, b in h.highlight_spans))
            elif h.snippet:
                span = (h.snippet_start, h.snippet_end)
            else:
                span = (h.start, h.end)
            h.location = locate(located[h.doc_id], *span)


class _ShardDown(Exception):
    """A shard call failed twice or timed out."""

    def __init__(self, shard: int) -> None:
        super().__init__(deployment_name(shard))
        self.shard = shard


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

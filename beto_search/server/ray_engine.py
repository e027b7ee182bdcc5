"""The ingress's engine of ``serve --ray``: ``RayEngine`` answers SearchEngine's serving methods
over the shard deployments' handles, through ``ServeShardCaller`` (the ``ShardCaller`` of
``shards.merge`` for Ray Serve): the same merge, global bm25 statistics, rerank stage and filter
warnings as ``ShardedEngine``; shards that fail or time out are left out and named.

Ray itself is not imported here: the handles come from ``ray_serve.build_app``."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..encoder import Encoder
from ..errors import BetoSearchError, InputError, StorageError
from ..fusion import FusionConfig, resolve
from ..index.candidates import check_search
from ..index.manifest import Manifest
from ..ingest import IngestSummary, as_document
from ..readers import clean_text
from ..rerank import DEFAULT_DEPTH, Reranker
from ..shards import merge
from ..shards.callers import CandidateRequest, ShardAnswer
from ..shards.layout import global_id, shard_of
from ..types import Hit, SearchResults
from .settings import ServerSettings

log = logging.getLogger(__name__)

SHARD_TIMEOUT = 5.0  # seconds a shard call may take before the search goes on without it
WRITE_TIMEOUT = 120.0  # seconds a write to a shard may take (encoding a batch of documents)
MANIFEST_TTL = 1.0  # seconds the ingress trusts its copy of the index's manifest


def deployment_name(i: int) -> str:
    return f"shard-{i}"


# ----- the shard caller over deployment handles --------------------------------------------------
class _ShardDown(Exception):
    """A shard call failed twice or timed out."""

    def __init__(self, shard: int) -> None:
        super().__init__(deployment_name(shard))
        self.shard = shard


class ServeShardCaller:
    """A ``ShardCaller`` over Ray Serve deployment handles (``handle.method.remote(...)``): every
    call bounded by ``timeout``; a shard that fails or times out is left out and named, never an
    error and never a hang."""

    def __init__(self, handles: list[Any], timeout: float = SHARD_TIMEOUT) -> None:
        self.handles, self.timeout = handles, timeout

    @property
    def count(self) -> int:
        return len(self.handles)

    def start(self, i: int, method: str, *args: Any) -> Any:
        return getattr(self.handles[i], method).remote(*args)

    def result(
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
                response = self.start(i, method, *args)
        raise _ShardDown(i)

    def fan_out(
        self, method: str, args_of: Callable[[int], tuple[Any, ...]], shards: Any = None
    ) -> tuple[dict[int, Any], list[int]]:
        """``method`` on these shards (default all) at once; (answers by shard, shards that
        failed)."""
        which = range(self.count) if shards is None else shards
        started = {i: (self.start(i, method, *args_of(i)), args_of(i)) for i in which}
        out: dict[int, Any] = {}
        failed: list[int] = []
        for i, (response, args) in started.items():
            try:
                out[i] = self.result(i, method, response, *args)
            except _ShardDown:
                failed.append(i)
        return out, failed

    def must(self, i: int, method: str, *args: Any, timeout: float | None = None) -> Any:
        """A call that has no partial answer (a document, a write): 503 if the shard is down."""
        try:
            return self.result(i, method, self.start(i, method, *args), *args, timeout=timeout)
        except _ShardDown:
            raise StorageError(
                f"{deployment_name(i)} of the index is not answering; try again in a moment."
            ) from None

    # the ShardCaller protocol (shards.merge)
    def candidates(
        self, requests: Mapping[int, CandidateRequest]
    ) -> tuple[dict[int, ShardAnswer], list[int]]:
        asks = {i: dataclasses.replace(r, with_locations=True) for i, r in requests.items()}
        return self.fan_out("answer", lambda i: (asks[i],), sorted(asks))

    def dense_scores(
        self, shard: int, ids: list[int], query_vector: np.ndarray
    ) -> dict[int, float] | None:
        try:
            out: dict[int, float] = self.result(
                shard, "dense_scores", self.start(shard, "dense_scores", ids, query_vector)
            )
            return out
        except _ShardDown:
            return None

    def locate(self, shard: int, hits: list[Hit], known: dict[str, Any]) -> bool:
        merge.locate_hits(hits, known)  # the answers brought their documents' locations
        return True


# ----- the ingress's engine ----------------------------------------------------------------------
class PartialHits(SearchResults):
    """Search results that name the shards that did not answer (``failed_shards``)."""

    failed_shards: list[str]


def _partial(hits: list[Hit], failed: list[int], warnings: list[str] | None = None) -> PartialHits:
    out = PartialHits(hits, warnings)
    out.failed_shards = [deployment_name(i) for i in sorted(failed)]
    return out


class RayEngine:
    """SearchEngine's serving methods over shard deployment handles: the query encoded once
    here, the shards' candidates merged before fusion with global bm25 statistics, reranked once
    (``shards.merge``, as ``ShardedEngine`` does locally); shards that fail or time out are left
    out of the statistics and the merge, and named."""

    def __init__(
        self,
        handles: list[Any],
        settings: ServerSettings,
        timeout: float = SHARD_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        from ..analyzer import SpanishAnalyzer

        self.calls = ServeShardCaller(handles, timeout)
        self.settings, self.write_timeout = settings, write_timeout
        self.count = len(handles)
        self._manifest: Manifest | None = None
        self._manifest_at = 0.0
        self._encoder: Encoder | None = None
        self._encoder_generation: int | None = None
        self._lock = threading.Lock()
        self._rerankers: dict[tuple[str, str], Reranker] = {}
        self._local = threading.local()
        self._analyzer_cls = SpanishAnalyzer

    # ----- manifest and encoder ----------------------------------------------------------------
    @property
    def manifest(self) -> Manifest | None:
        """The index's manifest (the first shard that has one), re-read every second."""
        now = time.monotonic()
        if self._manifest is not None and now - self._manifest_at < MANIFEST_TTL:
            return self._manifest
        answers, _ = self.calls.fan_out("manifest", lambda i: ())
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

    def reranker(self, model: str | os.PathLike[str], precision: str | None = None) -> Reranker:
        """The cross-encoder, loaded once here (the ingress reranks the merged hits)."""
        from ..rerank import open_reranker

        key = (os.fspath(model), precision or "auto")
        with self._lock:
            if key not in self._rerankers:
                self._rerankers[key] = open_reranker(
                    key[0], key[1], device=self.settings.device, batch_size=self.settings.batch_size
                )
            return self._rerankers[key]

    # ----- reading -----------------------------------------------------------------------------
    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "hybrid",
        fusion: str | None = None,
        alpha: float | None = None,
        where: dict[str, str] | None = None,
        source: str | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
        snippets: bool = True,
        query_vector: np.ndarray | None = None,
        rerank: str | os.PathLike[str] | Reranker | bool | None = None,
        rerank_depth: int = DEFAULT_DEPTH,
        rerank_precision: str | None = None,
    ) -> PartialHits:
        """The k best documents across the live shards, as ``ShardedEngine.search``
        (``failed_shards``: the others)."""
        check_search(query, k, mode, fusion, alpha)
        reranker = merge.reranker_for(rerank, rerank_depth, rerank_precision, self.reranker)
        manifest = self.manifest
        if manifest is None:
            return _partial([], [])
        config = self.fusion_config(fusion, alpha)
        query = clean_text(query)
        qvec = None
        if mode != "lexical":
            qvec = merge.query_vector(
                query, query_vector, manifest.dimension, lambda: self.query_encoder
            )
        request = CandidateRequest(query, mode, 0, qvec, where, source, ef_search, nprobe)
        out = merge.search_merged(
            self.calls, request, k, config, self.analyzer, snippets, reranker, rerank_depth
        )
        return _partial(out.hits, out.failed, out.warnings)

    def similar(self, doc_id: str, k: int = 10) -> PartialHits:
        """Documents closest to a stored one, across the live shards."""
        if not isinstance(k, int) or k < 1:
            raise InputError("the number of results (k) must be a whole number of at least 1.")
        home = shard_of(doc_id, self.count)
        found = self.calls.must(home, "document_vector", doc_id)
        if found is None:
            raise InputError(f"there is no document '{doc_id}' in the index.")
        qvec, own = found
        hits, failed = merge.similar_merged(self.calls, qvec, own, home, k)
        return _partial(hits, failed)

    def get_document(self, doc_id: str) -> dict[str, Any] | None:
        i = shard_of(doc_id, self.count)
        doc: dict[str, Any] | None = self.calls.must(i, "get_document", doc_id)
        if doc is not None:
            for c in doc.get("chunks", []):
                c["chunk_id"] = global_id(i, int(c["chunk_id"]), self.count)
        return doc

    def info(self) -> dict[str, Any]:
        """Totals over the shards that answer, and each shard's counts."""
        answers, failed = self.calls.fan_out("info", lambda i: ())
        if not answers:
            raise StorageError("no shard of the index is answering; try again in a moment.")
        per = {deployment_name(i): answers[i] for i in sorted(answers)}
        primary = next((n for n, f in per.items() if f.get("chunks")), next(iter(per)))
        out = {
            **merge.merge_info(per, primary),
            "shards": self.count,
            "partial": bool(failed),
            "failed_shards": [deployment_name(i) for i in failed],
        }
        out.pop("files", None)
        return out

    def facets(self, limit: int = 20) -> dict[str, list[tuple[Any, int]]]:
        answers, _ = self.calls.fan_out("facets", lambda i: (1_000_000,))
        return merge.merge_facets([answers[i] for i in sorted(answers)], limit)

    # ----- writing -----------------------------------------------------------------------------
    def add(self, records: list[dict[str, Any]]) -> IngestSummary:
        """Each document to its shard's writer (whole documents: a shard that is down refuses
        its part with a 503, the others are written)."""
        routed: dict[int, list[dict[str, Any]]] = {}
        for r in records:
            routed.setdefault(shard_of(as_document(r).id, self.count), []).append(r)
        return merge.merge_summaries(
            [
                self.calls.must(i, "add", part, timeout=self.write_timeout)
                for i, part in routed.items()
            ]
        )

    def delete(self, ids: list[str]) -> list[str]:
        routed: dict[int, list[str]] = {}
        for doc_id in ids:
            routed.setdefault(shard_of(doc_id, self.count), []).append(doc_id)
        return [
            d
            for i, part in routed.items()
            for d in self.calls.must(i, "delete", part, timeout=self.write_timeout)
        ]

    def close(self) -> None:
        """Nothing to release here: the shard replicas own their folders."""

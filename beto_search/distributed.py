"""Encoding on a Ray cluster: an embedder for the indexer's hook (``ingest``/``add``/re-embedding
with ``embedder=...``; see beto_search/index/indexer.py).

The driver (the process running ``beto-search ingest``) keeps reading, chunking and writing: ids,
chunks, transactions and content hashes are exactly those of a local ingest. Only the encoding
moves: the chunks' token ids (or texts) go to Ray Data ``map_batches`` over an actor pool, one
model per actor, built once with ``backends.open_encoder`` and the index's encoder facts (model,
revision, pooling, concrete precision), on a GPU when the cluster has them. Each actor encodes
with the encoder's own ``encode_token_ids`` (or ``encode_documents`` for texts), so the batches
are cut by padded-token budget exactly as locally. Vectors stream back in order and the indexer
writes each batch as soon as its vectors are in.

Chunks travel in windows of ``window_chunks``: Ray Data runs one dataset per window (the actor
pool starts, loads the model, encodes the window, stops), so a window should hold minutes of
work. A killed actor is restarted and its task retried (Ray Data's actor pools default to
``max_restarts=-1`` and ``max_task_retries=-1``); a killed driver leaves an index that ``verify``
passes, and the next run encodes only the documents that were not written.

Ray is optional (``pip install 'beto-search[ray]'``): nothing else in beto_search imports it.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BetoSearchError, InputError

if TYPE_CHECKING:
    from typing_extensions import Self

    from .protocols import EncoderSource

log = logging.getLogger(__name__)

# precisions whose backends run on the CPU only, and the one that needs a CUDA GPU
CPU_ONLY = frozenset({"int8", "onnx-fp32", "onnx-int8", "ov-int8", "ov-bf16"})
GPU_ONLY = frozenset({"fp16"})
WINDOW_CHUNKS = 32768  # chunks per Ray Data execution (the actor pool starts once per window)
ROWS_PER_TASK = 256  # chunks per actor call; the encoder cuts them by token budget inside
ACTORS_START_S = 900  # every actor of the pool must have loaded its model within this time


class RayError(BetoSearchError):
    """Ray is missing, the cluster cannot be reached, or encoding on it failed."""


def require_ray() -> Any:
    """Import ray, or fail with one sentence saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise RayError(
            "distributed encoding needs Ray Data; install it with pip install 'beto-search[ray]'."
        ) from None
    return ray


class _ChunkEncoder:
    """A Ray Data actor: loads the encoder once, then encodes batches of chunk rows."""

    def __init__(
        self,
        model: str,
        revision: str | None,
        pooling: str | None,
        precision: str,
        device: str,
        batch_size: int,
        max_batch_tokens: int,
    ) -> None:
        import ray

        from .backends import open_encoder

        self.encoder = open_encoder(
            model,
            pooling=pooling,
            precision=precision,
            device=device,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            revision=revision,
        )
        self.node = ray.get_runtime_context().get_node_id()
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["seq"])
        if "ids" in batch:
            vectors = self.encoder.encode_token_ids(
                [np.asarray(ids).tolist() for ids in batch["ids"]]
            )
        else:
            vectors = self.encoder.encode_documents([str(t) for t in batch["text"]])
        return {
            "seq": batch["seq"],
            "vector": np.asarray(vectors, dtype=np.float32),
            "node": np.array([self.node] * n),
            "pid": np.full(n, self.pid, dtype=np.int64),
        }


class RayEmbedder:
    """``embedder(batches) -> Iterator[np.ndarray]``: encodes chunk batches on a Ray cluster.

    Generic over its inputs: each batch is token-id lists (without special tokens) or texts, as
    the indexer's hook gives them, so it serves ingest and re-embedding alike. ``model``,
    ``revision``, ``pooling`` and ``precision`` (a concrete one, not ``auto``) say which encoder
    every actor builds with ``backends.open_encoder``: ``for_engine`` takes them from the index,
    ``for_encoder`` from an encoder (e.g. the new model of a re-embedding). The model path must
    exist on every node (or be a hub id the nodes can load) and beto-search must be installed
    there.
    ``address``: None starts a local Ray instance, ``"auto"`` joins the cluster this machine
    belongs to, anything else is a cluster address (``host:6379`` or ``ray://host:10001``). If
    Ray is already initialised in this process, that connection is used as it is.
    ``workers``: actors in the pool (default: one per GPU when the cluster has GPUs, else the
    cluster's CPUs divided by ``cpus_per_worker``).
    After a run, ``nodes`` and ``pids`` count the chunks each Ray node and actor process encoded.
    """

    def __init__(
        self,
        model: str,
        *,
        revision: str | None = None,
        pooling: str | None = None,
        precision: str = "fp32",
        dimension: int | None = None,
        address: str | None = None,
        workers: int | None = None,
        cpus_per_worker: float | None = None,
        gpus_per_worker: float | None = None,
        batch_size: int = 16,
        max_batch_tokens: int = 4096,
        window_chunks: int = WINDOW_CHUNKS,
        rows_per_task: int = ROWS_PER_TASK,
    ) -> None:
        require_ray()  # fail before any model is loaded or file read
        from .encoder import CONCRETE_PRECISIONS

        if precision not in CONCRETE_PRECISIONS:
            # "auto" would let every node choose for its own hardware: one index, one precision
            raise InputError(
                f"Ray workers need a concrete precision ({', '.join(CONCRETE_PRECISIONS)}), "
                f"not '{precision}'."
            )
        if window_chunks < 1 or rows_per_task < 1:
            raise InputError("window_chunks and rows_per_task must be at least 1.")
        if workers is not None and workers < 1:
            raise InputError("the number of Ray workers must be at least 1.")
        self.model, self.revision = model, revision
        self.pooling, self.precision = pooling, precision
        self.dimension = dimension
        self.address = address
        self.workers, self.cpus_per_worker, self.gpus_per_worker = (
            workers,
            cpus_per_worker,
            gpus_per_worker,
        )
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens
        self.window_chunks, self.rows_per_task = window_chunks, rows_per_task
        self.nodes: Counter[str] = Counter()
        self.pids: Counter[int] = Counter()
        self._started_ray = False

    @classmethod
    def for_encoder(cls, encoder: Any, **kwargs: Any) -> RayEmbedder:
        """An embedder whose actors build the same encoder as ``encoder`` (its ``describe()``
        facts, batch size and token budget); keyword arguments override them."""
        facts = encoder.describe() if callable(getattr(encoder, "describe", None)) else {}
        if not facts or not hasattr(encoder, "encode_token_ids"):
            raise InputError(
                "distributed encoding needs a model the workers can load (--model); "
                "a custom encoder object cannot be sent to a Ray cluster."
            )
        settings: dict[str, Any] = {
            "revision": facts.get("revision"),
            "pooling": facts.get("pooling"),
            "precision": str(facts.get("precision") or "fp32"),
            "dimension": int(facts["dimension"]),
            "batch_size": int(getattr(encoder, "batch_size", 16)),
            "max_batch_tokens": int(getattr(encoder, "max_batch_tokens", 4096)),
        }
        settings.update(kwargs)
        return cls(str(facts["encoder"]), **settings)

    @classmethod
    def for_engine(cls, engine: EncoderSource, **kwargs: Any) -> RayEmbedder:
        """An embedder for ingesting into ``engine``'s index: the manifest's model, revision and
        pooling (a new index: those of the engine's encoder, which writes the manifest) and the
        engine encoder's concrete precision, i.e. what a local ingest of this run encodes with.
        Loads the encoder on the driver, which the chunker needs for its tokenizer anyway."""
        enc = engine.encoder
        m = engine.manifest
        if m is not None and hasattr(enc, "encode_token_ids"):
            kwargs = {"revision": m.revision, "pooling": m.pooling, **kwargs}
        return cls.for_encoder(enc, **kwargs)

    # ----- the cluster ---------------------------------------------------------------------
    def connect(self) -> Any:
        """Initialise Ray (once) and return the module."""
        ray = require_ray()
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                    include_dashboard=False,
                )
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = self.address or "a new local instance"
                why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise RayError(
                    f"could not start or reach the Ray cluster at {where} ({why})."
                ) from None
            self._started_ray = True
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # the engine draws its own progress bar: no notice that Ray Data's are off
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        return ray

    def close(self) -> None:
        """Disconnect from Ray if this embedder connected (a local instance is stopped)."""
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pool(self, ray: Any) -> dict[str, Any]:
        """map_batches arguments for the actor pool: its size and each actor's resources."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        node_cpus = [float(r.get("CPU", 0)) for r in nodes]
        gpus = sum(float(r.get("GPU", 0)) for r in nodes)
        gpus_each = (
            self.gpus_per_worker if self.gpus_per_worker is not None else (1.0 if gpus else 0)
        )
        if gpus_each:
            cpus_each = self.cpus_per_worker or 1.0
            workers = self.workers or max(1, int(gpus // gpus_each))
        else:
            # an actor must fit on one node: at most 4 CPUs (torch threads) and a node's CPUs
            cpus_each = self.cpus_per_worker or min(4.0, max([1.0, *node_cpus]))
            workers = self.workers or max(1, sum(int(c // cpus_each) for c in node_cpus))
        if not any(c >= cpus_each for c in node_cpus) or (gpus_each and gpus < gpus_each):
            raise RayError(
                f"no node of the Ray cluster has {cpus_each:g} CPUs"
                + (f" and {gpus_each:g} GPUs" if gpus_each else "")
                + " for an encoding worker; lower the worker's resources."
            )
        room = int(gpus // gpus_each) if gpus_each else sum(int(c // cpus_each) for c in node_cpus)
        if workers > room:
            raise RayError(
                f"the Ray cluster has room for {room} encoding workers of {cpus_each:g} CPUs"
                + (f" and {gpus_each:g} GPUs" if gpus_each else "")
                + f", not {workers}; ask for at most {room} (--ray-workers)."
            )
        if gpus_each and self.precision in CPU_ONLY:
            raise RayError(
                f"precision {self.precision} runs on CPUs only but the encoding workers would get "
                f"GPUs; encode on CPUs with --ray-gpus 0, or create the index with --precision "
                f"bf16 or fp16."
            )
        if not gpus_each and self.precision in GPU_ONLY:
            raise RayError(
                f"precision {self.precision} needs a CUDA GPU but the encoding workers get none; "
                f"give them GPUs with --ray-gpus 1."
            )
        return {
            "compute": ray.data.ActorPoolStrategy(size=workers),
            "num_cpus": cpus_each,
            "num_gpus": gpus_each or None,
            "fn_constructor_kwargs": {
                "model": self.model,
                "revision": self.revision,
                "pooling": self.pooling,
                "precision": self.precision,
                "device": "cuda" if gpus_each else "cpu",
                "batch_size": self.batch_size,
                "max_batch_tokens": self.max_batch_tokens,
            },
        }

    # ----- encoding ------------------------------------------------------------------------
    def __call__(self, batches: Iterable[list[list[int]] | list[str]]) -> Iterator[np.ndarray]:
        """One (n_i, dimension) float32 array per input batch, in order."""
        ray = self.connect()
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # results come back in input order
        ctx.enable_progress_bars = False  # the engine has its own
        # start only once every actor has loaded its model: otherwise the first actor up takes
        # all the work of a small window, and a pool the cluster cannot place fails, not hangs
        ctx.wait_for_min_actors_s = ACTORS_START_S
        pool = self._pool(ray)
        window: list[list[Any]] = []  # token-id lists or texts
        size = 0
        for batch in batches:
            window.append(list(batch))
            size += len(batch)
            if size >= self.window_chunks:
                yield from self._encode_window(ray, window, pool)
                window, size = [], 0
        if window:
            yield from self._encode_window(ray, window, pool)

    def _encode_window(
        self, ray: Any, window: list[Any], pool: dict[str, Any]
    ) -> Iterator[np.ndarray]:
        flat = [item for batch in window for item in batch]
        if not flat:
            for _ in window:
                yield np.zeros((0, self.dimension or 0), dtype=np.float32)
            return
        if isinstance(flat[0], str):
            rows = [{"seq": i, "text": text} for i, text in enumerate(flat)]
        else:  # int32 arrays: a quarter of the memory of Python int lists on the way out
            rows = [
                {"seq": i, "ids": np.asarray(ids, dtype=np.int32)} for i, ids in enumerate(flat)
            ]
        # at most rows_per_task chunks per call, and at least ~4 calls per actor when the window
        # is small, so that every actor gets work
        workers = pool["compute"].min_size or 1
        per_task = max(1, min(self.rows_per_task, -(-len(rows) // (4 * workers))))
        blocks = -(-len(rows) // per_task)
        ds = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            _ChunkEncoder, batch_size=per_task, batch_format="numpy", **pool
        )
        bounds = np.cumsum([len(b) for b in window])
        out: np.ndarray | None = None
        done, emitted = np.zeros(len(flat), dtype=bool), 0
        contiguous = 0
        try:
            for res in ds.iter_batches(batch_size=None, batch_format="numpy"):
                vecs = np.asarray(res["vector"], dtype=np.float32)
                if out is None:
                    out = np.zeros((len(flat), vecs.shape[1]), dtype=np.float32)
                seq = np.asarray(res["seq"], dtype=np.int64)
                out[seq] = vecs
                done[seq] = True
                self.nodes.update(str(n) for n in res["node"])
                self.pids.update(int(p) for p in res["pid"])
                while contiguous < len(flat) and done[contiguous]:
                    contiguous += 1
                while emitted < len(window) and bounds[emitted] <= contiguous:
                    start = bounds[emitted - 1] if emitted else 0
                    yield out[start : bounds[emitted]].copy()
                    emitted += 1
        except ray.exceptions.RayError as exc:
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
            raise RayError(f"encoding on the Ray cluster failed ({why}).") from None
        if emitted < len(window):
            raise RayError(
                f"the Ray cluster returned {int(done.sum())} of {len(flat)} chunk "
                f"vectors; the missing documents were not written."
            )

"""What every encoder backend shares: batching, pooling, the build cache and model facts.

- ``BatchEncoder``: the encoding loop. Token ids (without special tokens) get [CLS]/[SEP], are
  sorted by length and cut into batches under a padded-token budget, each batch is embedded by the
  backend (``embed_batch``: pooled, not yet normalised vectors) and the rows are L2-normalised.
- ``pool``: masked mean / max, or the first token, in numpy (the same semantics as
  sentence-transformers' ``Pooling``), for the compiled backends.
- The build cache: ``cache_root()`` (``$BETO_SEARCH_CACHE`` or ``~/.cache/beto-search``),
  ``fingerprint`` (a sha256 of the model's identity, its weight files, the library versions and the
  build settings, computed WITHOUT importing torch so that a query can find a cached graph cheaply)
  and ``build_atomically`` (build into a temporary folder, then rename it into place).
- ``model_pooling``: the pooling a saved sentence-transformers folder declares, read from its JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..encoder import POOLINGS, normalize_rows
from ..errors import InputError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")


# ----- batching and pooling ----------------------------------------------------------------------
def batches(lengths: list[int], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped by length (longest first) so that padded tokens per batch stay in budget."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    out: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        if current and (
            len(current) >= batch_size or (len(current) + 1) * width > max_batch_tokens
        ):
            out.append(current)
            current = []
        current.append(i)
    if current:
        out.append(current)
    return out


def check_pooling(pooling: str, precision: str) -> None:
    """Compiled backends pool in numpy: mean, max or cls."""
    if pooling not in POOLINGS:
        raise InputError(
            f"precision {precision} supports pooling {', '.join(POOLINGS)}, not '{pooling}'."
        )


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """Masked mean / max, or the first token, of (batch, seq, dim) hidden states."""
    check_pooling(mode, "of a compiled graph")
    if mode == "cls":
        return hidden[:, 0]
    m = mask[..., None].astype(bool)
    if mode == "max":
        return np.where(m, hidden, -np.inf).max(axis=1)
    mf = m.astype(hidden.dtype)
    return (hidden * mf).sum(axis=1) / np.maximum(mf.sum(axis=1), 1e-9)


class BatchEncoder:
    """The shared encoding loop; a backend sets the facts below and implements two methods.

    Subclasses set ``name``, ``revision``, ``pooling``, ``precision``, ``max_length``,
    ``batch_size``, ``max_batch_tokens``, ``cls_id``, ``sep_id``, ``pad_id`` and implement
    ``tokenize`` (ids without special tokens) and ``embed_batch`` (pooled vectors of one batch).
    """

    name: str
    revision: str | None
    pooling: str
    precision: str
    max_length: int
    batch_size: int
    max_batch_tokens: int
    cls_id: int
    sep_id: int
    pad_id: int
    precision_note: str | None = None
    device: str = "cpu"

    @property
    def dimension(self) -> int:
        raise NotImplementedError

    @property
    def max_seq_length(self) -> int:
        """Alias of ``max_length`` (the name sentence-transformers uses)."""
        return self.max_length

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def embed_batch(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Pooled (not yet normalised) float vectors of one padded int64 batch."""
        raise NotImplementedError

    def batches(self, lengths: list[int]) -> list[list[int]]:
        return batches(lengths, self.batch_size, self.max_batch_tokens)

    def padded_batches(
        self, seqs: list[list[int]], pad: int
    ) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
        """(indices, int64 ids, int64 attention mask) per length-sorted batch, padded with ``pad``."""
        for batch in self.batches([len(s) for s in seqs]):
            width = max(len(seqs[i]) for i in batch)
            ids = np.full((len(batch), width), pad, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                ids[row, : len(seqs[i])] = seqs[i]
                mask[row, : len(seqs[i])] = 1
            yield batch, ids, mask

    def encode_token_ids(self, token_ids: list[list[int]]) -> np.ndarray:
        """Embeddings from token ids without special tokens (as the chunker produces them)."""
        out = np.zeros((len(token_ids), self.dimension), dtype=np.float32)
        if not token_ids:
            return out
        limit = self.max_length - 2
        seqs = [[self.cls_id, *ids[:limit], self.sep_id] for ids in token_ids]
        for batch, ids, mask in self.padded_batches(seqs, self.pad_id):
            out[batch] = self.embed_batch(ids, mask)
        return normalize_rows(out)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        """Embeddings of passages: (n, dimension) float32, L2-normalised."""
        return self.encode_token_ids(self.tokenize(texts))

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Embeddings of queries (BETO is symmetric: same as documents)."""
        return self.encode_token_ids(self.tokenize(texts))

    def describe(self) -> dict[str, Any]:
        """The encoder facts an index's manifest records."""
        return {
            "encoder": self.name,
            "revision": self.revision,
            "pooling": self.pooling,
            "dimension": self.dimension,
            "max_length": self.max_length,
            "normalized": True,
            "precision": self.precision,
            "precision_note": self.precision_note,
        }


# ----- model facts without torch -----------------------------------------------------------------
def looks_like_path(name: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else (or an existing path) is a folder."""
    return (
        Path(name).expanduser().exists()
        or name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or "\\" in name
    )


def model_pooling(model: str) -> str | None:
    """The pooling mode a saved sentence-transformers folder declares (None if it has none)."""
    folder = Path(model).expanduser()
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        return None
    for module in modules:
        if str(module.get("type", "")).endswith("Pooling"):
            try:
                cfg = json.loads((folder / module.get("path", "") / "config.json").read_text())
            except (OSError, ValueError):
                return None
            if "pooling_mode" in cfg:
                return str(cfg["pooling_mode"])
            for mode, key in (
                ("cls", "pooling_mode_cls_token"),
                ("max", "pooling_mode_max_tokens"),
                ("mean", "pooling_mode_mean_tokens"),
            ):
                if cfg.get(key):
                    return mode
    return None


# ----- build cache -------------------------------------------------------------------------------
def cache_root() -> Path:
    """``$BETO_SEARCH_CACHE`` or ``~/.cache/beto-search``."""
    env = os.environ.get("BETO_SEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "beto-search"


def version(dist: str) -> str:
    """An installed distribution's version without importing it ("absent" when not installed)."""
    from importlib import metadata  # ~25 ms: only when a graph cache key is computed

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def weights_fingerprint(model: str) -> list[Any]:
    """(relative path, size, mtime) of a local folder's weight and config files; [] for a hub id."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name == "config.json"):
            st = p.stat()
            out.append([str(p.relative_to(folder)), st.st_size, st.st_mtime_ns])
    return out


def fingerprint(
    model: str, revision: str | None, settings: dict[str, Any], libraries: tuple[str, ...]
) -> str:
    """A cache key: the model's identity and weights, the library versions and the settings."""
    folder = Path(model).expanduser()
    facts = {
        "model": str(folder.resolve()) if folder.is_dir() else model,
        "revision": None if folder.is_dir() else revision,  # a folder is keyed by its files
        "weights": weights_fingerprint(model),
        "libraries": {name: version(name) for name in libraries},
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


def build_atomically(
    folder: Path, build: Callable[[Path], None], ready: Callable[[Path], bool]
) -> Path:
    """Run ``build(tmp)`` into a temporary sibling folder and rename it to ``folder``.

    A concurrent builder that finished first wins (its folder is kept, ours is dropped), so a
    reader never sees a half-written folder.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not ready(folder):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# ----- compiled graphs in a cache folder ---------------------------------------------------------
META_FILE = "encoder.json"
TOKENIZER_FILE = "tokenizer.json"


def write_export_facts(source: Any, folder: Path, precision: str) -> None:
    """Save ``source``'s tokenizer (tokenizer.json and the HF files) and facts beside a graph.

    ``source`` is a loaded torch-backend encoder; what is written here is all a compiled encoder
    needs besides the graph, so that it never loads the torch model again.
    """
    source.tokenizer.save_pretrained(str(folder))
    if not (folder / TOKENIZER_FILE).is_file():
        raise InputError(
            f"precision {precision} needs a fast tokenizer (tokenizer.json); "
            f"'{source.name}' has a slow one only."
        )
    facts = {
        "encoder": source.name,
        "revision": source.revision,
        "dimension": source.dimension,
        "max_length": source.max_length,
        "cls_id": source.cls_id,
        "sep_id": source.sep_id,
        "pad_id": source.pad_id,
        "precision": precision,
    }
    (folder / META_FILE).write_text(json.dumps(facts, indent=1))


class CompiledEncoder(BatchEncoder):
    """An encoder over a graph in a cache folder: the tokenizer comes from ``tokenizer.json``
    (the ``tokenizers`` library, no transformers, no torch); a backend adds ``embed_batch``."""

    def __init__(
        self,
        folder: Path,
        pooling: str | None,
        precision: str,
        batch_size: int,
        max_batch_tokens: int,
        name: str | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        meta = json.loads((folder / META_FILE).read_text())
        self.folder = folder
        self.name = name or str(meta["encoder"])
        self.revision = meta["revision"]
        self.pooling = pooling or model_pooling(self.name) or "mean"
        check_pooling(self.pooling, precision)
        self.precision = precision
        self.max_length = int(meta["max_length"])
        self._dimension = int(meta["dimension"])
        self.cls_id, self.sep_id, self.pad_id = (
            int(meta[k]) for k in ("cls_id", "sep_id", "pad_id")
        )
        if batch_size < 1 or max_batch_tokens < 1:
            raise InputError("batch size and batch token budget must be at least 1.")
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens
        self._fast = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self._fast.no_padding()
        self._fast.no_truncation()
        self._hf_tokenizer: Any = None

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def tokenizer(self) -> Any:
        """The Hugging Face tokenizer saved beside the graph (loaded on first use: the chunker
        needs its offsets at ingest; queries only use ``tokenize``)."""
        if self._hf_tokenizer is None:
            from transformers import AutoTokenizer

            from .hf import quiet_loading

            with quiet_loading():
                self._hf_tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        return self._hf_tokenizer

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids without special tokens, cut to the model's window."""
        limit = self.max_length - 2
        return [
            e.ids[:limit] for e in self._fast.encode_batch(list(texts), add_special_tokens=False)
        ]


def cpu_threads() -> int:
    """CPUs this process may run on (what the runtimes' thread pools should use)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)

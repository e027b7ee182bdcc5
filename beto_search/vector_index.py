"""The FAISS cache of the chunk vectors: build by type, add/remove, search, atomic checkpoints.

The vectors' source of truth is SQLite; this index is a checkpoint of it. Each file is named after
the change sequence it reflects (``vectors-<seq>.faiss``; ``vectors-<seq>-g<generation>.faiss``
once a re-embedding has moved the index to generation > 0), written to a temporary file, fsynced
and renamed, so a crash leaves either the old checkpoint or the new one, never half of one.
When and which checkpoint to use is ``vector_cache``'s business, not this module's.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .errors import InputError, StorageError

log = logging.getLogger(__name__)

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf")
_FILE = re.compile(r"^vectors-(\d{12})(?:-g(\d+))?\.faiss$")
KEEP_CHECKPOINTS = 2  # the newest and the one before: readers whose snapshot predates the newest
MIN_TRAIN = 1000  # below this many vectors an approximate index is built flat (exact)
AUTO_FLAT_MAX = 50_000  # flat (exact) search up to this many vectors, then IVF
TRAIN_PER_LIST = 50  # IVF training vectors per list
TRAIN_MAX = 200_000
HNSW_REBUILD_FRACTION = 0.2  # rebuild an HNSW index once this share of it is tombstones


@dataclass
class IndexSpec:
    """Which FAISS index to build and its parameters (recorded in the manifest)."""

    type: str = "auto"
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 96
    nlist: int = 0  # 0: chosen from the number of vectors
    nprobe: int = 24
    quantizer: str = "SQ8"  # "Flat" keeps full float32 vectors

    def __post_init__(self) -> None:
        if self.type not in INDEX_TYPES:
            raise InputError(
                f"index type must be one of {', '.join(INDEX_TYPES)}, not '{self.type}'."
            )
        if self.quantizer not in ("SQ8", "Flat"):
            raise InputError("the vector quantizer must be SQ8 or Flat.")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexSpec:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def concrete(self, n: int) -> str:
        """The type to build for ``n`` vectors: too few to train a quantizer on means flat."""
        if self.type == "flat" or (self.type != "auto" and n < MIN_TRAIN):
            return "flat"
        if self.type != "auto":
            return self.type
        return "flat" if n <= AUTO_FLAT_MAX else "ivf"

    def nlist_for(self, n: int) -> int:
        if self.nlist:
            return self.nlist
        return int(max(4, min(65536, 2 * int(np.sqrt(max(n, 1))), n // 39)))

    def train_size(self, n: int) -> int:
        """How many stored vectors to train an IVF index on (k-means wants ~40+ per list)."""
        return int(min(n, TRAIN_PER_LIST * self.nlist_for(n), TRAIN_MAX))

    def factory(self, n: int) -> str:
        kind = self.concrete(n)
        if kind == "flat":
            return "IDMap2,Flat"
        if kind == "hnsw":
            return (
                f"IDMap2,HNSW{self.hnsw_m},{self.quantizer}"
                if self.quantizer != "Flat"
                else f"IDMap2,HNSW{self.hnsw_m},Flat"
            )
        return f"IVF{self.nlist_for(n)},{self.quantizer}"


@dataclass
class SearchParams:
    """Per-query knobs of approximate indexes."""

    ef_search: int | None = None
    nprobe: int | None = None


@dataclass
class VectorIndex:
    """A FAISS index keyed by chunk id, the sequence number it reflects, and tombstones."""

    index: Any
    dim: int
    spec: IndexSpec
    kind: str
    seq: int = 0
    tombstones: set[int] = field(default_factory=set)
    generation: int = 0

    # ----- construction --------------------------------------------------------------------
    @classmethod
    def build(cls, spec: IndexSpec, dim: int, n: int, train: np.ndarray | None) -> VectorIndex:
        """An empty index of the right type for ``n`` vectors, trained on ``train`` if needed."""
        kind = spec.concrete(n)
        factory = spec.factory(n)
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        if kind == "hnsw":
            hnsw = faiss.downcast_index(index.index)
            hnsw.hnsw.efConstruction = spec.ef_construction
            hnsw.hnsw.efSearch = spec.ef_search
        if not index.is_trained:
            if train is None or len(train) == 0:
                raise InputError(f"a {kind} index needs vectors to train on.")
            index.train(np.ascontiguousarray(train, dtype=np.float32))
        if kind == "ivf":
            faiss.extract_index_ivf(index).nprobe = spec.nprobe
        return cls(index=index, dim=dim, spec=spec, kind=kind)

    def clone(self) -> VectorIndex:
        """An independent copy (readers may keep searching the original while it is changed)."""
        try:
            index = faiss.clone_index(self.index)
        except RuntimeError:  # a type clone_index does not know: a round trip through bytes
            index = faiss.deserialize_index(faiss.serialize_index(self.index))
        if self.kind == "ivf":
            faiss.extract_index_ivf(index).nprobe = faiss.extract_index_ivf(self.index).nprobe
        return VectorIndex(
            index=index,
            dim=self.dim,
            spec=self.spec,
            kind=self.kind,
            seq=self.seq,
            tombstones=set(self.tombstones),
            generation=self.generation,
        )

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def live(self) -> int:
        """Vectors that searches can return (tombstones excluded)."""
        return self.ntotal - len(self.tombstones)

    def needs_rebuild(self) -> bool:
        """True once tombstones take too large a share of an HNSW index, or an IVF index has
        grown so much that its lists are too long (the list count it would get now is over
        twice the one it was trained with)."""
        if self.tombstones and len(self.tombstones) > HNSW_REBUILD_FRACTION * self.ntotal:
            return True
        if self.kind == "ivf" and not self.spec.nlist:
            return self.spec.nlist_for(self.live) > 2 * faiss.extract_index_ivf(self.index).nlist
        return False

    def ids(self) -> np.ndarray:
        """Every id the index holds (tombstones included)."""
        if self.kind == "ivf":
            ivf = faiss.extract_index_ivf(self.index)
            invlists = ivf.invlists
            parts = []
            for lst in range(ivf.nlist):
                size = invlists.list_size(lst)
                if size:
                    ptr = invlists.get_ids(lst)
                    parts.append(faiss.rev_swig_ptr(ptr, size).copy())
                    invlists.release_ids(lst, ptr)
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    # ----- changes -------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            if self.tombstones:  # an id given back (never by the engine: its ids are not reused)
                self.tombstones.difference_update(int(i) for i in ids)
            self.index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32),
                np.ascontiguousarray(ids, dtype=np.int64),
            )

    def remove(self, ids: np.ndarray) -> None:
        """Remove ids; HNSW cannot remove, so its ids become tombstones filtered at search."""
        if not len(ids):
            return
        if self.kind == "hnsw":
            self.tombstones.update(int(i) for i in ids)
            return
        self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))

    # ----- search --------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        params: SearchParams | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the k nearest vectors; -1 ids pad missing results."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(k, self.ntotal))
        params = params or SearchParams()
        selector = None
        if allowed is not None:
            allowed = np.ascontiguousarray(allowed, dtype=np.int64)
            if self.tombstones:
                allowed = allowed[~np.isin(allowed, np.fromiter(self.tombstones, dtype=np.int64))]
            if not len(allowed):
                return (
                    np.full((len(queries), k), -np.inf, dtype=np.float32),
                    np.full((len(queries), k), -1, dtype=np.int64),
                )
            selector = faiss.IDSelectorBatch(allowed)
        elif self.tombstones:
            tomb = np.fromiter(self.tombstones, dtype=np.int64)
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(tomb))
        if self.kind == "hnsw":
            sp = faiss.SearchParametersHNSW(
                efSearch=max(params.ef_search or self.spec.ef_search, k)
            )
        elif self.kind == "ivf":
            sp = faiss.SearchParametersIVF(nprobe=params.nprobe or self.spec.nprobe)
        else:
            sp = faiss.SearchParameters()
        if selector is not None:
            sp.sel = selector
        return self.index.search(queries, k, params=sp)

    # ----- persistence ---------------------------------------------------------------------
    def save(self, folder: Path, keep: int = KEEP_CHECKPOINTS) -> Path:
        """Write an atomic checkpoint for ``self.seq``; keep the ``keep`` newest of its generation
        (a reader whose snapshot predates this one can still load the previous one)."""
        target = folder / checkpoint_name(self.seq, self.generation)
        tmp = folder / f".{target.name}.tmp-{os.getpid()}"
        try:
            faiss.write_index(self.index, str(tmp))
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except (OSError, RuntimeError) as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(
                f"could not write the vector index file ({exc}); the stored documents are safe and "
                f"the next open rebuilds it from SQLite."
            ) from None
        kept = 0
        for seq, gen, path in checkpoint_files(folder):
            if gen == self.generation and seq <= self.seq and kept < keep:
                kept += 1
                continue
            if path != target:
                path.unlink(missing_ok=True)
        # temporary files of writers killed mid-save (saves run under the index's write lock)
        for stale in folder.glob(".vectors-*.faiss.tmp-*"):
            stale.unlink(missing_ok=True)
        return target

    @classmethod
    def load(
        cls, path: Path, seq: int, dim: int, spec: IndexSpec, generation: int = 0
    ) -> VectorIndex:
        """Read a checkpoint; raises on a damaged file or a dimension mismatch."""
        index = faiss.read_index(str(path))
        if index.d != dim:
            raise ValueError(f"dimension {index.d} != {dim}")
        if isinstance(index, faiss.IndexIDMap2):
            inner = faiss.downcast_index(index.index)
            kind = "hnsw" if isinstance(inner, faiss.IndexHNSW) else "flat"
            if index.ntotal != index.id_map.size():
                raise ValueError("id map and vectors differ in length")
        else:
            faiss.extract_index_ivf(index).nprobe = spec.nprobe
            kind = "ivf"
        return cls(index=index, dim=dim, spec=spec, kind=kind, seq=seq, generation=generation)


def checkpoint_name(seq: int, generation: int = 0) -> str:
    """Generation 0 keeps the original name, so indexes written before generations load as is."""
    return (
        f"vectors-{seq:012d}.faiss" if not generation else f"vectors-{seq:012d}-g{generation}.faiss"
    )


def checkpoint_files(folder: Path) -> list[tuple[int, int, Path]]:
    """(seq, generation, path) of the checkpoint files in ``folder``, newest first."""
    out = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _FILE.match(p.name)
            if m:
                out.append((int(m.group(1)), int(m.group(2) or 0), p))
    return sorted(out, key=lambda t: (t[0], t[1]), reverse=True)


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(seq, path) of the checkpoint files in ``folder``, newest first (any generation)."""
    return [(seq, path) for seq, _, path in checkpoint_files(folder)]

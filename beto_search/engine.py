"""``SearchEngine``: the facade that composes readers, chunker, encoder, store and vector index."""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from . import __version__
from .analyzer import SpanishAnalyzer
from .backends import open_encoder
from .chunking import Chunker
from .encoder import DEFAULT_MODEL, Encoder, normalize_rows
from .errors import (
    BetoSearchError,
    IndexNotFoundError,
    InputError,
    ManifestMismatchError,
)
from .fusion import DEFAULT_ALPHA, DEFAULT_FUSION, FUSIONS, RRF_K, convex, rrf
from .ingest import IngestSummary, as_document, content_hash
from .locking import WriteLock
from .readers import ReaderOptions, ReadReport, iter_files, read_file
from .snippets import make_snippet
from .store import Filter, PreparedDocument, Store
from .types import Document, Hit
from .vector_index import IndexSpec, SearchParams, VectorIndex, checkpoints

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DB_NAME = "index.db"
MODES = ("semantic", "lexical", "hybrid")
WORD_BUDGET = 200  # chunk size in words for encoders without a tokenizer
DEFAULT_OVERLAP = 64
BATCH_CHUNKS = 128  # chunks per ingest transaction
EXACT_FILTER_MAX = 20_000  # filtered searches over at most this many chunks are scored exactly


def default_index_path() -> Path:
    return Path(os.environ.get("BETO_SEARCH_INDEX") or "indexes/default")


def default_model() -> str:
    return os.environ.get("BETO_SEARCH_MODEL") or DEFAULT_MODEL


@dataclass
class EncoderOptions:
    """How to build the default encoder when none is passed."""

    model: str | None = None
    pooling: str | None = None
    precision: str | None = None
    device: str = "auto"
    batch_size: int = 16


class SearchEngine:
    """A Spanish semantic + lexical search index stored in one folder."""

    def __init__(
        self,
        folder: Path,
        store: Store,
        encoder: Encoder | None,
        options: EncoderOptions,
        index_spec: IndexSpec | None,
        chunk_tokens: int | None,
        overlap: int | None,
        wait: float,
    ) -> None:
        self.folder = folder
        self.store = store
        self.analyzer = SpanishAnalyzer()
        self.options = options
        self.wait = wait
        self._encoder = encoder
        self._query_encoder: Encoder | None = None
        self._vectors: VectorIndex | None = None
        self._manifest = store.manifest()
        self._index_spec = index_spec
        self._chunk_tokens = chunk_tokens
        self._overlap = overlap
        if self._manifest is not None:
            self._check_settings()
            if encoder is not None:
                self._check_encoder(encoder)

    # ----- opening -------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        encoder: Encoder | None = None,
        *,
        model: str | None = None,
        pooling: str | None = None,
        precision: str | None = None,
        device: str = "auto",
        batch_size: int = 16,
        index_type: str | None = None,
        chunk_tokens: int | None = None,
        overlap: int | None = None,
        create: bool = True,
        wait: float = 0.0,
    ) -> SearchEngine:
        """Open the index at ``path`` (default ``indexes/default``), creating it if allowed."""
        folder = Path(path) if path is not None else default_index_path()
        db = folder / DB_NAME
        if not db.exists():
            if not create:
                raise IndexNotFoundError(
                    f"there is no index at {folder}; create one with 'beto-search ingest FOLDER "
                    f"--index {folder}'."
                )
            if folder.exists() and not folder.is_dir():
                raise InputError(f"{folder} is a file, not an index folder.")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"cannot create the index folder {folder} ({exc.strerror}).") from None
        spec = IndexSpec(type=index_type) if index_type else None
        options = EncoderOptions(model, pooling, precision, device, batch_size)
        return cls(folder, Store(db, create=create), encoder, options, spec, chunk_tokens, overlap, wait)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> SearchEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- manifest and encoder ------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, Any] | None:
        """Settings fixed when the index was created (None while it is empty and new)."""
        return self._manifest

    def _check_settings(self) -> None:
        m = self._manifest or {}
        if m.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise ManifestMismatchError(
                f"the index at {self.folder} was written by a newer beto-search (format "
                f"{m['format_version']}); upgrade beto-search.")
        checks = [
            ("model", self.options.model, m.get("encoder")),
            ("pooling", self.options.pooling, m.get("pooling")),
            ("index type", self._index_spec.type if self._index_spec else None,
             (m.get("index") or {}).get("type")),
            ("chunk size", self._chunk_tokens, m.get("chunk_tokens")),
            ("overlap", self._overlap, m.get("overlap")),
        ]
        for what, asked, have in checks:
            if asked is not None and have is not None and asked != have:
                raise ManifestMismatchError(
                    f"the index at {self.folder} was created with {what} '{have}', not '{asked}'; "
                    f"use another --index for a different {what}.")

    def _check_encoder(self, encoder: Encoder) -> None:
        m = self._manifest
        if m is None:
            return
        pooling = getattr(encoder, "pooling", None)
        if encoder.name != m["encoder"] or (pooling and m.get("pooling") and pooling != m["pooling"]):
            raise ManifestMismatchError(
                f"the index at {self.folder} was built with encoder '{m['encoder']}' "
                f"(pooling {m.get('pooling')}), not '{encoder.name}' (pooling {pooling}); "
                f"query it with its own encoder or use another --index.")
        if int(encoder.dimension) != int(m["dimension"]):
            raise ManifestMismatchError(
                f"the encoder '{encoder.name}' gives {encoder.dimension}-dimensional vectors but the "
                f"index holds {m['dimension']}-dimensional ones.")

    def _open_encoder(self, queries_only: bool) -> Encoder:
        """The index's encoder (from the manifest or the options), checked against the index."""
        m = self._manifest or {}
        model = self.options.model or m.get("encoder") or default_model()
        env_model = os.environ.get("BETO_SEARCH_MODEL")
        if m and not self.options.model and env_model and env_model != m["encoder"]:
            raise ManifestMismatchError(
                f"BETO_SEARCH_MODEL is '{env_model}' but the index at {self.folder} was built "
                f"with '{m['encoder']}'; unset it or use another --index.")
        enc: Encoder = open_encoder(
            model,
            pooling=self.options.pooling or m.get("pooling"),
            precision=self.options.precision or m.get("precision") or ("fp32" if m else "auto"),
            device=self.options.device,
            batch_size=self.options.batch_size,
            queries_only=queries_only,
        )
        self._check_encoder(enc)
        return enc

    @property
    def encoder(self) -> Encoder:
        """The encoder (built from the manifest or the options on first use)."""
        if self._encoder is None:
            self._encoder = self._open_encoder(queries_only=False)
        return self._encoder

    @property
    def query_encoder(self) -> Encoder:
        """The encoder for searches: the given or loaded encoder if any, else a light one
        (a cached graph under ONNX Runtime, no torch; see backends/query.py)."""
        if self._encoder is not None:
            return self._encoder
        if self._query_encoder is None:
            self._query_encoder = self._open_encoder(queries_only=True)
        return self._query_encoder

    def _create_manifest(self, enc: Encoder) -> dict[str, Any]:
        """Probe the encoder's real output and record the index's settings (first write)."""
        probe = np.asarray(enc.encode_documents(["prueba de dimensión"]))
        if probe.ndim != 2 or probe.shape[1] != int(enc.dimension):
            raise ManifestMismatchError(
                f"the encoder '{enc.name}' says dimension {enc.dimension} but produced vectors of "
                f"shape {probe.shape}; nothing was written.")
        tokenizer = getattr(enc, "tokenizer", None)
        max_length = int(getattr(enc, "max_seq_length", 0) or 0)
        chunk_tokens = self._chunk_tokens or (max_length - 2 if tokenizer is not None and max_length
                                              else WORD_BUDGET)
        overlap = self._overlap if self._overlap is not None else min(DEFAULT_OVERLAP, chunk_tokens // 4)
        Chunker(None, chunk_tokens, overlap)  # validates the sizes
        spec = self._index_spec or IndexSpec()
        describe = getattr(enc, "describe", None)
        facts = describe() if callable(describe) else {}
        return {
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "encoder": enc.name,
            "revision": facts.get("revision", getattr(enc, "revision", None)),
            "pooling": getattr(enc, "pooling", None),
            "dimension": int(enc.dimension),
            "normalized": True,
            "max_length": max_length or None,
            "precision": getattr(enc, "precision", "fp32"),
            "precision_note": facts.get("precision_note"),
            "tokenizer": "model" if tokenizer is not None else "words",
            "chunk_tokens": chunk_tokens,
            "overlap": overlap,
            "index": spec.to_dict(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def _chunker(self) -> Chunker:
        m = self._manifest or {}
        tok = getattr(self.encoder, "tokenizer", None) if m.get("tokenizer") == "model" else None
        return Chunker(tok, int(m["chunk_tokens"]), int(m["overlap"]))

    @property
    def spec(self) -> IndexSpec:
        m = self._manifest or {}
        return IndexSpec.from_dict(m["index"]) if m.get("index") else (self._index_spec or IndexSpec())

    # ----- writing -------------------------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[None]:
        with WriteLock(self.folder, self.wait):
            self._manifest = self.store.manifest()
            if self._manifest is not None:
                self.vectors()  # load (or heal) the cache before changing anything
            yield
            self._save_vectors()

    def ingest(
        self,
        paths: Iterable[str | os.PathLike[str]],
        reader: ReaderOptions | None = None,
        prune: bool = False,
        progress: bool = False,
    ) -> IngestSummary:
        """Read files and folders, then add their documents (upsert by id)."""
        roots = [Path(p) for p in paths]
        if not roots:
            raise InputError("give at least one file or folder to ingest.")
        reader = reader or ReaderOptions()
        report = ReadReport()
        files = list(iter_files(roots, report))
        summary = IngestSummary()
        seen: set[str] = set()
        read_whole: set[str] = set()  # files read without any skip: their absent ids are gone

        def documents() -> Iterator[Document]:
            for path, root in tqdm(files, desc="files", unit="file", disable=not progress,
                                   leave=False):
                source, skips = _resolved(path), len(report.skips)
                for doc in read_file(path, root, reader, report):
                    doc.source = source
                    yield doc
                if len(report.skips) == skips:
                    read_whole.add(source)

        started = time.perf_counter()
        with self._writing():
            self._add_stream(documents(), summary, seen, progress)
            if prune:
                # a document is gone when its file is, or when its file was read whole without
                # it; a file that could not be read (or had bad records) keeps its documents
                gone = [
                    doc_id
                    for root in roots if root.is_dir()
                    for doc_id, source in self.store.sources_under(str(root.resolve()))
                    if doc_id not in seen and (source in read_whole or not os.path.exists(source))
                ]
                if gone:
                    with self.store.write():
                        summary.pruned = len(self.store.delete_documents(gone))
        summary.files = report.files
        summary.skipped = report.skips + summary.skipped
        summary.seconds = time.perf_counter() - started
        return summary

    def add(self, records: Iterable[Document | dict[str, Any]], progress: bool = False) -> IngestSummary:
        """Insert or replace documents given as dicts (id, text, title, metadata) or Documents."""
        summary = IngestSummary()
        started = time.perf_counter()
        with self._writing():
            self._add_stream((as_document(r) for r in records), summary, set(), progress)
        summary.seconds = time.perf_counter() - started
        return summary

    def _add_stream(
        self, docs: Iterable[Document], summary: IngestSummary, seen: set[str], progress: bool
    ) -> None:
        bar = tqdm(desc="embedding", unit="chunk", disable=not progress, leave=False)
        batch: dict[str, Document] = {}
        size = 0
        try:
            for doc in docs:
                if doc.id in seen:
                    summary.duplicates += 1
                    if doc.id not in batch:
                        log.warning("duplicate id %s: the last one wins", doc.id)
                seen.add(doc.id)
                batch.pop(doc.id, None)
                batch[doc.id] = doc
                size += max(1, len(doc.text) // 1500)
                if size >= BATCH_CHUNKS:
                    self._add_batch(list(batch.values()), summary, bar)
                    batch, size = {}, 0
            if batch:
                self._add_batch(list(batch.values()), summary, bar)
        finally:
            bar.close()

    def _add_batch(
        self, docs: list[Document], summary: IngestSummary, bar: Any, force: bool = False
    ) -> None:
        old = self.store.hashes(d.id for d in docs)
        todo = []
        for d in docs:
            h = content_hash(d)
            if old.get(d.id) == h and not force:
                summary.unchanged += 1
            else:
                todo.append((d, h))
        if not todo:
            return
        if self._manifest is None:
            self._manifest = self._create_manifest(self.encoder)
            with self.store.write():
                self.store.write_manifest(self._manifest)
            self._vectors = self._rebuild_vectors()  # the new, empty cache
        enc = self.encoder
        chunker = self._chunker()
        prepared: list[PreparedDocument] = []
        all_chunks = []
        for d, h in todo:
            chunks = chunker.chunk(d.text)
            prepared.append(PreparedDocument(d, h, chunks, np.zeros(0), []))
            all_chunks.extend(chunks)
        if chunker.tokenizer is not None and hasattr(enc, "encode_token_ids"):
            vectors = enc.encode_token_ids([c.token_ids or [] for c in all_chunks])
        else:
            vectors = enc.encode_documents([c.text for c in all_chunks])
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(all_chunks), int(self._manifest["dimension"])):
            raise ManifestMismatchError(
                f"the encoder returned vectors of shape {vectors.shape} for {len(all_chunks)} chunks "
                f"of dimension {self._manifest['dimension']}; nothing of this batch was written.")
        vectors = normalize_rows(vectors)
        pos = 0
        for p in prepared:
            n = len(p.chunks)
            p.vectors = vectors[pos : pos + n]
            p.terms = [self.analyzer.analyze(c.text) for c in p.chunks]
            pos += n
        with self.store.write():
            self.store.put_documents(prepared)
        for d, _ in todo:
            if d.id not in old:
                summary.added += 1
                summary.new_ids.add(d.id)
            elif d.id not in summary.new_ids:  # a repeat of an id added earlier in this run
                summary.updated += 1
        summary.chunks += len(all_chunks)
        bar.update(len(all_chunks))

    def add_embeddings(
        self, records: Iterable[Document | dict[str, Any]], vectors: np.ndarray,
        chunk_size: int | None = None,
    ) -> IngestSummary:
        """Store documents with precomputed vectors, one vector per document (one chunk each)."""
        from .types import Chunk

        docs = [as_document(r) for r in records]
        vectors = np.asarray(vectors, dtype=np.float32)
        if self._manifest is None:
            raise InputError("add precomputed vectors to an index created with an encoder first.")
        dim = int(self._manifest["dimension"])
        if vectors.ndim != 2 or vectors.shape != (len(docs), dim):
            raise InputError(f"expected vectors of shape ({len(docs)}, {dim}), got {vectors.shape}.")
        summary = IngestSummary()
        started = time.perf_counter()
        with self._writing():
            step = chunk_size or 5000
            for i in range(0, len(docs), step):
                part = docs[i : i + step]
                prepared = [
                    PreparedDocument(d, content_hash(d), [Chunk(0, 0, len(d.text), d.text)],
                                     normalize_rows(vectors[i + j : i + j + 1]),
                                     [self.analyzer.analyze(d.text)])
                    for j, d in enumerate(part)
                ]
                old = self.store.hashes(d.id for d in part)
                with self.store.write():
                    self.store.put_documents(prepared)
                summary.updated += sum(1 for d in part if d.id in old)
                summary.added += sum(1 for d in part if d.id not in old)
                summary.chunks += len(part)
        summary.seconds = time.perf_counter() - started
        return summary

    def delete(self, ids: Iterable[str]) -> list[str]:
        """Delete documents by id; returns the ids that existed."""
        ids = list(ids)
        with self._writing():
            with self.store.write():
                return self.store.delete_documents(ids)

    # ----- the vector cache ----------------------------------------------------------------
    def _dim(self) -> int:
        return int((self._manifest or {})["dimension"])

    def _rebuild_vectors(self, reason: str | None = None) -> VectorIndex:
        """Build the FAISS index from the embeddings in SQLite (no encoder involved)."""
        if reason:
            log.warning("rebuilding the vector index from SQLite: %s", reason)
        dim = self._dim()
        with self.store.snapshot():
            seq = self.store.seq()
            n = self.store.counts()["embeddings"]
            spec = self.spec
            train = None
            if spec.concrete(n) != "flat":
                train = self.store.sample_embeddings(dim, spec.train_size(n))
            vi = VectorIndex.build(spec, dim, n, train)
            for ids, vecs in self.store.iter_embeddings(dim):
                vi.add(ids, vecs)
            vi.seq = seq
        return vi

    def _load_vectors(self) -> VectorIndex:
        seq, floor = self.store.seq(), self.store.history_floor()
        for file_seq, path in checkpoints(self.folder):
            if file_seq > seq or file_seq < floor:
                continue
            try:
                return VectorIndex.load(path, file_seq, self._dim(), self.spec)
            except (RuntimeError, ValueError, OSError) as exc:
                why = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
                log.warning("the vector index file %s is unreadable (%s)", path.name, why)
        return self._rebuild_vectors("no usable vector index file" if seq else None)

    def _catch_up(self, vi: VectorIndex) -> None:
        """Apply the changes logged in SQLite since the checkpoint (call inside a snapshot)."""
        seq = self.store.seq()
        if vi.seq == seq:
            return
        changes = self.store.changes_since(vi.seq)
        added = {c for _, op, c in changes if op == "add"}
        removed = {c for _, op, c in changes if op == "del"}
        vi.remove(np.fromiter(removed - added, dtype=np.int64))
        new = sorted(added - removed)
        ids, vecs = self.store.embeddings(new, vi.dim)
        vi.add(ids, vecs)
        vi.seq = seq

    def vectors(self) -> VectorIndex:
        """The vector index, caught up with SQLite (loaded, healed or rebuilt as needed)."""
        with self.store.snapshot():
            if self._vectors is None:
                vi = self._load_vectors()
                if vi.kind == "hnsw":  # HNSW cannot remove: ids SQLite lacks are tombstones
                    vi.tombstones = set(vi.ids().tolist()) - set(self.store.chunk_ids().tolist())
                self._catch_up(vi)
                live = self.store.counts()["chunks"]
                if vi.live != live:
                    vi = self._rebuild_vectors(
                        f"the vector index holds {vi.ntotal} vectors for {live} chunks")
                self._vectors = vi
            else:
                self._catch_up(self._vectors)
        return self._vectors

    def _save_vectors(self) -> None:
        if self._manifest is None:
            return
        vi = self.vectors()
        if self.spec.concrete(vi.live) != vi.kind or vi.needs_rebuild():
            vi = self._vectors = self._rebuild_vectors()
        if not checkpoints(self.folder) or checkpoints(self.folder)[0][0] != vi.seq:
            vi.save(self.folder)

    # ----- searching -----------------------------------------------------------------------
    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "hybrid",
        fusion: str = DEFAULT_FUSION,
        alpha: float = DEFAULT_ALPHA,
        where: dict[str, str] | None = None,
        source: str | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
        snippets: bool = True,
    ) -> list[Hit]:
        """The k best documents for ``query``, best first (snippets=False skips highlighting)."""
        from .readers import clean_text

        if not isinstance(query, str) or not clean_text(query).strip():
            raise InputError("the query is empty; give some text to search for.")
        if not isinstance(k, int) or k < 1:
            raise InputError("the number of results (k) must be a whole number of at least 1.")
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, not '{mode}'.")
        if fusion not in FUSIONS:
            raise InputError(f"fusion must be one of {', '.join(FUSIONS)}, not '{fusion}'.")
        if not 0.0 <= alpha <= 1.0:
            raise InputError("alpha must be between 0 and 1.")
        if self._manifest is None:
            return []
        query = clean_text(query)
        flt = Filter({str(a): str(b) for a, b in (where or {}).items()}, source)
        params = SearchParams(ef_search=ef_search, nprobe=nprobe)
        qvec = None
        if mode != "lexical":
            qvec = normalize_rows(
                np.asarray(self.query_encoder.encode_queries([query]), dtype=np.float32))
        with self.store.snapshot():
            allowed = self.store.filtered_chunk_ids(flt) if flt else None
            if allowed is not None and not len(allowed):
                return []
            depth = max(4 * k, 50)
            while True:
                dense = self._dense(qvec, depth, allowed, params) if qvec is not None else {}
                lexical = self._lexical(query, depth, flt) if mode != "semantic" else {}
                fused = self._fuse(mode, fusion, alpha, dense, lexical)
                hits = self._to_hits(fused, dense, lexical, k)
                if len(hits) >= k or depth >= self._candidates(allowed):
                    break
                depth *= 4
            self._finish_hits(hits, query, qvec, snippets)
        return hits

    def _candidates(self, allowed: np.ndarray | None) -> int:
        """How many chunks a search can reach (to know when widening is done)."""
        return len(allowed) if allowed is not None else self.store.counts()["chunks"]

    def _dense(
        self, qvec: np.ndarray, depth: int, allowed: np.ndarray | None, params: SearchParams
    ) -> dict[int, float]:
        vi = self.vectors()
        if allowed is not None and (vi.kind == "flat" or len(allowed) <= EXACT_FILTER_MAX):
            if vi.kind == "flat":
                scores, ids = vi.search(qvec, depth, allowed=allowed, params=params)
                return {int(i): float(s) for i, s in zip(ids[0], scores[0]) if i >= 0}
            ids, vecs = self.store.embeddings(allowed.tolist(), vi.dim)
            return _top(ids, vecs @ qvec[0], depth)
        scores, ids = vi.search(qvec, depth, params=params)
        out = {int(i): float(s) for i, s in zip(ids[0], scores[0]) if i >= 0}
        if allowed is not None:
            allowed_set = set(allowed.tolist())
            out = {i: s for i, s in out.items() if i in allowed_set}
            if len(out) < depth and depth >= vi.ntotal:
                # an approximate index may miss vectors: score the allowed ones exactly
                best: dict[int, float] = {}
                for part in range(0, len(allowed), EXACT_FILTER_MAX):
                    ids_, vecs = self.store.embeddings(allowed[part : part + EXACT_FILTER_MAX].tolist(),
                                                       vi.dim)
                    best.update(_top(ids_, vecs @ qvec[0], depth))
                out = dict(sorted(best.items(), key=lambda kv: -kv[1])[:depth])
        return out

    def _lexical(self, query: str, depth: int, flt: Filter) -> dict[int, float]:
        match = self.analyzer.fts_query(query)
        if match is None:
            return {}
        return dict(self.store.lexical(match, depth, flt if flt else None))

    @staticmethod
    def _fuse(
        mode: str, fusion: str, alpha: float, dense: dict[int, float], lexical: dict[int, float]
    ) -> dict[int, float]:
        if mode == "semantic":
            return dict(dense)
        if mode == "lexical":
            return dict(lexical)
        if fusion == "convex":
            return convex(dense, lexical, alpha)
        rank = lambda d: sorted(d, key=lambda i: -d[i])  # noqa: E731
        return rrf([rank(dense), rank(lexical)], RRF_K)

    def _to_hits(
        self, fused: dict[int, float], dense: dict[int, float], lexical: dict[int, float], k: int
    ) -> list[Hit]:
        """Aggregate chunk scores to documents (best chunk wins) and take the top k."""
        rows = self.store.chunks_by_id(list(fused))
        best: dict[str, int] = {}
        for cid, score in sorted(fused.items(), key=lambda kv: (-kv[1], kv[0])):
            row = rows.get(cid)
            if row is None:  # a vector SQLite no longer has (tombstone): never shown
                continue
            if row.doc_id not in best:
                best[row.doc_id] = cid
                if len(best) == k:
                    break
        hits = []
        for rank, (doc_id, cid) in enumerate(best.items(), start=1):
            r = rows[cid]
            hits.append(Hit(rank=rank, score=float(fused[cid]), doc_id=doc_id, title=r.title,
                            text=r.text, start=r.start, end=r.end, source=r.source,
                            metadata=r.metadata, chunk_id=cid, dense_score=dense.get(cid),
                            lexical_score=lexical.get(cid)))
        return hits

    def _finish_hits(
        self, hits: list[Hit], query: str, qvec: np.ndarray | None, snippets: bool = True
    ) -> None:
        """Exact dense scores for the explanation, and snippets with highlights."""
        if qvec is not None:
            missing = [h.chunk_id for h in hits if h.dense_score is None]
            if missing:
                ids, vecs = self.store.embeddings(missing, int(qvec.shape[1]))
                exact = dict(zip(ids.tolist(), (vecs @ qvec[0]).tolist()))
                for h in hits:
                    if h.dense_score is None:
                        h.dense_score = exact.get(h.chunk_id)
        for h in hits if snippets else []:
            snip = make_snippet(h.text, h.start, query, self.analyzer)
            h.snippet, h.snippet_start, h.snippet_end = snip.text, snip.start, snip.end
            h.highlight_spans = snip.spans
            h.highlight = snip.marked()

    def similar(self, doc_id: str, k: int = 10) -> list[Hit]:
        """Documents closest to a stored one, from its stored vectors (no encoding)."""
        if not isinstance(k, int) or k < 1:
            raise InputError("the number of results (k) must be a whole number of at least 1.")
        with self.store.snapshot():
            own = self.store.doc_chunk_ids(doc_id)
            if not own:
                raise InputError(f"there is no document '{doc_id}' in the index.")
            ids, vecs = self.store.embeddings(own, self._dim())
            qvec = normalize_rows(vecs.mean(axis=0, keepdims=True))
            total = self.store.counts()["chunks"]
            depth = max(4 * k + len(own), 50)
            while True:
                dense = {i: s for i, s in self._dense(qvec, depth, None, SearchParams()).items()
                         if i not in set(own)}
                hits = self._to_hits(dense, dense, {}, k)
                if len(hits) >= k or depth >= total:
                    break
                depth *= 4
            for h in hits:
                h.snippet, h.snippet_start = h.text[:320], h.start
                h.snippet_end = h.start + len(h.snippet)
                h.highlight = h.snippet
        return hits

    # ----- facts, checks and maintenance ---------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Counts, encoder settings, index type and sizes on disk."""
        m = self._manifest or {}
        counts = self.store.counts()
        files = {p.name: p.stat().st_size for p in self.folder.iterdir() if p.is_file()}
        kind = None
        if m:
            kind = self.spec.concrete(counts["chunks"])
        return {
            "index": str(self.folder),
            "documents": counts["documents"],
            "chunks": counts["chunks"],
            "encoder": m.get("encoder"),
            "revision": m.get("revision"),
            "pooling": m.get("pooling"),
            "dimension": m.get("dimension"),
            "precision": m.get("precision"),
            "precision_note": m.get("precision_note"),
            "max_length": m.get("max_length"),
            "chunk_tokens": m.get("chunk_tokens"),
            "overlap": m.get("overlap"),
            "index_type": kind,
            "index_settings": m.get("index"),
            "package_version": m.get("package_version"),
            "bytes_on_disk": sum(files.values()),
            "files": files,
        }

    def verify(self) -> list[str]:
        """Heal what SQLite can heal, then list whatever is still wrong (empty: all good)."""
        problems = list(self.store.integrity_check())
        if self._manifest is None:
            return problems
        dim = self._dim()
        problems += self.store.problems(dim)
        self._vectors = None
        try:
            vi = self.vectors()
        except BetoSearchError as exc:
            return problems + [str(exc)]
        with self.store.snapshot():
            sql_ids = set(self.store.chunk_ids().tolist())
            faiss_ids = set(vi.ids().tolist()) - vi.tombstones
        # (HNSW ids SQLite no longer has are tombstones: filtered at search, dropped by compact)
        if sql_ids - faiss_ids:
            problems.append(f"{len(sql_ids - faiss_ids)} chunks have no vector in the FAISS index")
        if faiss_ids - sql_ids:
            problems.append(f"the FAISS index holds {len(faiss_ids - sql_ids)} ids SQLite lacks")
        return problems

    def repair(self) -> dict[str, Any]:
        """Rebuild the FAISS file from SQLite; re-encode documents whose chunks lost their vectors."""
        with WriteLock(self.folder, self.wait):
            self._manifest = self.store.manifest()
            if self._manifest is None:
                return {"vectors": 0, "reencoded": 0}
            started = time.perf_counter()
            broken = self.store.documents_missing_vectors(self._dim())
            if broken:
                log.warning("re-encoding %d documents whose chunks lack vectors", len(broken))
                docs = [Document(id=d["id"], text=d["text"], title=d["title"], source=d["source"],
                                 metadata=d["metadata"]) for d in map(self.store.document, broken) if d]
                bar = tqdm(disable=True)
                self._add_batch(docs, IngestSummary(), bar, force=True)
            self._vectors = self._rebuild_vectors()
            self._vectors.save(self.folder)
            return {"vectors": self._vectors.ntotal, "reencoded": len(broken),
                    "seconds": time.perf_counter() - started}

    def compact(self) -> dict[str, Any]:
        """Reclaim the space of deleted documents: VACUUM, a fresh FAISS file, history dropped."""
        with WriteLock(self.folder, self.wait):
            self._manifest = self.store.manifest()
            before = sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())
            if self._manifest is not None:
                self._vectors = self._rebuild_vectors()
                self._vectors.save(self.folder)
                with self.store.write():
                    self.store.drop_history()
            self.store.vacuum()
            after = sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())
            return {"bytes_before": before, "bytes_after": after}


def _resolved(path: Path) -> str:
    """The absolute, symlink-free path; a broken or looping link stays as it is."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return os.path.abspath(path)


def _top(ids: np.ndarray, scores: np.ndarray, n: int) -> dict[int, float]:
    if not len(ids):
        return {}
    order = np.argsort(-scores)[:n]
    return {int(ids[i]): float(scores[i]) for i in order}

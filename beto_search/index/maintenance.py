"""Facts, checks and upkeep of an index: info, verify, repair, compact, the default fusion and
the light query graph."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from ..errors import BetoSearchError, InputError
from ..fusion import explain as explain_fusion
from .indexer import Indexer
from .locking import WriteLock

if TYPE_CHECKING:
    from .context import IndexContext

log = logging.getLogger(__name__)


class Maintenance:
    """``Maintenance(ctx).verify()`` and friends."""

    def __init__(self, ctx: IndexContext) -> None:
        self.ctx = ctx
        self.store = ctx.store

    def info(self) -> dict[str, Any]:
        """Counts, encoder settings, index type and sizes on disk."""
        from .reembed import pending as reembed_pending  # imports more than info needs

        m = self.ctx.manifest
        counts = self.store.counts()
        folder = self.ctx.folder
        files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
        fields: dict[str, Any] = m.to_dict() if m is not None else {}
        get = fields.get
        return {
            "index": str(folder),
            "documents": counts["documents"],
            "seq": self.store.cache_state().seq,  # the change sequence the index is at
            "chunks": counts["chunks"],
            "encoder": get("encoder"),
            "revision": get("revision"),
            "pooling": get("pooling"),
            "dimension": get("dimension"),
            "precision": get("precision"),
            "precision_note": get("precision_note"),
            "max_length": get("max_length"),
            "chunk_tokens": get("chunk_tokens"),
            "overlap": get("overlap"),
            "index_type": m.spec.concrete(counts["chunks"]) if m is not None else None,
            "index_settings": get("index"),
            "fusion": get("fusion"),
            "fusion_explained": explain_fusion(m.to_dict() if m is not None else None),
            "generation": get("generation"),
            "reembed_pending": reembed_pending(self.ctx),
            # streamed documents a killed ingest left half-written (re-run it to resume)
            "staged": [
                {"doc_id": d["doc_id"], "source": d["source"], "chunks": d["chunks"]}
                for d in self.store.staged()
            ],
            "package_version": get("package_version"),
            "bytes_on_disk": sum(files.values()),
            "files": files,
        }

    def verify(self) -> list[str]:
        """Heal what SQLite can heal, then list whatever is still wrong (empty: all good)."""
        problems = list(self.store.integrity_check())
        m = self.ctx.manifest
        if m is None:
            return problems
        problems += self.store.problems(m.dimension)
        problems += self.store.staging_problems(m.dimension)
        self.ctx.cache.invalidate()
        try:
            with self.ctx.cache.pinned() as vi:
                sql_ids = set(self.store.chunk_ids().tolist())
                faiss_ids = set(vi.ids().tolist()) - vi.tombstones
        except BetoSearchError as exc:
            return [*problems, str(exc)]
        # (HNSW ids SQLite no longer has are tombstones: filtered at search, dropped by compact)
        if sql_ids - faiss_ids:
            problems.append(f"{len(sql_ids - faiss_ids)} chunks have no vector in the FAISS index")
        if faiss_ids - sql_ids:
            problems.append(f"the FAISS index holds {len(faiss_ids - sql_ids)} ids SQLite lacks")
        return problems

    def repair(self) -> dict[str, Any]:
        """Rebuild the FAISS file from SQLite; re-encode documents whose chunks lost their vectors."""
        ctx = self.ctx
        with WriteLock(ctx.folder, ctx.wait):
            m = ctx.reload_manifest()
            if m is None:
                return {"vectors": 0, "reencoded": 0}
            started = time.perf_counter()
            broken = self.store.documents_missing_vectors(m.dimension)
            if broken:
                log.warning("re-encoding %d documents whose chunks lack vectors", len(broken))
                Indexer(ctx).reencode(broken)
            vi = ctx.cache.rebuild()
            vi.save(ctx.folder)
            return {
                "vectors": vi.ntotal,
                "reencoded": len(broken),
                "seconds": time.perf_counter() - started,
            }

    def stale_staging(self) -> list[str]:
        """Ids of staged documents no re-run can resume: their source file is gone or changed
        since staging began (or they have none to check against)."""
        out = []
        for d in self.store.staged():
            try:
                st = os.stat(d["source"]) if d["source"] else None
            except OSError:
                st = None
            if st is None or (st.st_size, st.st_mtime_ns) != (d["size"], d["mtime_ns"]):
                out.append(d["doc_id"])
        return out

    def compact(self) -> dict[str, Any]:
        """Reclaim the space of deleted documents: VACUUM, a fresh FAISS file, history dropped,
        the staging of streamed documents that can no longer resume dropped."""
        ctx = self.ctx
        folder = ctx.folder
        with WriteLock(folder, ctx.wait):
            m = ctx.reload_manifest()
            before = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            stale = self.stale_staging()
            dropped = 0
            if stale:
                with self.store.write():
                    dropped = sum(self.store.drop_staging(doc_id) for doc_id in stale)
                log.info("dropped the staging of %d documents (%d chunks)", len(stale), dropped)
            if m is not None:
                vi = ctx.cache.rebuild()
                vi.save(folder)
                with self.store.write():
                    self.store.drop_history()
                ctx.cache.drop_checkpoints_below(vi.seq)
            self.store.vacuum()
            after = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            return {
                "bytes_before": before,
                "bytes_after": after,
                "staged_chunks_dropped": dropped,
            }

    def set_default_fusion(self, fusion: dict[str, Any] | None) -> None:
        """Record the index's default fusion (e.g. the one ``tune`` chose) in the manifest."""
        ctx = self.ctx
        with WriteLock(ctx.folder, ctx.wait):
            m = ctx.reload_manifest()
            if m is None:
                raise InputError("the index is empty; ingest documents before setting its fusion.")
            m.fusion = dict(fusion) if fusion is not None else None
            with self.store.write():
                self.store.write_manifest({"fusion": m.fusion})

    def prepare_query_graph(self) -> bool:
        """Export the index's light query graph if it is not cached yet (``SearchEngine``'s)."""
        m = self.ctx.manifest
        if m is None or self.ctx.encoders.given or self.ctx.options.device == "cuda":
            return False
        from ..backends.query import prepare_query_graph

        try:
            prepare_query_graph(m.encoder, m.precision, m.revision)
        except (BetoSearchError, ImportError, RuntimeError, OSError, ValueError) as exc:
            log.warning("the query graph was not prepared (the first query will): %s", exc)
            return False
        return True

"""The ingest summary and the per-batch preparation of documents (hash, chunks, terms)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from .readers import Skip
from .types import Document


@dataclass
class IngestSummary:
    """What an ingest did: counts, skips with reasons, time."""

    files: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    pruned: int = 0
    chunks: int = 0
    resumed: int = 0  # chunks of streamed documents found staged by a killed run, not re-encoded
    seconds: float = 0.0
    skipped: list[Skip] = field(default_factory=list)
    excluded: int = 0  # files and folders left out by --include / --exclude (not skips)
    new_ids: set[str] = field(default_factory=set, repr=False)  # ids added by this run

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "new_ids"}
        out["skipped"] = [{"where": s.where, "reason": s.reason} for s in self.skipped]
        out["seconds"] = round(self.seconds, 3)
        return out

    def reasons(self) -> dict[str, int]:
        """Skip counts by reason (the reason's text before any parenthesis)."""
        out: dict[str, int] = {}
        for s in self.skipped:
            key = s.reason.split(" (")[0]
            out[key] = out.get(key, 0) + 1
        return out


def content_hash(doc: Document) -> str:
    """A hash of everything stored for a document; equal hashes mean nothing to re-encode.

    A streamed document (``parts``) is hashed on its source file's bytes when it has one (one
    cheap pass, no extraction), else on the stream's text."""
    h = hashlib.sha256()
    if doc.parts is not None:
        h.update(b"stream\x00")
        if doc.source and os.path.isfile(doc.source):
            with open(doc.source, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
        else:
            for text, _ in doc.parts():
                h.update(text.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    for part in (
        doc.title,
        doc.text,
        doc.source,
        json.dumps(doc.metadata, sort_keys=True, ensure_ascii=False, default=str),
    ):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    if doc.locations:  # only when present: the hashes of plain documents stay as they were
        h.update(json.dumps(doc.locations, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


def as_document(record: Document | dict[str, Any]) -> Document:
    """Accept a Document or a dict with id, text and optional title, source, metadata.

    Refuses (InputError) an id holding a lone surrogate (cleaning would make it another
    document's id) and metadata that cannot be stored as JSON (``validation.check_metadata``).
    """
    from .errors import InputError
    from .readers import clean_text
    from .validation import check_metadata, check_text

    if isinstance(record, Document):
        doc = record
    elif isinstance(record, dict):
        if "id" not in record or "text" not in record:
            raise InputError("each record needs an 'id' and a 'text'.")
        doc = Document(
            id=str(record["id"]),
            text=str(record["text"]),
            title=str(record.get("title") or ""),
            source=str(record.get("source") or ""),
            metadata=record.get("metadata") or {},
            locations=[(int(o), dict(loc)) for o, loc in record.get("locations") or []],
        )
    else:
        raise InputError("records must be dicts or Documents.")
    if not doc.id.strip():
        raise InputError("a document id may not be empty.")
    check_text(doc.id, f"the document id {doc.id[:60]!r}")
    try:
        metadata = check_metadata(doc.metadata)
    except InputError as exc:
        raise InputError(f"document '{doc.id[:60]}': {exc}") from None
    return Document(
        id=clean_text(doc.id),
        text=clean_text(doc.text),
        title=clean_text(doc.title),
        source=doc.source,
        metadata=dict(metadata),
        locations=doc.locations,
        parts=doc.parts,
    )

"""A sharded index's layout: ``PATH/shards.json`` naming N ordinary index folders, and the routing
of a document id to its shard (blake2b of the id, never Python's ``hash``: the same shard in
every process, on every machine and Python version)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import IndexNotFoundError, InputError

MANIFEST_NAME = "shards.json"
DB_NAME = "index.db"  # an ordinary index folder's database (engine.DB_NAME)
FORMAT = 1
ROUTING = "blake2b-64 mod N"
MAX_SHARDS = 256
WRITERS = ("threads", "processes")
QUEUE_DOCS = 256  # documents waiting per shard writer (bounds memory while routing)


def shard_of(doc_id: str, count: int) -> int:
    """The shard of a document id: stable across processes, machines and Python versions."""
    digest = hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def shard_name(i: int) -> str:
    return f"shard-{i:03d}"


def global_id(shard: int, chunk_id: int, count: int) -> int:
    """A chunk's id across the index (each shard numbers its own chunks)."""
    return chunk_id * count + shard


def local_id(chunk_id: int, count: int) -> tuple[int, int]:
    """(shard, the shard's own chunk id) of a global chunk id."""
    return chunk_id % count, chunk_id // count


def read_layout(folder: Path) -> list[str]:
    """The shard folders named by ``folder/shards.json`` (checked)."""
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        count, folders = int(data["shards"]), [str(f) for f in data["folders"]]
        routing = data.get("routing")
    except (OSError, ValueError, KeyError, TypeError):
        raise IndexNotFoundError(f"{path} is not a readable shard manifest.") from None
    if routing != ROUTING or count != len(folders) or not 1 <= count <= MAX_SHARDS:
        raise IndexNotFoundError(
            f"{path} names {len(folders)} shard folders for {count} shards with routing "
            f"'{routing}'; this version reads '{ROUTING}' with one folder per shard."
        )
    if any(Path(f).name != f or f in ("", ".", "..") for f in folders):
        raise IndexNotFoundError(f"{path} names shard folders outside the index folder.")
    return folders


def write_layout(folder: Path, count: int) -> list[str]:
    """Write ``shards.json`` for ``count`` new shards (atomically: a crash leaves none)."""
    folders = [shard_name(i) for i in range(count)]
    data = {"format": FORMAT, "shards": count, "routing": ROUTING, "folders": folders}
    tmp = folder / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST_NAME)
    return folders


def folders_to_open(folder: Path, shards: int | None, create: bool) -> tuple[list[str], bool]:
    """(the shard folders of the sharded index at ``folder``, whether they are new): those of
    its ``shards.json``, else ``shards`` new ones (if ``create``; ``folder`` made, the layout
    not yet written: the caller writes it once every shard opened)."""
    if (folder / MANIFEST_NAME).exists():
        folders = read_layout(folder)
        if shards is not None and shards != len(folders):
            raise InputError(
                f"the index at {folder} has {len(folders)} shards, not {shards}; leave out "
                f"--shards to write to it, or give another --index."
            )
        return folders, False
    assert shards is not None
    if (folder / DB_NAME).exists():
        raise InputError(
            f"the index at {folder} is not sharded; leave out --shards to write to it, "
            f"or give another --index for a sharded one."
        )
    if not create:
        raise IndexNotFoundError(
            f"there is no index at {folder}; create one with 'beto-search ingest FOLDER "
            f"--index {folder} --shards {shards}'."
        )
    if not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise InputError(f"the number of shards must be between 1 and {MAX_SHARDS}.")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file, not an index folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the index folder {folder} ({exc.strerror}).") from None
    return [shard_name(i) for i in range(shards)], True

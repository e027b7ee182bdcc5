"""The record formats: .jsonl (one object per line), .json (a list of objects) and .csv (one row
per document), each record a Document whose fields ``--id-field``, ``--text-field`` and
``--title-field`` name (the rest is metadata). A BEIR ``corpus.jsonl`` (``_id``) needs no flags.

``readers.read_file`` dispatches here: ``rel`` is the file's id (its path under the ingested
folder, from which records without an id get ``rel#N``), ``skip(where, reason)`` records a record
that was not read. Nothing here imports ``readers``.
"""

from __future__ import annotations

import csv
import json
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from .errors import InputError
from .text import SNIFF_BYTES, clean_text, decode_bytes, detect_encoding
from .types import Document
from .validation import check_metadata

Skipper = Callable[[str, str], None]  # (where, reason), e.g. ReadReport.skip


class RecordOptions(Protocol):
    """The fields of ``readers.ReaderOptions`` the record readers use."""

    id_field: str
    text_field: str
    title_field: str
    encoding: str | None


def _record_to_document(record: Any, opts: RecordOptions, default_id: str, source: str) -> Document:
    if not isinstance(record, dict):
        raise InputError("not a JSON object")
    id_field = opts.id_field
    if id_field not in record and id_field == "id" and "_id" in record:
        id_field = "_id"  # BEIR corpus.jsonl
    text = record.get(opts.text_field)
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"no text in field '{opts.text_field}'")
    raw_id = record.get(id_field)
    doc_id = str(raw_id).strip() if raw_id not in (None, "") else default_id
    title = record.get(opts.title_field) or ""
    used = {id_field, opts.text_field, opts.title_field}
    metadata = check_metadata({k: v for k, v in record.items() if k not in used})
    return Document(
        id=clean_text(doc_id),
        text=clean_text(text),
        title=clean_text(str(title)),
        source=source,
        metadata=metadata,
    )


def _text_lines(path: Path, opts: RecordOptions) -> Iterator[str]:
    """Stream a text file line by line in its detected encoding (memory bounded)."""
    encoding = opts.encoding
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if encoding is None:
        try:
            head.decode("utf-8")
            encoding = "utf-8-sig"
        except UnicodeDecodeError as exc:
            encoding = "utf-8-sig" if exc.start > len(head) - 4 else None
        if encoding is None:
            encoding = detect_encoding(head) or "utf-8"
    try:
        with path.open("r", encoding=encoding, errors="replace", newline="") as fh:
            yield from fh
    except LookupError:
        raise InputError(f"unknown encoding {encoding}") from None


def read_jsonl(path: Path, rel: str, opts: RecordOptions, skip: Skipper) -> Iterator[Document]:
    """One document per line of a .jsonl file (streamed); a bad line is a skip, not an error."""
    for lineno, line in enumerate(_text_lines(path, opts), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line.replace("\x00", ""))
            yield _record_to_document(record, opts, f"{rel}#{lineno}", str(path))
        except json.JSONDecodeError as exc:
            skip(where, f"malformed JSON ({exc.msg})")
        except RecursionError:
            skip(where, "malformed JSON (nested too deep)")
        except InputError as exc:
            skip(where, str(exc))


def read_json(path: Path, rel: str, opts: RecordOptions, skip: Skipper) -> Iterator[Document]:
    """The documents of a .json file holding an object or a list of objects."""
    try:
        data = json.loads(clean_text(decode_bytes(path.read_bytes(), opts.encoding)))
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON at line {exc.lineno} ({exc.msg})") from None
    except RecursionError:
        raise InputError("malformed JSON (nested too deep)") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InputError("a .json file must hold an object or a list of objects")
    for i, record in enumerate(data, start=1):
        try:
            yield _record_to_document(record, opts, f"{rel}#{i}", str(path))
        except InputError as exc:
            skip(f"{path}[{i}]", str(exc))


# csv.field_size_limit is process-wide (131072 characters by default): raise it only while this
# module parses one row, under a lock, and put it back, so no one else's csv reading changes.
_CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)
_csv_limit_lock = threading.Lock()


def _next_row(reader: Iterator[list[str]]) -> list[str]:
    """``next(reader)`` with fields of any size allowed, the global limit restored after."""
    with _csv_limit_lock:
        previous = csv.field_size_limit(_CSV_FIELD_LIMIT)
        try:
            return next(reader)
        finally:
            csv.field_size_limit(previous)


def read_csv(path: Path, rel: str, opts: RecordOptions, skip: Skipper) -> Iterator[Document]:
    """One document per row of a .csv file with a header (streamed, fields of any size)."""
    lines = (line.replace("\x00", "") for line in _text_lines(path, opts))
    reader = csv.reader(lines)
    try:
        header = _next_row(reader)
    except StopIteration:
        raise InputError("empty CSV file") from None
    except csv.Error as exc:
        raise InputError(f"malformed CSV header ({exc})") from None
    header = [clean_text(h).strip() for h in header]
    if opts.text_field not in header:
        raise InputError(f"CSV has no '{opts.text_field}' column (columns: {', '.join(header)})")
    row_no = 1
    while True:
        try:
            row = _next_row(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            skip(f"{path}:{reader.line_num}", f"malformed CSV row ({exc})")
            continue
        row_no += 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            skip(
                f"{path}:{reader.line_num}",
                f"malformed CSV row ({len(row)} fields, header has {len(header)})",
            )
            continue
        try:
            yield _record_to_document(dict(zip(header, row)), opts, f"{rel}#{row_no}", str(path))
        except InputError as exc:
            skip(f"{path}:{reader.line_num}", str(exc))

"""Turning files into Documents: the folder walk, text and record formats, encodings, stable
ids, and reasons for every file or record not read.

Formats: .txt and .md (one document per file; first line / first heading is the title),
.jsonl (one object per line), .json (a list of objects), .csv (one row per document).
A BEIR ``corpus.jsonl`` (``_id``, ``title``, ``text``) is recognised without flags; the record
formats are read by ``readers_records``.
Documents (PDF, HTML/XHTML, DOCX, ODT, EPUB) are read by ``formats``, one per file.
Every file under an ingested folder is read or listed as skipped with its reason (hidden,
unsupported extension, too large, ...); files left out by --include/--exclude are counted.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .formats import FORMATS, read_format
from .readers_records import read_csv, read_json, read_jsonl
from .text import SNIFF_BYTES, clean_text, decode_bytes, detect_encoding
from .types import Document

log = logging.getLogger(__name__)

EXTENSIONS = (".txt", ".md", ".jsonl", ".json", ".csv")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")


@dataclass
class ReaderOptions:
    """Field names for record formats and an optional forced text encoding."""

    id_field: str = "id"
    text_field: str = "text"
    title_field: str = "title"
    encoding: str | None = None
    include: tuple[str, ...] = ()  # globs: only files matching one of them are read
    exclude: tuple[str, ...] = ()  # globs: files and folders matching one of them are not
    max_file_size: int | None = None  # bytes; larger files are skipped

    def selects(self, rel: str, is_dir: bool = False) -> bool:
        """Whether the path ``rel`` (relative to the ingested folder) passes the globs; a glob
        matches the relative path or the name alone."""
        name = rel.rsplit("/", 1)[-1]

        def hit(globs: tuple[str, ...]) -> bool:
            return any(
                fnmatch.fnmatchcase(rel, g.rstrip("/")) or fnmatch.fnmatchcase(name, g.rstrip("/"))
                for g in globs
            )

        if hit(self.exclude):
            return False
        return is_dir or not self.include or hit(self.include)

    # .txt/.md files larger than this (bytes) are read as a stream of blocks, not held whole
    stream_over: int = 4 * 2**20


@dataclass
class Skip:
    """One input that was not ingested, and why."""

    where: str
    reason: str


@dataclass
class ReadReport:
    """What a walk over the inputs met: files read and every skip with its reason."""

    files: int = 0
    skips: list[Skip] = field(default_factory=list)
    excluded: int = 0  # files and folders left out by --include / --exclude

    def skip(self, where: str, reason: str) -> None:
        log.info("skipped %s: %s", where, reason)
        self.skips.append(Skip(where, reason))


_CONTROLS = bytes(b for b in range(1, 32) if b not in (9, 10, 11, 12, 13, 27))


def looks_binary(head: bytes) -> bool:
    """A file whose first bytes hold many NULs or control bytes is binary, not text."""
    if not head:
        return False
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 BOMs are text
        return False
    # Text in any 8-bit encoding or UTF-8 holds next to no C0 controls besides \t \n \v \f \r
    # and ESC (colour codes); random or compressed bytes hold ~10% of them.
    controls = len(head) - len(head.translate(None, _CONTROLS))
    return head.count(0) > len(head) // 100 + 1 or controls > len(head) // 50 + 1


def supported(path: Path) -> bool:
    """Whether some reader reads files with this extension."""
    suffix = path.suffix.lower()
    return suffix in EXTENSIONS or suffix in FORMATS


def iter_files(
    paths: list[Path], report: ReadReport, opts: ReaderOptions | None = None
) -> Iterator[tuple[Path, Path]]:
    """Yield (file, root) for every supported file under ``paths``, safely walking folders;
    every other file becomes a skip with its reason (hidden ones: one per hidden folder)."""
    opts = opts or ReaderOptions()
    for root in paths:
        if not root.exists():
            raise InputError(f"{root} does not exist.")
        if root.is_file():  # named on purpose: read even if hidden or not matched by the globs
            if supported(root):
                yield root, root.parent
            else:
                report.skip(str(root), f"unsupported extension {root.suffix or '(none)'}")
            continue
        seen: set[tuple[int, int]] = set()

        def onerror(err: OSError) -> None:
            report.skip(str(err.filename), f"unreadable folder ({err.strerror})")

        for folder, dirs, files in os.walk(root, followlinks=True, onerror=onerror):
            try:
                st = os.stat(folder)
            except OSError as exc:
                report.skip(folder, f"unreadable folder ({exc.strerror})")
                dirs[:] = []
                continue
            if (st.st_dev, st.st_ino) in seen:
                report.skip(folder, "symlink loop (folder already visited)")
                dirs[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            rel_folder = Path(folder).relative_to(root).as_posix()
            rel_folder = "" if rel_folder == "." else rel_folder + "/"
            kept = []
            for d in sorted(dirs):
                if d.startswith("."):
                    report.skip(os.path.join(folder, d) + os.sep, "hidden folder")
                elif not opts.selects(rel_folder + d, is_dir=True):
                    report.excluded += 1
                else:
                    kept.append(d)
            dirs[:] = kept
            for name in sorted(files):
                path = Path(folder) / name
                if name.startswith("."):
                    report.skip(str(path), "hidden file")
                elif not opts.selects(rel_folder + name):
                    report.excluded += 1
                elif supported(path):
                    yield path, root
                else:
                    report.skip(str(path), f"unsupported extension {path.suffix or '(none)'}")


def doc_id_for(path: Path, root: Path) -> str:
    """The stable id of a one-document file: its path relative to the ingested folder."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _title_from_text(text: str, markdown: bool) -> str:
    for line in text.splitlines():
        if not line.strip():
            continue
        if markdown:
            m = _HEADING.match(line)
            if m:
                return m.group(1).strip()
        return line.strip()[:200]
    return ""


def _text_encoding(path: Path, forced: str | None) -> str:
    """The encoding to stream a file with: forced, else UTF-8 when its head is, else detected."""
    if forced:
        return forced
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    try:
        head.decode("utf-8")
        return "utf-8-sig"
    except UnicodeDecodeError as exc:
        if exc.start > len(head) - 4:  # a character cut by the sniff's end
            return "utf-8-sig"
    return detect_encoding(head) or "utf-8"


TEXT_BLOCK_BYTES = 1 << 16


def iter_text_blocks(path: Path, encoding: str | None = None) -> Iterator[str]:
    """A text file as cleaned blocks (``clean_text`` of the whole, block by block): incremental
    decoding, and NFC with the last character and its combining marks held back to the next
    block, so no composition is cut."""
    import codecs

    enc = _text_encoding(path, encoding)
    try:
        decoder = codecs.getincrementaldecoder(enc)(errors="strict" if encoding else "replace")
    except LookupError:
        raise InputError(f"unknown encoding {enc}") from None
    tail = ""
    first = True
    with path.open("rb") as fh:
        while True:
            data = fh.read(TEXT_BLOCK_BYTES)
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                raise InputError(f"cannot decode as {enc}: {exc}") from None
            if first:
                text, first = text.lstrip("\ufeff"), False
            text = tail + text.replace("\x00", "")
            if data:
                i = len(text) - 1
                while i > 0 and unicodedata.combining(text[i]):
                    i -= 1
                text, tail = text[:i], text[i:] if i >= 0 else ""
            else:
                tail = ""
            if text:
                yield unicodedata.normalize("NFC", text)
            if not data:
                return


def _streamed_text_file(path: Path, root: Path, opts: ReaderOptions) -> Document:
    """A large .txt/.md file as a Document whose text is streamed (``parts``), never held."""
    encoding = opts.encoding

    def parts() -> Iterator[tuple[str, dict[str, Any]]]:
        for block in iter_text_blocks(path, encoding):
            yield block, {}

    head = ""
    for block in iter_text_blocks(path, encoding):
        head += block
        if "\n" in head.lstrip() or len(head) > SNIFF_BYTES:
            break
    return Document(
        id=doc_id_for(path, root),
        text="",
        title=_title_from_text(head, path.suffix.lower() == ".md"),
        source=str(path),
        parts=parts,
    )


def _read_text_file(path: Path, root: Path, opts: ReaderOptions) -> Iterator[Document]:
    if path.stat().st_size > opts.stream_over:
        yield _streamed_text_file(path, root, opts)
        return
    text = clean_text(decode_bytes(path.read_bytes(), opts.encoding))
    if not text.strip():
        raise InputError("empty or whitespace-only")
    from .formats.markdown import markdown_locations  # formats.base imports this module

    markdown = path.suffix.lower() == ".md"
    yield Document(
        id=doc_id_for(path, root),
        text=text,
        title=_title_from_text(text, markdown),
        source=str(path),
        locations=markdown_locations(text) if markdown else [],
    )


def read_file(
    path: Path, root: Path, opts: ReaderOptions, report: ReadReport
) -> Iterator[Document]:
    """Documents in one file; problems with single records become skips in ``report``."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        report.skip(str(path), f"unreadable file ({exc.strerror})")
        return
    if opts.max_file_size is not None and size > opts.max_file_size:
        report.skip(
            str(path),
            f"too large ({format_size(size)} > --max-file-size {format_size(opts.max_file_size)})",
        )
        return
    if not head.strip(b" \t\r\n\x00\xef\xbb\xbf"):
        report.skip(str(path), "empty or whitespace-only")
        return
    if path.suffix.lower() in FORMATS:
        doc = _read_format(path, report)
        if doc is not None:
            report.files += 1
            doc.id = doc_id_for(path, root)
            yield doc
        return
    if looks_binary(head):
        report.skip(str(path), "binary file, not text")
        return
    report.files += 1
    suffix = path.suffix.lower()
    try:
        if suffix in (".txt", ".md"):
            yield from _read_text_file(path, root, opts)
        elif suffix == ".jsonl":
            yield from read_jsonl(path, doc_id_for(path, root), opts, report.skip)
        elif suffix == ".json":
            yield from read_json(path, doc_id_for(path, root), opts, report.skip)
        elif suffix == ".csv":
            yield from read_csv(path, doc_id_for(path, root), opts, report.skip)
    except InputError as exc:
        report.skip(str(path), str(exc))
    except OSError as exc:
        report.skip(str(path), f"unreadable file ({exc.strerror or exc})")


def _read_format(path: Path, report: ReadReport) -> Document | None:
    """A PDF, HTML, DOCX, ODT or EPUB file's document, or None with the skip's reason."""
    try:
        return read_format(path)
    except InputError as exc:
        report.skip(str(path), str(exc))
    except OSError as exc:
        report.skip(str(path), f"unreadable file ({exc.strerror or exc})")
    except Exception as exc:  # a parser's own error on a malformed file: skip it, go on
        log.debug("reading %s failed", path, exc_info=True)
        report.skip(str(path), f"damaged ({type(exc).__name__}: {exc})")
    return None


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3}
_UNITS.update({"gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3})


def parse_size(text: str) -> int:
    """Bytes from ``500k``, ``20MB``, ``1.5GiB`` or a plain number of bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise InputError(f"'{text}' is not a size (e.g. 500k, 20MB, 1GB).")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_size(n: int) -> str:
    for unit, factor in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} B"


def read_documents(
    paths: list[Path], opts: ReaderOptions, report: ReadReport
) -> Iterator[tuple[Document, Path]]:
    """Every document under ``paths`` with the root folder it was found under."""
    for path, root in iter_files(paths, report):
        for doc in read_file(path, root, opts, report):
            yield doc, root

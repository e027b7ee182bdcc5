"""Ingest progress: chunks embedded, an estimated total and an ETA from the input's size.

The total is estimated from the characters still to read (the input files' sizes), scaled by the
chunks per character seen so far, so it is right once a few batches are done and the ETA is the
time per character so far times the characters left. Shown as a bar (a terminal), as a line
every ``every`` seconds (``log``: for a log file or a service without a terminal), as one JSON
object per line (``json``: for a program) or not at all (``none``); always on stderr.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

MODES = ("auto", "bar", "log", "json", "none")


def resolve_mode(progress: bool | str, stream: TextIO | None = None) -> str:
    """``True`` / ``auto``: a bar on a terminal, else log lines; ``False``: none."""
    if progress is True or progress == "auto":
        stream = stream or sys.stderr
        return "bar" if stream.isatty() else "log"
    if progress is False or progress is None:
        return "none"
    if progress not in MODES:
        from .errors import InputError

        raise InputError(f"progress must be one of {', '.join(MODES)}, not '{progress}'.")
    return str(progress)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Counts chunks and characters done against the characters expected (``total_chars``)."""

    def __init__(
        self,
        mode: bool | str,
        total_chars: int | None = None,
        every: float = 5.0,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.mode = resolve_mode(mode, self.stream)
        self.total_chars = total_chars or None
        self.every = every
        self.chunks = 0
        self.chars = 0
        self.started = time.monotonic()
        self._last = self.started
        self._lines = 0
        self._bar: Any = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(
                desc="embedding", unit="chunk", total=None, leave=False, file=self.stream
            )

    def skip(self, chars: int) -> None:
        """``chars`` of input need no encoding (unchanged, or staged by a killed run): they leave
        the estimate instead of making the rate look faster than it is."""
        if self.total_chars is not None:
            self.total_chars = max(self.chars, self.total_chars - chars)

    def estimate(self) -> tuple[int | None, float | None]:
        """(estimated total chunks, seconds left), None while unknown."""
        if not self.total_chars or not self.chars or not self.chunks:
            return None, None
        left = max(0, self.total_chars - self.chars)
        total = self.chunks + round(self.chunks * left / self.chars)
        return total, (time.monotonic() - self.started) * left / self.chars

    def update(self, chunks: int, chars: int) -> None:
        """``chunks`` more embedded and stored, covering ``chars`` more characters of input."""
        self.chunks += chunks
        self.chars += chars
        if self.mode == "none":
            return
        if self._bar is not None:
            total, _ = self.estimate()
            if total is not None:
                self._bar.total = max(total, self.chunks)
            self._bar.update(chunks)
            return
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._emit(done=False)

    def _emit(self, done: bool) -> None:
        total, eta = self.estimate()
        elapsed = time.monotonic() - self.started
        rate = self.chunks / elapsed if elapsed > 0 else 0.0
        if done:
            total, eta = self.chunks, 0.0
        if self.mode == "json":
            record = {
                "progress": "done" if done else "embedding",
                "chunks": self.chunks,
                "total_estimate": total,
                "chunks_per_s": round(rate, 2),
                "elapsed_s": round(elapsed, 1),
                "eta_s": None if eta is None else round(eta, 1),
            }
            line = json.dumps(record)
        else:
            of = f"/~{total}" if total is not None and not done else ""
            pct = f" ({100 * self.chunks / total:.0f}%)" if total and not done else ""
            left = f", ETA {_duration(eta)}" if eta is not None and not done else ""
            state = "done" if done else "embedding"
            line = (
                f"{state}: {self.chunks}{of} chunks{pct}, {rate:.1f} chunks/s, "
                f"{_duration(elapsed)} elapsed{left}"
            )
        print(line, file=self.stream, flush=True)
        self._lines += 1

    def close(self) -> None:
        """Close the bar; a last line where lines were written (json: always one)."""
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "json" or (self.mode == "log" and self._lines):
            self._emit(done=True)

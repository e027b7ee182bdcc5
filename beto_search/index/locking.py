"""One writer per index: an flock'ed lock file that names its holder's pid.

The kernel releases an flock when its process dies, so a lock left by a killed writer is taken
over at once; the pid in the file is only for the message naming the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from ..errors import LockTimeoutError


class WriteLock:
    """Exclusive write lock on an index folder; waits up to ``wait`` seconds."""

    def __init__(self, folder: Path, wait: float = 0.0) -> None:
        self.path = folder / "write.lock"
        self.wait = wait
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(self.wait, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self.holder()
                    os.close(fd)
                    who = f"process {holder}" if holder else "another process"
                    raise LockTimeoutError(
                        f"the index is being written by {who} (lock {self.path}); wait for it to "
                        f"finish or pass --wait SECONDS."
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def holder(self) -> int | None:
        try:
            text = self.path.read_text().strip()
            return int(text) if text else None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriteLock:
        self.acquire()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

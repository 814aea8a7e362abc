"""The exclusive lock that lets one daemon own a ``var_dir``.

Two daemons on one state directory would each requeue the other's in-flight frames and
process them twice, so ``insarwatch watch`` holds ``fcntl.flock`` on
``<var>/insarwatch.lock`` for its whole life and writes its pid into the file. The kernel
drops the lock when the process dies, however it dies, so a stale file never blocks a
restart; the pid is only there to tell the second daemon who it is waiting for.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import InsarwatchError

LOCK_FILE = "insarwatch.lock"


class VarDirLock:
    """Held from ``acquire()`` until ``release()`` (or the process ends)."""

    def __init__(self, var_dir: Path) -> None:
        self.path = Path(var_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise naming the pid that holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InsarwatchError(f"{self.path}: cannot open the lock file: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise InsarwatchError(
                f"{self.path}: another insarwatch daemon (pid {holder}) already uses this var_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> VarDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

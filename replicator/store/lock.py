"""The one lock helper: an exclusive, non-blocking flock on a file, naming its holder.

Used for the repository writer lock (``REPO/lock``: every local sync, every
write session of ``replicator serve``, forget and prune) and for the
daemon's per-job locks.  flock is released by the kernel when the process
dies, so a kill -9 never leaves a stale lock behind.

Must never: block (a second writer is told at once who holds the lock), or
wait for a lock held by this same process through another descriptor
(flock locks per open file description, so that also fails at once).
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket

from replicator.errors import ReplicatorError, StorageError

HOLDER_MAX = 200  # bytes of the holder line read back for the message


class Locked(ReplicatorError):
    """{} is locked by {}"""

    retryable = True

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(path, holder)
        self.path = path
        self.holder = holder


class FileLock:
    """``with FileLock(path, "serve"):`` holds an exclusive flock on ``path`` or raises Locked at once."""

    def __init__(self, path: str, role: str = "") -> None:
        self.path = path
        self.role = role
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FileLock:
        """:raises Locked: another process (or descriptor) holds it.  :raises StorageError: cannot open the file."""
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(f"{self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, HOLDER_MAX, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise Locked(self.path, holder) from None
            raise StorageError(f"{self.path}: {exc.strerror}") from None
        os.ftruncate(fd, 0)
        role = f" ({self.role})" if self.role else ""
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}{role}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

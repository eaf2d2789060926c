"""Storage in a local directory (the embedded default).

An object is published with store/atomic.py: a temporary file in its
final directory, fsynced, hard-linked to its final name (the link fails if
the name exists: objects are never overwritten by accident), the directory
fsynced.  A crash leaves at most a temporary file, which ``list`` never
shows and which ``clean_temporaries`` removes; never a torn object under a
final name.

Ranged reads (a blob inside a pack) go through a small cache of open
descriptors, so reading many chunks of one pack opens it once.  Objects are
immutable, so a cached descriptor never shows stale bytes; a deleted pack's
descriptor is dropped at the next miss or at ``close``.
"""
from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator

from replicator.errors import DiskFull, ObjectNotFound, StorageError
from replicator.store import atomic
from replicator.store.lock import LOCKS
from replicator.store.storage import check_name

TMP_PREFIX = atomic.TMP_PREFIX
OPEN_HANDLES = 16  # packs kept open for ranged reads


def _storage_error(name: str, exc: OSError) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(name)
    return StorageError(f"{name}: {exc.strerror or exc}")


class LocalStorage:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.location = self.root
        self._handles: OrderedDict[str, int] = OrderedDict()
        self._handles_lock = threading.Lock()

    def _path(self, name: str) -> str:
        return os.path.join(self.root, *check_name(name).split("/"))

    def put(self, name: str, data: bytes | bytearray | memoryview, *, overwrite: bool = False) -> None:
        path = self._path(name)
        try:
            if overwrite:
                atomic.replace(path, data)
            else:
                atomic.write_new(path, data)
        except FileExistsError:
            raise
        except OSError as exc:
            raise _storage_error(name, exc) from None

    def _handle(self, name: str) -> int:
        with self._handles_lock:
            fd = self._handles.get(name)
            if fd is not None:
                self._handles.move_to_end(name)
                return fd
        fd = os.open(self._path(name), os.O_RDONLY | os.O_CLOEXEC)
        with self._handles_lock:
            if name in self._handles:  # another thread opened it meanwhile
                os.close(fd)
                return self._handles[name]
            self._handles[name] = fd
            while len(self._handles) > OPEN_HANDLES:
                _old, old_fd = self._handles.popitem(last=False)
                os.close(old_fd)
        return fd

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            if length is None:
                with open(self._path(name), "rb") as f:
                    if offset:
                        f.seek(offset)
                    return f.read()
            fd = self._handle(name)
            parts = []
            while length > 0:
                piece = os.pread(fd, length, offset)
                if not piece:
                    break
                parts.append(piece)
                offset += len(piece)
                length -= len(piece)
            return b"".join(parts) if len(parts) != 1 else parts[0]
        except FileNotFoundError:
            raise ObjectNotFound(name) from None
        except OSError as exc:
            raise _storage_error(name, exc) from None

    def size(self, name: str) -> int:
        try:
            return os.stat(self._path(name)).st_size
        except FileNotFoundError:
            raise ObjectNotFound(name) from None
        except OSError as exc:
            raise _storage_error(name, exc) from None

    def exists(self, name: str) -> bool:
        return os.path.exists(self._path(name))

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for fn in sorted(filenames):
                if fn.startswith(TMP_PREFIX):
                    continue
                yield fn if rel == "." else f"{rel}/{fn}"

    def delete(self, name: str) -> None:
        with self._handles_lock:
            fd = self._handles.pop(name, None)
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _storage_error(name, exc) from None

    def clean_temporaries(self) -> int:
        """Remove temporary files left by a crash, except in ``locks/``: a process taking a lock writes
        its lock object there before it holds anything, so the writer that cleans cannot know that a
        temporary there is a crash's (removing a live one failed that process's lock with "No such file
        or directory"; a crash's lock temporary is a few bytes that listings never show).
        :returns: how many."""
        return atomic.remove_temporaries(self.root, skip=(LOCKS,))

    def close(self) -> None:
        """Close the cached descriptors (the storage stays usable: they reopen on demand)."""
        with self._handles_lock:
            handles, self._handles = self._handles, OrderedDict()
        for fd in handles.values():
            os.close(fd)

"""Storage in a local directory (the embedded default).

An object is written to a temporary file in its final directory, fsynced,
then hard-linked to its final name (link fails if the name exists: objects
are never overwritten by accident), the temporary name removed and the
directory fsynced.  A crash leaves at most a temporary file, which list()
never shows and which ``clean_temporaries`` removes; never a torn object
under a final name.
"""
from __future__ import annotations

import errno
import os
from typing import Iterator

from replicator.errors import DiskFull, ObjectNotFound, StorageError
from replicator.repo.storage import check_name

TMP_PREFIX = ".tmp-"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_error(name: str, exc: OSError) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(name)
    return StorageError(f"{name}: {exc.strerror or exc}")


class LocalStorage:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.location = self.root

    def _path(self, name: str) -> str:
        return os.path.join(self.root, *check_name(name).split("/"))

    def put(self, name: str, data: bytes, *, overwrite: bool = False) -> None:
        path = self._path(name)
        directory = os.path.dirname(path)
        tmp = os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}")
        try:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            if overwrite:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)
                finally:
                    os.unlink(tmp)
            _fsync_dir(directory)
        except FileExistsError:
            raise
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise _storage_error(name, exc) from None

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with open(self._path(name), "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read() if length is None else f.read(length)
        except FileNotFoundError:
            raise ObjectNotFound(name) from None
        except OSError as exc:
            raise _storage_error(name, exc) from None

    def size(self, name: str) -> int:
        try:
            return os.stat(self._path(name)).st_size
        except FileNotFoundError:
            raise ObjectNotFound(name) from None

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
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _storage_error(name, exc) from None

    def clean_temporaries(self) -> int:
        """Remove temporary files left by a crash. :returns: how many."""
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for fn in files:
                if fn.startswith(TMP_PREFIX):
                    try:
                        os.unlink(os.path.join(dirpath, fn))
                        removed += 1
                    except OSError:
                        pass
        return removed

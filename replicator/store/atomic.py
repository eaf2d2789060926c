"""The one atomic-write helper: temporary file in the target's directory, fsync, publish, directory fsync.

Two ways to publish, one mechanism:

* ``write_new``: hard-link the temporary file to its name, which fails if the
  name exists, so an immutable object is never replaced by accident (packs,
  snapshots, id lists);
* ``replace``: rename over the name (status file, mirror state, caches,
  the repository config during an upgrade).

A crash leaves either the old content or the new, never a prefix; at worst a
temporary file whose name starts with ``TMP_PREFIX``, which listings skip
and ``remove_temporaries`` deletes.

Must never: leave a temporary file behind on an error it saw, or return
before the data and the directory entry are durable.
"""
from __future__ import annotations

import os

TMP_PREFIX = ".tmp-"


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(directory: str, data: bytes | bytearray | memoryview, mode: int) -> str:
    tmp = os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)  # the umask must not widen or narrow what the caller asked for
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quiet(tmp)
        raise
    os.close(fd)
    return tmp


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _publish(path: str, data: bytes | bytearray | memoryview, mode: int, link: bool) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = _write_temp(directory, data, mode)
    try:
        if link:
            os.link(tmp, path)  # FileExistsError if the name exists: never replace an object
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        _unlink_quiet(tmp)
        raise
    fsync_dir(directory)


def write_new(path: str, data: bytes | bytearray | memoryview, mode: int = 0o600) -> None:
    """Publish ``data`` at ``path``, which must not exist.  :raises FileExistsError: :raises OSError:"""
    _publish(path, data, mode, link=True)


def replace(path: str, data: bytes | bytearray | memoryview, mode: int = 0o600) -> None:
    """Publish ``data`` at ``path``, replacing what was there.  :raises OSError:"""
    _publish(path, data, mode, link=False)


def remove_temporaries(root: str, skip: tuple[str, ...] = ()) -> int:
    """Delete temporary files a crash left anywhere under ``root``, except in its top-level directories
    ``skip`` (where a process may be writing one now).  :returns: how many."""
    removed = 0
    for dirpath, dirs, files in os.walk(root):
        if dirpath == root:
            dirs[:] = [d for d in dirs if d not in skip]
        for fn in files:
            if fn.startswith(TMP_PREFIX):
                try:
                    os.unlink(os.path.join(dirpath, fn))
                    removed += 1
                except OSError:
                    pass
    return removed

"""Trees deeper than PATH_MAX allows to name: build, compare and remove them with directory descriptors.

Nothing here uses a full path below the root or recursion, so it works at
any depth (``os.walk``, ``shutil.rmtree`` and tests/treecompare.py do not:
their paths grow past PATH_MAX = 4096 bytes, and rmtree recurses).
"""
from __future__ import annotations

import hashlib
import os
import stat

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def proc_path(dir_fd: int, name: str) -> str:
    """A short path to ``name`` in the directory ``dir_fd``, for calls without a dir_fd (xattrs)."""
    return f"/proc/self/fd/{dir_fd}/{name}"


def _key(parent: bytes, name: str) -> bytes:
    return hashlib.blake2b(parent + b"/" + os.fsencode(name), digest_size=16).digest()


def manifest(root) -> dict[bytes, tuple]:
    """Every entry under ``root``: a key naming its path -> (depth, name, what a restore must reproduce).

    What is recorded: kind, permission bits, owner, mtime (directories' too), and for files size,
    SHA-256, link count and user.* xattrs, for symlinks the target.  Breadth first, so only the
    directories of one level (plus one) are open at a time.
    """
    out: dict[bytes, tuple] = {}
    queue = [(b"", 0, os.open(os.fspath(root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))]
    while queue:
        key, depth, fd = queue.pop(0)
        try:
            with os.scandir(fd) as it:
                names = sorted((e.name for e in it), key=os.fsencode)
            for name in names:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                k = _key(key, name)
                meta = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
                if stat.S_ISDIR(st.st_mode):
                    out[k] = (depth, name, "dir", *meta, st.st_mtime_ns)
                    queue.append((k, depth + 1, os.open(name, DIR_FLAGS, dir_fd=fd)))
                elif stat.S_ISLNK(st.st_mode):
                    out[k] = (depth, name, "symlink", os.readlink(name, dir_fd=fd), st.st_mtime_ns)
                else:
                    ffd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                    with os.fdopen(ffd, "rb") as f:
                        digest = hashlib.sha256(f.read()).hexdigest()
                    xattrs = sorted((x, os.getxattr(proc_path(fd, name), x, follow_symlinks=False))
                                    for x in os.listxattr(proc_path(fd, name), follow_symlinks=False)
                                    if x.startswith("user."))
                    out[k] = (depth, name, "file", *meta, st.st_mtime_ns, st.st_size, digest, st.st_nlink, xattrs)
        finally:
            os.close(fd)
    return out


def differences(a: dict, b: dict, limit: int = 10) -> list[str]:
    """The first ``limit`` entries that differ, as (depth, name) and both values."""
    out = []
    for k in a.keys() | b.keys():
        if a.get(k) != b.get(k):
            x, y = a.get(k), b.get(k)
            where = (x or y)[:2]  # type: ignore[index]
            out.append(f"depth {where[0]} {where[1]!r}: {x} != {y}")
            if len(out) >= limit:
                break
    return out


def open_at_depth(root, names: list[str]) -> int:
    """A descriptor of the directory ``root/names[0]/names[1]/...``, opened one component at a time."""
    fd = os.open(os.fspath(root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for name in names:
        nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
        os.close(fd)
        fd = nfd
    return fd


def write_at(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def remove_tree(path) -> None:
    """Remove a tree of any depth (the mirror's own non-recursive removal, replicator.restore.mirror.remove_tree)."""
    from replicator.restore.mirror import remove_tree as remove_below

    path = os.path.abspath(os.fspath(path))
    if not os.path.lexists(path):
        return
    parent = os.open(os.path.dirname(path), DIR_FLAGS)
    try:
        remove_below(parent, os.path.basename(path))
    finally:
        os.close(parent)

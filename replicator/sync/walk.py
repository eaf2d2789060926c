"""Walk a source tree and capture the metadata a snapshot records.

This module owns the scan of the source directory: the traversal order, which
file types are recorded, symlink and hard-link handling, extended attributes
and the ``stat_key`` the engine uses to detect a file changing while it is
read.  It never reads file contents, never follows a symlink, never prints or
logs, and never raises for a single bad path: problems go to the caller's
``on_error(relpath, reason)`` and the walk goes on.

Order (what must not change without a format note): pre-order, a directory
before its contents, the children of each directory sorted by the bytes of
their names (``os.fsencode``).  The same tree always yields the same sequence,
so snapshots of an unchanged tree are identical and hard links always point to
the first occurrence in this order.
"""
from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from replicator.format.entry import KIND_DIR, KIND_FILE, KIND_SYMLINK, Entry

#: errno values meaning "this file system has no extended attributes": ignored silently.
_XATTR_UNSUPPORTED = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP})

ROOT_PATH = "."  # the relpath reported to on_error when the source root itself fails


@dataclass
class WalkItem:
    """One node found by :func:`walk`.

    ``entry`` has no chunks yet (the engine fills them in); for files ``size``
    is the size reported by lstat at scan time.  ``dev``/``ino`` identify the
    inode for the state cache and for hard-link detection.
    """

    entry: Entry
    dev: int
    ino: int
    key: tuple[int, int, int, int] = (0, 0, 0, 0)  # stat_key() of the lstat taken by the walk


def stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    """The part of a stat result that changes when a file is modified or replaced.

    The engine compares the key taken before and after reading a file; a
    difference means the file changed while it was read (a torn read).

    :param st: an ``os.stat_result`` (from ``os.lstat`` or ``os.fstat``).
    :returns: ``(st_size, st_mtime_ns, st_ino, st_ctime_ns)``.
    """
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def _kind_name(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISCHR(mode):
        return "character device"
    return "unknown file type"


def _reason(what: str, exc: OSError) -> str:
    """A one-line reason without the full path (the caller names the path)."""
    if isinstance(exc, FileNotFoundError):
        return f"{what}: vanished during the walk"
    return f"{what}: {exc.strerror or exc}"


def _excluded(relpath: str, name: str, excludes: Sequence[str]) -> bool:
    # fnmatchcase: file names are case-sensitive on the systems we run on, and
    # the result must not depend on the platform's normcase.
    return any(fnmatch.fnmatchcase(relpath, pat) or fnmatch.fnmatchcase(name, pat) for pat in excludes)


def _read_xattrs(path: str, relpath: str, on_error: Callable[[str, str], None]) -> tuple[tuple[str, bytes], ...]:
    """Extended attributes of ``path`` (not following symlinks), sorted by name.

    Unsupported file systems give ``()`` silently; an attribute removed between
    list and get is skipped; other failures are reported and the attributes read
    so far are kept (the entry is still recorded).
    """
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _XATTR_UNSUPPORTED:
            return ()
        if isinstance(exc, FileNotFoundError):
            raise
        on_error(relpath, _reason("cannot list xattrs", exc))
        return ()
    out = []
    for name in sorted(names):
        try:
            out.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError as exc:
            if exc.errno in (errno.ENODATA, *_XATTR_UNSUPPORTED):
                continue  # removed since listxattr, or not readable here: nothing to record
            if isinstance(exc, FileNotFoundError):
                raise
            on_error(relpath, _reason(f"cannot read xattr {name!r}", exc))
    return tuple(out)


def _list_dir(path: str) -> list[os.DirEntry[str]]:
    """The children of ``path`` in walk order (sorted by name bytes)."""
    with os.scandir(path) as it:
        children = list(it)
    children.sort(key=lambda d: os.fsencode(d.name))
    return children


def walk(
    src: str,
    *,
    excludes: Sequence[str] = (),
    on_error: Callable[[str, str], None],
) -> Iterator[WalkItem]:
    """Yield every file, directory and symlink under ``src`` in pre-order.

    A directory is listed before it is yielded, so a directory that cannot be
    listed is reported and neither yielded nor descended.  Symlinks are recorded
    (kind ``symlink``, target from ``os.readlink``) and never followed.  Other
    file systems are descended.  Sockets, FIFOs and devices are reported as
    skipped.  A regular file sharing ``(dev, ino)`` with an earlier yielded file
    (``st_nlink > 1``) gets ``link_to`` = the earlier path.

    :param src: the source root; it is followed if it is itself a symlink (the
        operator named it), and never yielded.
    :param excludes: fnmatch patterns, matched against the relative path and the
        basename; an excluded directory is not descended.
    :param on_error: called with ``(relpath, one-line reason)`` for every path
        skipped or partly recorded; ``relpath`` is ``"."`` for the root.
    :returns: an iterator of :class:`WalkItem`; relative paths are '/'-separated
        and ``os.fsdecode``-d (surrogateescape round-trips any name).
    """
    try:
        root_children = _list_dir(src)
    except OSError as exc:
        on_error(ROOT_PATH, f"cannot list source directory: {exc.strerror or exc}")
        return

    first_link: dict[tuple[int, int], str] = {}
    # Each frame: (relative dir path, its children in order, next index).
    # An explicit stack keeps deep trees away from the recursion limit.
    stack: list[tuple[str, list[os.DirEntry[str]], list[int]]] = [("", root_children, [0])]
    while stack:
        dir_rel, children, pos = stack[-1]
        if pos[0] >= len(children):
            stack.pop()
            continue
        child = children[pos[0]]
        pos[0] += 1
        relpath = f"{dir_rel}/{child.name}" if dir_rel else child.name
        if excludes and _excluded(relpath, child.name, excludes):
            continue
        item, sub = _scan_one(child.path, relpath, first_link, on_error)
        if item is None:
            continue
        yield item
        if sub is not None:
            stack.append((relpath, sub, [0]))


def _scan_one(
    path: str,
    relpath: str,
    first_link: dict[tuple[int, int], str],
    on_error: Callable[[str, str], None],
) -> tuple[WalkItem | None, list[os.DirEntry[str]] | None]:
    """Stat one path and build its item; for directories also list the children."""
    try:
        st = os.lstat(path)
        mode = st.st_mode
        sub = None
        if stat.S_ISDIR(mode):
            try:
                sub = _list_dir(path)
            except OSError as exc:
                on_error(relpath, _reason("cannot list directory", exc))
                return None, None
            entry = _entry(relpath, KIND_DIR, st, xattrs=_read_xattrs(path, relpath, on_error))
        elif stat.S_ISREG(mode):
            xattrs = _read_xattrs(path, relpath, on_error)
            key = (st.st_dev, st.st_ino)
            link_to = first_link.get(key, "") if st.st_nlink > 1 else ""
            entry = _entry(relpath, KIND_FILE, st, size=st.st_size, link_to=link_to, xattrs=xattrs)
            if st.st_nlink > 1 and not link_to:
                # Registered only once the entry is certain to be yielded, so
                # link_to always names a path present in the same walk.
                first_link[key] = relpath
        elif stat.S_ISLNK(mode):
            # xattrs of symlinks are not recorded: Linux refuses user.* on them
            # and restore could not set the others without following the link.
            entry = _entry(relpath, KIND_SYMLINK, st, target=os.readlink(path))
        else:
            on_error(relpath, f"skipped: {_kind_name(mode)} is not a regular file, directory or symlink")
            return None, None
    except OSError as exc:
        on_error(relpath, _reason("cannot read", exc))
        return None, None
    return WalkItem(entry=entry, dev=st.st_dev, ino=st.st_ino, key=stat_key(st)), sub


def _entry(
    relpath: str,
    kind: str,
    st: os.stat_result,
    *,
    size: int = 0,
    target: str = "",
    xattrs: tuple[tuple[str, bytes], ...] = (),
    link_to: str = "",
) -> Entry:
    return Entry(
        path=relpath,
        kind=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        size=size,
        target=target,
        xattrs=xattrs,
        link_to=link_to,
    )

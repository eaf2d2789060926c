"""Walk a source tree and capture the metadata a snapshot records.

This module owns the scan of the source directory: the traversal order, which
file types are recorded, symlink and hard-link handling, extended attributes
and the ``stat_key`` the engine uses to detect a file changing while it is
read.  It never reads file contents, never follows a symlink, never prints or
logs, and never raises for a single bad path: problems go to the caller's
``on_error(relpath, reason)`` and the walk goes on.  What is left out on
purpose is decided by the rules of sync/select.py and told to
``on_excluded(relpath, why, what)``.

Order (what must not change without a format note): pre-order, a directory
before its contents, the children of each directory sorted by the bytes of
their names (``os.fsencode``).  The same tree always yields the same sequence,
so snapshots of an unchanged tree are identical and hard links always point to
the first occurrence in this order.
"""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from replicator.format.entry import KIND_DIR, KIND_FILE, KIND_SYMLINK, Entry
from replicator.sync.select import REASON_MOUNT, REASON_PATTERN, REASON_TAGGED, Selection

OnExcluded = Callable[[str, str, str], None]  # (relpath, why: a select.REASON_*, what: the pattern or tag)

#: errno values meaning "this file system has no extended attributes": ignored silently.
_XATTR_UNSUPPORTED = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP})

ROOT_PATH = "."  # the relpath reported to on_error when the source root itself fails

#: Directory descriptors the walk keeps open at most, whatever the depth.
MAX_OPEN_DIRS = 64
#: Linux's PATH_MAX (with the NUL): a longer path cannot be named in one call, only relative to a descriptor.
PATH_MAX = 4096
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC  # how WalkItem.open opens a file for reading
_HAVE_PROC_FD = os.path.isdir("/proc/self/fd")  # else xattrs of files past PATH_MAX are reported unreadable


class _Dir:
    """A directory on the walk's current path: its listing, identity and (while near the bottom) descriptor."""

    __slots__ = ("rel", "name", "fd", "dev", "ino", "children", "pos")

    def __init__(self, rel: str, name: str, fd: int, st: os.stat_result, children: list[str]) -> None:
        self.rel = rel  # '/'-separated path from the root; "" for the root
        self.name = name  # the name in its parent (the root: the source path)
        self.fd = fd  # -1 while closed to bound the descriptors, and once the walk has left it
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.children = children
        self.pos = 0

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def same(self, fd: int) -> bool:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (self.dev, self.ino)


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
    nlink: int = 1  # st_nlink: a file above 1 may be named by a later item's link_to
    root: str = field(default="", repr=False, compare=False)  # the source root the walk was given
    _parent: _Dir | None = field(default=None, repr=False, compare=False)  # the walk's frame of its directory

    def open(self) -> int:
        """Open this file for reading (``FILE_FLAGS``: never through a symlink at its name).

        By its full path when that fits in PATH_MAX (exactly the path the entry
        names); else relative to its directory's descriptor while the walk is
        in that directory, or opened again component by component from the root.

        :returns: a new descriptor, owned by the caller.  :raises OSError:
        """
        full = os.path.join(self.root, self.entry.path)
        if self._parent is None or len(os.fsencode(full)) < PATH_MAX:
            return os.open(full, FILE_FLAGS)
        if self._parent.fd >= 0:
            return os.open(self.entry.name, FILE_FLAGS, dir_fd=self._parent.fd)
        fd = _open_dirs(self.root, self.entry.parent.split("/") if self.entry.parent else [])
        try:
            return os.open(self.entry.name, FILE_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)


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


def _read_xattrs(target: str | int, relpath: str,
                 on_error: Callable[[str, str], None]) -> tuple[tuple[str, bytes], ...]:
    """Extended attributes of ``target`` (a descriptor, or a path not followed at its end), sorted by name.

    Unsupported file systems give ``()`` silently; an attribute removed between
    list and get is skipped; other failures are reported and the attributes read
    so far are kept (the entry is still recorded).
    """
    nofollow = {} if isinstance(target, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(target, **nofollow)
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
            out.append((name, os.getxattr(target, name, **nofollow)))
        except OSError as exc:
            if exc.errno in (errno.ENODATA, *_XATTR_UNSUPPORTED):
                continue  # removed since listxattr, or not readable here: nothing to record
            if isinstance(exc, FileNotFoundError):
                raise
            on_error(relpath, _reason(f"cannot read xattr {name!r}", exc))
    return tuple(out)


def _list_dir(fd: int) -> list[str]:
    """The names in the directory ``fd`` in walk order (sorted by name bytes)."""
    with os.scandir(fd) as it:
        names = [d.name for d in it]
    names.sort(key=os.fsencode)
    return names


def _open_dirs(root: str, names: list[str]) -> int:
    """A descriptor of ``root/names...``, opened one component at a time, never through a symlink."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in names:
            nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _path_of(parent: _Dir, name: str, root: str, relpath: str) -> str:
    """A path naming ``name`` in ``parent`` for the calls that take no descriptor (xattrs of files)."""
    full = os.path.join(root, relpath)
    if len(os.fsencode(full)) < PATH_MAX or not _HAVE_PROC_FD:
        return full
    return f"/proc/self/fd/{parent.fd}/{name}"  # the descriptor's own directory, however deep


def walk(
    src: str,
    *,
    excludes: Sequence[str] = (),
    selection: Selection | None = None,
    on_error: Callable[[str, str], None],
    on_excluded: OnExcluded | None = None,
) -> Iterator[WalkItem]:
    """Yield every file, directory and symlink under ``src`` in pre-order.

    A directory is listed before it is yielded, so a directory that cannot be
    listed is reported and neither yielded nor descended.  Symlinks are recorded
    (kind ``symlink``, target from ``os.readlink``) and never followed.  Other
    file systems are descended unless ``selection.one_file_system``.  Sockets, FIFOs and devices are reported as
    skipped.  A regular file sharing ``(dev, ino)`` with an earlier yielded file
    (``st_nlink > 1``) gets ``link_to`` = the earlier path.  A file item can be
    opened with :meth:`WalkItem.open`, whatever its path length.

    :param src: the source root; it is followed if it is itself a symlink (the
        operator named it), and never yielded.
    :param excludes: fnmatch patterns, matched against the relative path and the
        basename; an excluded directory is not descended (``Selection(excludes=...)``).
    :param selection: the rules of what is left out (sync/select.py); replaces ``excludes``.
    :param on_excluded: called with ``(relpath, why, what)`` for every path left out by
        ``selection`` (a directory once, its contents unseen) and every mount point recorded empty.
    :param on_error: called with ``(relpath, one-line reason)`` for every path
        skipped or partly recorded; ``relpath`` is ``"."`` for the root.
    :returns: an iterator of :class:`WalkItem`; relative paths are '/'-separated
        and ``os.fsdecode``-d (surrogateescape round-trips any name).
    """
    try:
        root_fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        on_error(ROOT_PATH, f"cannot list source directory: {exc.strerror or exc}")
        return
    try:
        root = _Dir("", src, root_fd, os.fstat(root_fd), _list_dir(root_fd))
    except OSError as exc:
        os.close(root_fd)
        on_error(ROOT_PATH, f"cannot list source directory: {exc.strerror or exc}")
        return

    sel = selection if selection is not None else Selection(excludes=tuple(excludes))
    told: OnExcluded = on_excluded or (lambda _path, _why, _what: None)
    first_link: dict[tuple[int, int], str] = {}
    # The directories from the root to the current one.  stack[lowest_open:] hold
    # descriptors; the ones above were closed to keep at most MAX_OPEN_DIRS open.
    stack: list[_Dir] = [root]
    lowest_open = 0
    try:
        while stack:
            top = stack[-1]
            if top.pos >= len(top.children):
                stack.pop()
                if stack and stack[-1].fd < 0:
                    _reopen(stack, top, on_error)
                    lowest_open = len(stack) - 1
                top.close()
                continue
            name = top.children[top.pos]
            top.pos += 1
            relpath = f"{top.rel}/{name}" if top.rel else name
            pattern = sel.excluded(relpath, name)
            if pattern is not None:
                told(relpath, REASON_PATTERN, pattern)
                continue
            item, sub = _scan_one(top, name, relpath, src, first_link, on_error, sel, root.dev, told)
            if item is None:
                continue
            if sub is not None:
                stack.append(sub)  # before the yield: closed by the finally below if the caller stops
                if len(stack) - lowest_open > MAX_OPEN_DIRS:
                    stack[lowest_open].close()
                    lowest_open += 1
            yield item
    finally:
        for d in stack:
            d.close()


def _reopen(stack: list[_Dir], child: _Dir, on_error: Callable[[str, str], None]) -> None:
    """Give ``stack[-1]`` (the parent of ``child``, just left) a descriptor again, or skip the rest of it.

    Through ``..`` of the child when that is the same directory as before; else
    by name from the root, every component checked the same way (it was moved
    meanwhile).  A directory not found again is reported and its remaining
    entries are left out.
    """
    parent = stack[-1]
    if child.fd >= 0:
        try:
            fd = os.open("..", _DIR_FLAGS, dir_fd=child.fd)
            if parent.same(fd):
                parent.fd = fd
                return
            os.close(fd)
        except OSError:
            pass
    fd = -1
    try:
        fd = os.open(stack[0].name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if not stack[0].same(fd):
            raise FileNotFoundError(errno.ENOENT, "replaced")
        for d in stack[1:]:
            nfd = os.open(d.name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
            if not d.same(fd):
                raise FileNotFoundError(errno.ENOENT, "replaced")
    except OSError:
        if fd >= 0:
            os.close(fd)
        on_error(parent.rel or ROOT_PATH, "moved or replaced during the walk: the rest of it is left out")
        parent.children = []
        return
    parent.fd = fd


def _scan_one(
    parent: _Dir,
    name: str,
    relpath: str,
    root: str,
    first_link: dict[tuple[int, int], str],
    on_error: Callable[[str, str], None],
    sel: Selection,
    root_dev: int,
    told: OnExcluded,
) -> tuple[WalkItem | None, _Dir | None]:
    """Stat one name in ``parent`` and build its item; for directories also open and list it
    (not a mount point under ``--one-file-system``; a tagged one is closed again and left out)."""
    dir_fd = parent.fd
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        mode = st.st_mode
        sub = None
        if stat.S_ISDIR(mode) and sel.other_filesystem(root_dev, st):
            # The mounted root's lstat, as rsync -x records it; never opened (a hung NFS mount stays out).
            told(relpath, REASON_MOUNT, "")
            entry = _entry(relpath, KIND_DIR, st)
        elif stat.S_ISDIR(mode):
            sub = _open_sub(dir_fd, name, relpath, st, on_error)
            if sub is None:
                return None, None
            tag = sel.tag_in(sub.fd, sub.children) if sel.exclude_if_present else None
            if tag is not None:
                sub.close()
                told(relpath, REASON_TAGGED, tag)
                return None, None
            try:
                entry = _entry(relpath, KIND_DIR, st, xattrs=_read_xattrs(sub.fd, relpath, on_error))
            except BaseException:
                sub.close()
                raise
        elif stat.S_ISREG(mode):
            xattrs = _read_xattrs(_path_of(parent, name, root, relpath), relpath, on_error)
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
            entry = _entry(relpath, KIND_SYMLINK, st, target=os.readlink(name, dir_fd=dir_fd))
        else:
            on_error(relpath, f"skipped: {_kind_name(mode)} is not a regular file, directory or symlink")
            return None, None
    except OSError as exc:
        on_error(relpath, _reason("cannot read", exc))
        return None, None
    item = WalkItem(entry=entry, dev=st.st_dev, ino=st.st_ino, key=stat_key(st), nlink=st.st_nlink, root=root,
                    _parent=parent if sub is None else None)
    return item, sub


def _open_sub(dir_fd: int, name: str, relpath: str, st: os.stat_result,
              on_error: Callable[[str, str], None]) -> _Dir | None:
    """Open and list the directory ``name`` (lstat-ed as ``st``); None (reported) when that fails."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        on_error(relpath, _reason("cannot list directory", exc))
        return None
    try:
        sub = _Dir(relpath, name, fd, st, [])
        if not sub.same(fd):
            on_error(relpath, "cannot list directory: replaced during the walk")
            os.close(fd)
            return None
        sub.children = _list_dir(fd)
    except OSError as exc:
        os.close(fd)
        on_error(relpath, _reason("cannot list directory", exc))
        return None
    return sub


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

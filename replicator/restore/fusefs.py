"""The read-only FUSE view of a repository: every snapshot as a directory tree, read on demand.

Layout (names of sources escaped: '%' as %25, '/' as %2F, a leading '.' as %2E)::

    /<source>/<generation>_<time>_<short id>/...   one directory per snapshot, e.g.
                                                   000042_2026-12-02T07:13:48Z_1a2b3c4d5e6f7a8b
    /<source>/latest -> <that name>                the highest generation of the source

The generation is zero-padded so ``ls`` sorts snapshots in generation order
(never by the primary's clock); the time is the recorded commit time in RFC
3339.  Files read at any offset fetch only the chunks they overlap, kept in
a small LRU (repo/browse.py), so reading the header of a 2 GiB scan reads
one chunk.  The snapshots are those present at mount time.

``SnapshotFS`` is plain Python over repo/browse.py: its methods take paths
and raise ``OSError(errno)``, so it is tested without a kernel; ``mount``
hands it to libfuse through mfusepy (the only importer of that library),
read-only, single-threaded (a Repository and its SSH session are used from
one thread), in the foreground.  libfuse unmounts cleanly on SIGINT, SIGTERM
and SIGHUP, and on ``umount``.

Must never: write to the repository, print, or load a whole file or a whole
snapshot's trees into memory.
"""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from replicator.errors import ReplicatorError, StorageError, UsageError
from replicator.format.entry import KIND_DIR, KIND_FILE, KIND_SYMLINK
from replicator.format.snapshot import Snapshot
from replicator.format.tree import TreeItem
from replicator.repo.browse import Browser, ChunkCache, FileReader, TreeCache
from replicator.times import rfc3339_ns

LATEST = "latest"
VIEW_MODE = 0o555  # the directories of the layout itself (root, sources)
INSTALL_HINT = "pip install 'replicator[mount]'"
LIBFUSE_HINT = "install libfuse (Debian: apt-get install fuse3; or libfuse2)"
MAX_PROBLEMS = 100  # read errors remembered for the report at unmount

_KIND_BITS = {KIND_FILE: stat.S_IFREG, KIND_DIR: stat.S_IFDIR, KIND_SYMLINK: stat.S_IFLNK}


def escape_source(name: str) -> str:
    """A source name as one directory name: reversible, never '.', '..', empty or holding '/' or NUL."""
    out = name.replace("%", "%25").replace("/", "%2F").replace("\x00", "%00")
    return "%2E" + out[1:] if out.startswith(".") else (out or "%")


def snapshot_dirname(snap: Snapshot) -> str:
    """``<generation, 6 digits>_<RFC 3339 time>_<short id>``; a time no date can show is ``@<seconds>``."""
    try:
        when = rfc3339_ns(snap.time_ns)
    except (OverflowError, OSError, ValueError):
        when = f"@{snap.time_ns // 1_000_000_000}"
    return f"{snap.generation:06d}_{when}_{snap.short_id}"


@dataclass
class _Source:
    name: str
    snapshots: dict[str, Snapshot]  # dirname -> snapshot, generation order
    latest: str | None  # dirname of the highest generation; None when two claim it
    time_ns: int


class SnapshotFS:
    """The filesystem's operations (mfusepy calls them by name): paths in, attributes and bytes out.

    :param repo: an open Repository (local or over ssh://), used from one thread.
    :param snapshots: the readable snapshots, in generation order.
    :param on_ready: called once the kernel has mounted the view (libfuse ``init``).
    """

    use_ns = True  # times in nanoseconds (mfusepy)

    def __init__(self, repo, snapshots: list[Snapshot], *, cache_bytes: int | None = None,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.repo = repo
        self.on_ready = on_ready
        self.problems: list[str] = []  # read errors, answered EIO (the first MAX_PROBLEMS)
        self._trees = TreeCache(repo)
        self._chunks = ChunkCache() if cache_bytes is None else ChunkCache(cache_bytes)
        self._browsers: dict[str, Browser] = {}
        self._open: dict[int, FileReader] = {}
        self._next_fh = 1
        self.sources: dict[str, _Source] = {}
        for snap in snapshots:
            src = self.sources.setdefault(escape_source(snap.source), _Source(snap.source, {}, None, 0))
            src.snapshots[snapshot_dirname(snap)] = snap
            src.time_ns = max(src.time_ns, snap.time_ns)
        for src in self.sources.values():
            snaps = list(src.snapshots.items())
            top = [d for d, s in snaps if s.generation == snaps[-1][1].generation]
            src.latest = top[0] if len(top) == 1 else None  # two claim the latest: no 'latest' link
        self._mount_time = max((s.time_ns for s in snapshots), default=0)

    # --- resolution ---------------------------------------------------------------------------
    def _resolve(self, path: str) -> tuple[str, object]:
        """('root'|'source'|'latest'|'item', what): the node at ``path``.  :raises OSError: ENOENT, EIO."""
        parts = [p for p in path.split("/") if p]
        if not parts:
            return "root", None
        src = self.sources.get(parts[0])
        if src is None:
            raise OSError(errno.ENOENT, "no such source")
        if len(parts) == 1:
            return "source", src
        if parts[1] == LATEST and src.latest is not None:
            if len(parts) > 2:
                raise OSError(errno.ENOTDIR, "latest is a symlink")
            return "latest", src
        snap = src.snapshots.get(parts[1])
        if snap is None:
            raise OSError(errno.ENOENT, "no such snapshot")
        browser = self._browser(snap)
        item = self._guard(lambda: browser.lookup("/".join(parts[2:])))
        if item is None:
            raise OSError(errno.ENOENT, "no such path in the snapshot")
        return "item", item

    def _browser(self, snap: Snapshot) -> Browser:
        b = self._browsers.get(snap.id)
        if b is None:
            b = self._browsers[snap.id] = Browser(self.repo, snap, self._trees)
        return b

    def _guard(self, call):
        """Run a repository read; a damaged or missing object, or a lost session, is EIO (and remembered)."""
        try:
            return call()
        except ReplicatorError as exc:
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.append(str(exc))
            raise OSError(errno.EIO, str(exc)) from None

    def _item(self, path: str) -> TreeItem:
        kind, what = self._resolve(path)
        if kind != "item":
            raise OSError(errno.EISDIR if kind != "latest" else errno.EINVAL, path)
        assert isinstance(what, TreeItem)
        return what

    # --- operations -----------------------------------------------------------------------------
    def init(self, path: str) -> None:
        if self.on_ready is not None:
            self.on_ready()

    def getattr(self, path: str, fh: int | None = None) -> dict:
        kind, what = self._resolve(path)
        if kind == "root":
            return self._dir_attrs(self._mount_time, 2 + len(self.sources))
        if kind == "source":
            assert isinstance(what, _Source)
            return self._dir_attrs(what.time_ns, 2 + len(what.snapshots))
        if kind == "latest":
            assert isinstance(what, _Source) and what.latest is not None
            t = what.snapshots[what.latest].time_ns
            return {"st_mode": stat.S_IFLNK | 0o777, "st_nlink": 1, "st_size": len(os.fsencode(what.latest)),
                    "st_mtime": t, "st_atime": t, "st_ctime": t}
        assert isinstance(what, TreeItem)
        e = what.entry
        size = len(os.fsencode(e.target)) if e.kind == KIND_SYMLINK else e.size
        return {"st_mode": _KIND_BITS[e.kind] | e.mode, "st_nlink": 2 if e.kind == KIND_DIR else 1,
                "st_uid": e.uid, "st_gid": e.gid, "st_size": size, "st_blocks": (size + 511) // 512,
                "st_mtime": e.mtime_ns, "st_atime": e.mtime_ns, "st_ctime": e.mtime_ns}

    @staticmethod
    def _dir_attrs(time_ns: int, nlink: int) -> dict:
        return {"st_mode": stat.S_IFDIR | VIEW_MODE, "st_nlink": nlink, "st_uid": os.getuid(), "st_gid": os.getgid(),
                "st_mtime": time_ns, "st_atime": time_ns, "st_ctime": time_ns}

    def readdir(self, path: str, fh: int) -> list[str]:
        kind, what = self._resolve(path)
        if kind == "root":
            names = sorted(self.sources)
        elif kind == "source":
            assert isinstance(what, _Source)
            names = list(what.snapshots) + ([LATEST] if what.latest is not None else [])
        elif kind == "item":
            assert isinstance(what, TreeItem)
            if what.entry.kind != KIND_DIR:
                raise OSError(errno.ENOTDIR, path)
            item = what
            names = [it.entry.name for it in self._guard(lambda: self._trees.get(item.subtree, item.entry.path)[0])]
        else:
            raise OSError(errno.ENOTDIR, path)
        return [".", "..", *names]

    def readlink(self, path: str) -> str:
        kind, what = self._resolve(path)
        if kind == "latest":
            assert isinstance(what, _Source) and what.latest is not None
            return what.latest
        if kind == "item" and isinstance(what, TreeItem) and what.entry.kind == KIND_SYMLINK:
            return what.entry.target
        raise OSError(errno.EINVAL, path)

    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise OSError(errno.EROFS, path)
        item = self._item(path)
        if item.entry.kind != KIND_FILE:
            raise OSError(errno.EISDIR if item.entry.kind == KIND_DIR else errno.ELOOP, path)
        fh, self._next_fh = self._next_fh, self._next_fh + 1
        self._open[fh] = FileReader(self.repo, item.entry, self._chunks)
        return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        reader = self._open.get(fh)
        if reader is None:
            raise OSError(errno.EBADF, path)
        return self._guard(lambda: reader.read(offset, size))

    def release(self, path: str, fh: int) -> int:
        self._open.pop(fh, None)
        return 0

    def listxattr(self, path: str) -> list[str]:
        kind, what = self._resolve(path)
        return [name for name, _v in what.entry.xattrs] if isinstance(what, TreeItem) else []

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        kind, what = self._resolve(path)
        if isinstance(what, TreeItem):
            for xname, value in what.entry.xattrs:
                if xname == name:
                    return value
        raise OSError(errno.ENODATA, name)

    def statfs(self, path: str) -> dict:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}


def load_fuse():
    """The mfusepy module.  :raises UsageError: it is not installed, or libfuse is missing."""
    try:
        import mfusepy
    except ImportError:
        raise UsageError(f"mount needs the FUSE binding mfusepy: {INSTALL_HINT}") from None
    except (OSError, AttributeError) as exc:  # mfusepy loads libfuse when imported
        raise UsageError(f"mount needs libfuse ({' '.join(str(exc).split())}): {LIBFUSE_HINT}") from None
    return mfusepy


def check_mountpoint(path: str) -> None:
    """:raises UsageError: ``path`` is not an existing empty directory, or something is mounted there already."""
    if not os.path.isdir(path):
        raise UsageError(f"mount: {path} is not an existing directory (create it first)")
    if os.path.ismount(path):
        raise UsageError(f"mount: something is already mounted at {path} (unmount it first)")
    if os.listdir(path):
        raise UsageError(f"mount: {path} is not empty (the mount would hide what it holds): use an empty directory")


def mount(fs: SnapshotFS, mountpoint: str) -> None:
    """Serve ``fs`` at ``mountpoint`` until it is unmounted (SIGINT, SIGTERM, ``umount``).

    :raises UsageError: no FUSE binding or libfuse, or a bad mountpoint.
    :raises StorageError: libfuse could not mount (it says why on stderr: /dev/fuse, permissions).
    """
    fuse = load_fuse()
    check_mountpoint(mountpoint)
    try:
        fuse.FUSE(fs, mountpoint, foreground=True, nothreads=True, ro=True, fsname="replicator",
                  subtype="replicator")
    except RuntimeError as exc:  # fuse_main's non-zero status: it printed the reason
        raise StorageError(f"cannot mount at {mountpoint} (libfuse status {exc}; its reason is on the line "
                           f"above: /dev/fuse missing, not permitted, or a bad mountpoint)") from None

"""What the live mirror wrote, and the decision whether a path on disk is still the mirror's to touch.

restore/mirror.py never overwrites or removes a path unless the file there is
the one it wrote itself; this module is where it remembers what that was and
where that decision is made.

* **Records.**  A SQLite file beside the mirror (``.<DIR name>.mirror-files``,
  next to the state file, so never part of the tree) holds, per path, the
  (size, mtime_ns, inode, ctime_ns) the file had right after the mirror wrote
  it: any write, rename, chmod or new file at that path changes at least one
  of them.  It also lists the local changes kept at the last update, so every
  update checks and names them again until they are committed or discarded.
  Memory stays bounded whatever the tree's size: rows are read one path at a
  time and written in one transaction per update.  Paths are stored as their
  file-system bytes (``os.fsencode``), so any name round-trips.
* **The guard.**  A path is the mirror's when what is on disk has the recorded
  signature, or equals (quick check) the entry being written there, or an entry
  of a snapshot an interrupted update was applying (it may have written it
  without recording it); or when the caller trusts the disk (a first update,
  an adopted directory, discarding local changes).  Anything else is kept and
  named.

It never writes or removes anything in the mirror, never follows a symlink
below the mirror's root, and never prints, logs or exits.
"""
from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable, Iterable

from replicator.format.entry import KIND_DIR, Entry
from replicator.restore.writer import TMP_PREFIX, quick_same

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Signature = tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (path BLOB PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ino INTEGER,
                                  ctime_ns INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS local (path BLOB PRIMARY KEY) WITHOUT ROWID;
"""


def records_path(target: str) -> str:
    """Where the records of the mirror at ``target`` are kept: a hidden file beside it."""
    target = os.path.abspath(target)
    return os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.mirror-files")


def signature(st: os.stat_result) -> Signature:
    """What identifies one version of a file: never only its size and mtime (an application may keep those)."""
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


class Records:
    """The records of one mirror, open for one update; changes are kept only by ``commit()``."""

    def __init__(self, target: str) -> None:
        self._db = sqlite3.connect(records_path(target), isolation_level="DEFERRED")
        self._db.executescript(_SCHEMA)

    def get(self, path: str) -> Signature | None:
        """The signature recorded for ``path``; None when the mirror never wrote it (or forgot it)."""
        row = self._db.execute("SELECT size, mtime_ns, ino, ctime_ns FROM files WHERE path = ?",
                               (os.fsencode(path),)).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3])

    def put(self, path: str, sig: Signature) -> None:
        self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", (os.fsencode(path), *sig))

    def forget(self, path: str) -> None:
        """Drop the rows of ``path`` and of everything below it (a removed directory)."""
        p = os.fsencode(path)
        self._db.execute("DELETE FROM files WHERE path = ? OR (path >= ? AND path < ?)", (p, p + b"/", p + b"0"))

    def local(self) -> list[str]:
        """The local changes kept at the last update, sorted."""
        return [os.fsdecode(r[0]) for r in self._db.execute("SELECT path FROM local ORDER BY path")]

    def set_local(self, paths: Iterable[str]) -> None:
        self._db.execute("DELETE FROM local")
        self._db.executemany("INSERT OR IGNORE INTO local VALUES (?)", ((os.fsencode(p),) for p in paths))

    def commit(self) -> None:
        self._db.commit()

    def close(self) -> None:
        """Close without committing what ``commit()`` did not."""
        self._db.close()




# --- the guard -------------------------------------------------------------------------
class Stat:
    """lstat of paths below the root without following any symlink, walking down from the last directory used
    (pre-order costs one open per directory); at most one descriptor of its own open."""

    def __init__(self, root_fd: int) -> None:
        self.root = root_fd
        self.dir = ""
        self.fd = os.dup(root_fd)

    def __call__(self, path: str) -> os.stat_result | None:
        """:returns: the stat of ``path``, None when it (or a directory on the way) is not there."""
        parent, _, name = path.rpartition("/")
        if parent != self.dir:
            below = self.dir == "" or parent.startswith(self.dir + "/")
            fd = self.walk(self.fd if below else self.root, parent[len(self.dir) + 1:] if below and self.dir
                            else parent)
            if fd is None:
                return None
            os.close(self.fd)
            self.fd, self.dir = fd, parent
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return None

    @staticmethod
    def walk(start: int, rest: str) -> int | None:
        """A new descriptor of directory ``rest`` below ``start`` (component by component, O_NOFOLLOW)."""
        fd = os.dup(start)
        i = 0
        try:
            while i < len(rest):
                j = rest.find("/", i)
                j = len(rest) if j < 0 else j
                nfd = os.open(rest[i:j], _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nfd
                i = j + 1
        except OSError:
            os.close(fd)
            return None
        return fd

    def close(self) -> None:
        os.close(self.fd)


class Guard:
    """Decides whether what stands at a path is the mirror's to replace or remove, and collects the paths it keeps.

    Never says "mine" for a file someone else wrote or changed since the mirror wrote it, unless told to trust
    the disk (a first update, an adopted directory, or discarding local changes).
    """

    def __init__(self, records: Records, trust: bool,
                 pending: Callable[[str], Iterable[Entry | None]] = lambda _path: ()) -> None:
        self.records = records
        self.trust = trust
        self.pending = pending  # path -> entries of the snapshots an interrupted update was applying
        self.kept: set[str] = set()
        self.held = 0  # how many times keep() said True

    def mine(self, path: str, st: os.stat_result, entry: Entry | None = None) -> bool:
        """``entry``: what the snapshot being applied has there (a file equal to it is the mirror's to take over)."""
        if self.trust or path.rpartition("/")[2].startswith(TMP_PREFIX):
            return True
        if self.records.get(path) == signature(st):
            return True
        if entry is not None and quick_same(st, entry):
            return True
        return any(old is not None and quick_same(st, old) for old in self.pending(path))

    def keep(self, path: str, st: os.stat_result) -> bool:
        """For remove_tree: True (and the path is named) when the non-directory at ``path`` must stay."""
        if self.mine(path, st):
            return False
        self.kept.add(path)
        self.held += 1
        return True


def guard_writes(guard: Guard, root_fd: int, write: list[Entry]) -> tuple[list[Entry], list[str]]:
    """Drop the entries whose path holds a file that is not the mirror's, and every entry below such a path.

    :returns: (entries still to write, paths where something of another kind stands: to be removed first).
    """
    out: list[Entry] = []
    clashes: list[str] = []
    drop: str | None = None  # "path/" of the last dropped entry: in pre-order its subtree follows it
    look = Stat(root_fd)
    try:
        for e in write:
            if drop is not None and e.path.startswith(drop):
                continue
            drop = None
            if e.link_to:
                lst = look(e.link_to)
                if e.link_to in guard.kept or (lst is not None and not stat.S_ISDIR(lst.st_mode)
                                               and guard.keep(e.link_to, lst)):
                    continue  # it would link to a local change (named)
            st = look(e.path)
            if st is not None and not stat.S_ISDIR(st.st_mode) and not guard.mine(e.path, st, e):
                guard.kept.add(e.path)
                drop = e.path + "/"
                continue
            if st is not None and stat.S_ISDIR(st.st_mode) != (e.kind == KIND_DIR):
                clashes.append(e.path)  # lstat: a symlink is never a directory
            out.append(e)
    finally:
        look.close()
    return out, clashes


def name_strays(guard: Guard, root_fd: int, listing: dict[str, set[str]], skip: set[str]) -> None:
    """Name what stands in the directories an update touched, is not in the snapshot and is not the mirror's.

    Never removes or changes anything.
    """
    for d, names in listing.items():
        fd = Stat.walk(root_fd, d)
        if fd is None:
            continue
        try:
            with os.scandir(fd) as it:
                found = [(c.name, c.stat(follow_symlinks=False)) for c in it
                         if c.name not in names and not c.name.startswith(TMP_PREFIX)]
        except OSError:
            continue
        finally:
            os.close(fd)
        for name, st in found:
            path = f"{d}/{name}" if d else name
            if path not in skip and (stat.S_ISDIR(st.st_mode) or not guard.mine(path, st)):
                guard.kept.add(path)


def record(records: Records, root_fd: int, entries: list[Entry], kept: set[str]) -> None:
    """Record what each path of ``entries`` now holds, where that is the entry (written or already equal).

    Never records a file that is not the entry: a write that failed left the old file with its old record.
    """
    look = Stat(root_fd)
    try:
        for e in entries:
            if e.kind == KIND_DIR or e.path in kept:
                continue
            st = look(e.path)
            if st is None:
                records.forget(e.path)
            elif quick_same(st, e):
                records.put(e.path, signature(st))
        for e in entries:  # a new hard link changed its target's ctime
            if e.link_to and e.link_to not in kept and (st := look(e.link_to)) is not None and quick_same(st, e):
                records.put(e.link_to, signature(st))
    finally:
        look.close()

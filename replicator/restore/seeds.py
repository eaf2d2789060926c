"""Seeds: restore into a tree that already holds most of the data, fetching only what it lacks.

Failback after a failover restores the other site's newest snapshot into the
old primary's existing tree, over the WAN.  With ``restore --delta`` a file
whose size, modification time and mode already match the snapshot is left as
it is (the quick check rsync makes; restore/writer.py does it), and every
other file is rebuilt from chunks found anywhere in the target (casync's
seeds), plus the chunks fetched from the repository.  :meth:`Seeds.scan`,
before the restore, finds them:

* a file that passes the quick check lends its chunks by its snapshot entry
  (offsets from the index's plaintext lengths), without being read;
* every other regular file in the target (the old version at the same path,
  a file moved or copied away at the other site, one the snapshot no longer
  has) is chunked with the repository's chunker and keyed ids.

Only chunks some file being rebuilt needs are remembered, at their first
place ``(file, offset, length)``, so the map holds at most one record per
wanted chunk whatever the size of the target.  A file the restore writes
lends its chunks to the files after it (a duplicate crosses the WAN once).

Safety: the target is walked with directory descriptors, ``O_NOFOLLOW`` on
every component and regular files only, so a symlink in the target is never
followed (nothing outside it is read).  A chunk read from a seed is used only
if it hashes to the id the snapshot names, so a seed that changed since the
scan, or a hostile file in the target, can only cost a fetch.  A chunk whose
only copy in the target was the old version of a file the restore has
already replaced is fetched.

Must never: use seed bytes whose keyed id does not match, follow a symlink,
or write anything (restore/writer.py does).
"""
from __future__ import annotations

import os
import stat
from collections import OrderedDict
from collections.abc import Iterator, Sequence

from replicator.format.entry import KIND_FILE, Entry
from replicator.restore.writer import TMP_PREFIX, RestoreReport, quick_same

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: O_NONBLOCK: a FIFO swapped in after the lstat must not block the open.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: Seed files kept open at once while restoring (reopened by name when evicted).
OPEN_SEEDS = 16

Location = tuple[int, int, int]  # (seed file number, offset, length)


class Seeds:
    """``read_file(entry)`` for restore/writer.py, seeded from the files in ``target``.

    Use: ``scan(entries)`` before ``restore(target, entries, seeds.read_file, keep_unchanged=True)``,
    ``account(report)`` after it, then ``close()``.  Counters: ``chunks_seeded``/``bytes_seeded`` (taken
    from files in the target), ``chunks_fetched``/``bytes_fetched`` (plaintext read from the repository),
    ``files_scanned``/``bytes_scanned`` (what the scan chunked).
    """

    def __init__(self, repo, target: str) -> None:
        self._repo = repo
        self._target = target
        self._chunker = repo.chunker()
        self._hasher = repo.chunk_hasher
        self._root: int | None = None
        self._need: dict[bytes, Location | None] = {}  # wanted chunk id -> where the target holds it
        self._missing = 0  # wanted ids not found yet
        self._files: list[str] = []  # seed file number -> relative path (one number per version of a path)
        self._open: OrderedDict[int, int] = OrderedDict()  # seed file number -> descriptor (LRU)
        self.chunks_seeded = self.chunks_fetched = 0
        self.bytes_seeded = self.bytes_fetched = 0
        self.files_scanned = self.bytes_scanned = 0

    # -- before the restore -------------------------------------------------

    def scan(self, entries: Sequence[Entry]) -> None:
        """Find where the target already holds the chunks of the files the restore will rebuild.

        :param entries: the entries about to be restored (read twice: a list).
        Unreadable files and directories are skipped: a seed is only ever an optimisation.
        """
        root = self._root_fd()
        if root is None:
            return
        files = {e.path: e for e in entries if e.kind == KIND_FILE and not e.link_to}
        kept = {rel for rel, _fd, _name, st in _regular_files(root) if rel in files and quick_same(st, files[rel])}
        for e in files.values():
            if e.path not in kept:
                for cid in e.chunks:
                    self._need.setdefault(cid, None)
        self._missing = len(self._need)
        for rel in sorted(kept):  # stable files first: the restore does not replace them
            if not self._missing:
                return
            self._lend(rel, files[rel])
        for rel, dir_fd, name, st in _regular_files(root):
            if not self._missing:
                return
            if rel not in kept:
                self._chunk(rel, dir_fd, name, st)

    def _root_fd(self) -> int | None:
        if self._root is None:
            try:
                self._root = os.open(self._target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                return None
        return self._root

    def _found(self, rel: str, at: list[tuple[bytes, int, int]]) -> None:
        """Remember the wanted chunks of ``at`` ((id, offset, length)) as held by ``rel``, if not yet placed."""
        number = -1
        for cid, offset, length in at:
            if cid in self._need and self._need[cid] is None:
                if number < 0:
                    number = len(self._files)
                    self._files.append(rel)
                self._need[cid] = (number, offset, length)
                self._missing -= 1

    def _lend(self, rel: str, entry: Entry) -> None:
        """A kept file's chunks, placed by its entry (plaintext lengths from the index), none read."""
        if all(self._need.get(cid, 0) is not None for cid in entry.chunks):
            return
        at, offset = [], 0
        for cid in entry.chunks:
            found = self._repo.index.lookup(cid)
            if found is None:
                return
            length = found[1].raw_len
            at.append((cid, offset, length))
            offset += length
        if offset == entry.size:
            self._found(rel, at)

    def _chunk(self, rel: str, dir_fd: int, name: str, st: os.stat_result) -> None:
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError:
            return
        at, offset = [], 0
        try:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                return  # replaced since the listing
            with open(fd, "rb", buffering=0, closefd=False) as f:
                for chunk in self._chunker.chunks(f, now.st_size):
                    cid = self._hasher(chunk)
                    if cid in self._need:
                        at.append((cid, offset, len(chunk)))
                    offset += len(chunk)
        except OSError:
            return
        finally:
            os.close(fd)
        self.files_scanned += 1
        self.bytes_scanned += offset
        self._found(rel, at)

    # -- during the restore -------------------------------------------------

    def read_file(self, entry: Entry) -> Iterator[bytes]:
        """The plaintext chunks of ``entry``: each from a seed if one verifies, else from the repository
        (those without a seed read ahead together).  :raises IntegrityError: a fetched blob is bad."""
        locations = [self._need.get(cid) for cid in entry.chunks]
        fetched = self._repo.read_blobs([cid for cid, loc in zip(entry.chunks, locations) if loc is None])
        placed: list[tuple[bytes, int, int]] = []
        offset = 0
        try:
            for cid, loc in zip(entry.chunks, locations):
                data = self._seed(cid, loc) if loc is not None else None
                if data is not None:
                    self.chunks_seeded += 1
                    self.bytes_seeded += len(data)
                else:
                    data = next(fetched) if loc is None else self._repo.read_blob(cid)
                    self.chunks_fetched += 1
                    self.bytes_fetched += len(data)
                yield data
                placed.append((cid, offset, len(data)))
                offset += len(data)
        finally:
            fetched.close()
        # Every chunk was handed over: the writer renames the file into place before the next entry,
        # so it holds them from then on (a new seed file number: the old version's offsets stay apart).
        for cid, _o, _l in placed:
            if cid in self._need and self._need[cid] is not None:
                self._need[cid] = None
                self._missing += 1
        self._found(entry.path, placed)

    def _seed(self, cid: bytes, loc: Location) -> bytes | None:
        """The bytes at ``loc`` if they still hash to ``cid``, else None (changed, gone, unreadable)."""
        number, offset, length = loc
        fd = self._seed_fd(number)
        if fd is None:
            return None
        try:
            data = os.pread(fd, length, offset)
        except OSError:
            return None
        if len(data) != length or not self._hasher.check(data, cid):
            return None  # changed since the scan: fetch instead
        return data

    def _seed_fd(self, number: int) -> int | None:
        fd = self._open.get(number)
        if fd is not None:
            self._open.move_to_end(number)
            return fd
        root = self._root_fd()
        if root is None:
            return None
        fd = _open_below(root, self._files[number])
        if fd is None:
            return None
        self._open[number] = fd
        while len(self._open) > OPEN_SEEDS:
            os.close(self._open.popitem(last=False)[1])
        return fd

    # -- after it -----------------------------------------------------------

    def account(self, report: RestoreReport) -> None:
        """Put the byte counts in ``report``: fetched from the repository, taken from the target."""
        report.fetched_bytes = self.bytes_fetched
        report.seeded_bytes = self.bytes_seeded

    def close(self) -> None:
        while self._open:
            os.close(self._open.popitem()[1])
        if self._root is not None:
            os.close(self._root)
            self._root = None


def _open_below(root: int, rel: str) -> int | None:
    """A descriptor of regular file ``rel`` under ``root``, opened component by component, never through a
    symlink; None if it is not there as a regular file."""
    *dirs, name = rel.split("/")
    fd = os.dup(root)
    try:
        for part in dirs:
            nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
        ffd = os.open(name, _FILE_FLAGS, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(ffd).st_mode):
        os.close(ffd)
        return None
    return ffd


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _listing(fd: int, rel: str, subdirs: list[str]) -> Iterator[tuple[str, int, str, os.stat_result]]:
    """The regular files of directory ``fd`` (``rel`` under the root); its subdirectories go to ``subdirs``."""
    try:
        names = os.listdir(fd)
    except OSError:
        return
    for name in names:
        if name.startswith(TMP_PREFIX):
            continue  # a temporary file: partial by definition
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            continue
        path = f"{rel}/{name}" if rel else name
        if stat.S_ISREG(st.st_mode):
            yield path, fd, name, st
        elif stat.S_ISDIR(st.st_mode):
            subdirs.append(name)


def _regular_files(root: int) -> Iterator[tuple[str, int, str, os.stat_result]]:
    """``(relative path, directory descriptor, name, lstat)`` of every regular file under ``root``.

    No symlink is followed (``O_NOFOLLOW`` on each directory opened).  One directory is open at a time
    whatever the depth: the walk goes back up through ``..`` when that is still the directory it came
    from (device and inode), else by name from the root, checked the same way; a directory not found
    again is left (its other subdirectories are not seen).  The descriptor is valid until the next item.
    """
    fd = os.dup(root)
    frames: list[tuple[str, tuple[int, int], list[str]]] = []  # (relative path, identity, subdirs to visit)
    try:
        subdirs: list[str] = []
        yield from _listing(fd, "", subdirs)
        frames.append(("", _identity(fd), subdirs))
        while frames:
            rel, _ident, pending = frames[-1]
            if pending:
                name = pending.pop()
                try:
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue
                os.close(fd)
                fd = nfd
                child = f"{rel}/{name}" if rel else name
                subdirs = []
                yield from _listing(fd, child, subdirs)
                frames.append((child, _identity(fd), subdirs))
                continue
            frames.pop()
            while frames:
                up = _back_to(root, fd, frames[-1][0], frames[-1][1])
                if up is not None:
                    os.close(fd)
                    fd = up
                    break
                frames.pop()  # moved away meanwhile: what is left of it is not scanned
    finally:
        os.close(fd)


def _back_to(root: int, fd: int, rel: str, ident: tuple[int, int]) -> int | None:
    """A descriptor of the directory ``rel`` with identity ``ident``: ``..`` of ``fd`` or by name from root."""
    try:
        up = os.open("..", _DIR_FLAGS, dir_fd=fd)
    except OSError:
        up = -1
    if up >= 0 and _identity(up) == ident:
        return up
    if up >= 0:
        os.close(up)
    up = os.dup(root)
    try:
        for part in rel.split("/") if rel else ():
            nfd = os.open(part, _DIR_FLAGS, dir_fd=up)
            os.close(up)
            up = nfd
        if _identity(up) == ident:
            return up
    except OSError:
        pass
    os.close(up)
    return None

"""Sync: walk a source tree and commit it as one snapshot at a destination.

Order of durability (the destination enforces it): packs, index, snapshot.
The snapshot is written last, so a kill at any moment leaves the previous
snapshot intact, and the chunks already stored are found by the next run and
not stored again.  A file that changes while it is read (its size, mtime,
ctime or inode differ before and after) is read again, up to
``TORN_RETRIES`` times, and otherwise left out of the snapshot with a
warning: never committed torn.

``SyncRun(src, dest, options).run()`` is one sync.  The walk and the reads
happen on the caller's thread and feed the pipeline (sync/pipeline.py) with
typed events, which come back in submission order to ``SyncRun._consume``:

* ``ChunkEvent(job, result)``: one chunk of a file being read, hashed and
  compressed unless the destination already has it;
* ``FileDone(job)``: every chunk of that file came before; it goes in the tree;
* ``EntryEvent(entry)``: a directory, a symlink, a hard link to a file already
  stored, or a file taken unchanged from the state cache.

A source that vanished is not a deletion.  Before the walk the engine takes
the latest snapshot of the source (and the state cache's record of the last
commit, when it is newer: a receiver may withhold snapshots) as the
reference, and refuses with ``SourceVanished``, committing nothing, a source
root that lacks its required marker, cannot be listed, is on another
filesystem or has stopped or started being a mount point, or is empty; after
the walk, one that lost more than ``options.max_shrink`` of the reference's
files.  ``options.confirm_source`` commits it all the same (not a missing
marker).  The snapshot records its root (``root_dev``, ``root_mount``,
``root_fs`` in its stats) for the next run to compare.

A sync that changes nothing commits nothing (unless ``options.always_commit``):
when the root tree and the stats equal those of the destination's latest
snapshot of the source and that snapshot is this site's last commit there
(repo/writer.py ``Writer.unchanged``), after the same walk and the same
history checks, the report names that snapshot with ``unchanged`` set.

What the walk leaves out (``options.selection()``, sync/select.py) is counted
in the report by reason, the first ``EXCLUDED_LISTED`` paths named.

A dry run (``options.dry_run``) walks, reads and hashes exactly as a sync
does and asks the destination which chunk ids it holds, but stores no blob
or tree, commits nothing and only reads the state cache (opened read-only
here; a cache handed in is never written).  Its report counts what a sync
would read and send: new chunks and their bytes before compression (data
chunks only: the trees are not built).
"""
from __future__ import annotations

import os
import re
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING

from replicator.constants import BLOB_DATA
from replicator.errors import SourceVanished
from replicator.format.entry import KIND_DIR, KIND_FILE, KIND_SYMLINK, Entry
from replicator.format.snapshot import Snapshot
from replicator.format.tree import TreeItem
from replicator.sync.options import SyncOptions
from replicator.sync.pipeline import ChunkEvent, ChunkResult, Pipeline
from replicator.sync.select import REASON_MOUNT, REASON_PATTERN, REASON_TAGGED
from replicator.sync.sparse import SparseReader
from replicator.sync.state import StateCache, state_path
from replicator.sync.walk import WalkItem, stat_key, walk

if TYPE_CHECKING:  # annotations only: the engine needs no module of the destination at run time
    from replicator.core.chunker import Chunker
    from replicator.repo.writer import Writer as Destination

__all__ = ["ChunkEvent", "ChunkResult", "DESTINATION", "EntryEvent", "FileDone", "FileJob", "Reference",
           "SourceRoot", "SyncOptions", "SyncReport", "SyncRun", "TORN_RETRIES", "TreeBuilder", "latest_snapshot",
           "source_root"]

TORN_RETRIES = 3
EXCLUDED_LISTED = 1000  # paths left out named in the report (the counts are complete)
DESTINATION = "(destination)"  # the path of a report warning that comes from the destination, not a source file
MOUNTINFO = "/proc/self/mountinfo"  # Linux; elsewhere the filesystem is told by st_dev alone


@dataclass
class SyncReport:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes_total: int = 0  # plaintext bytes of all files in the snapshot
    bytes_read: int = 0  # bytes actually read from the source (unchanged files are not)
    files_unchanged: int = 0  # taken from the state cache without reading
    files_new: int = 0  # read, and the state cache had no row for the path (every file read without one)
    files_changed: int = 0  # read although the state cache had a row for the path
    chunks_total: int = 0
    chunks_new: int = 0
    bytes_new: int = 0  # plaintext bytes of new chunks
    excluded: int = 0  # paths matching an exclude pattern (a directory once: its contents are not seen)
    excluded_tagged: int = 0  # directories left out by --exclude-if-present, with their contents
    mounts_not_crossed: int = 0  # --one-file-system: mount points recorded as empty directories
    excluded_paths: list[tuple[str, str]] = field(default_factory=list)  # (path, why): the first EXCLUDED_LISTED
    dry_run: bool = False  # nothing was written: ``snapshot`` is None
    committed: bool = False  # a new snapshot was committed: ``snapshot`` is it
    unchanged: bool = False  # nothing changed since ``snapshot``, this site's last commit: none was committed
    # (path, message): source files skipped, then the destination's (path DESTINATION)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    destination_stats: dict = field(default_factory=dict)  # dest.stats after the commit (packs_written, ...)
    snapshot: Snapshot | None = None

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)
             if f.name not in ("warnings", "destination_stats", "snapshot", "excluded_paths")}
        d["warnings"] = [{"path": p, "message": m} for p, m in self.warnings]
        d["excluded_paths"] = [{"path": p, "reason": r} for p, r in self.excluded_paths]
        d["destination_stats"] = dict(self.destination_stats)
        d["snapshot"] = self.snapshot.id if self.snapshot else None
        d["generation"] = self.snapshot.generation if self.snapshot else None
        return d


@dataclass(eq=False, slots=True)
class FileJob:
    """A file being read: its metadata from the open descriptor, its stat key, its chunk ids so far."""

    entry: Entry
    key: tuple[int, int, int, int]
    chunks: list[bytes] = field(default_factory=list)
    known: bool = False  # the state cache had a row for its path (counted changed, not new)


@dataclass(frozen=True, slots=True)
class FileDone:
    """Every chunk of ``job`` was submitted before this, and the file did not change while read."""

    job: FileJob


@dataclass(frozen=True, slots=True)
class EntryEvent:
    """An entry that needs no reading: directory, symlink, hard link, or a file unchanged per the state cache."""

    entry: Entry


class TreeBuilder:
    """Turns a pre-order stream of entries into tree blobs, bottom-up."""

    def __init__(self, dest: Destination) -> None:
        self._dest = dest
        self._stack: list[tuple[Entry | None, list[TreeItem]]] = [(None, [])]

    def add(self, entry: Entry) -> None:
        parent = entry.parent
        while self._stack[-1][0] is not None and self._stack[-1][0].path != parent:
            self._close()
        if self._stack[-1][0] is None and parent:
            raise ValueError(f"entry {entry.path!r} arrived without its directory")
        if entry.kind == KIND_DIR:
            self._stack.append((entry, []))
        else:
            self._stack[-1][1].append(TreeItem(entry))

    def _close(self) -> None:
        dir_entry, items = self._stack.pop()
        tree_id = self._dest.store_tree(items)
        self._stack[-1][1].append(TreeItem(dir_entry, tree_id))  # type: ignore[arg-type]

    def finish(self) -> bytes:
        while len(self._stack) > 1:
            self._close()
        return self._dest.store_tree(self._stack[0][1])


# --- a source that vanished ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SourceRoot:
    """The source root as it is now, before the walk: what tells one volume from another.

    :ivar dev: ``st_dev`` of the root (symlinks followed).
    :ivar mount: whether the root is a mount point.
    :ivar fs: ``"FSTYPE SOURCE ROOT"`` of the mount holding it (/proc/self/mountinfo): unlike
        ``st_dev`` it survives a reboot or an NFS remount; None where unknown.
    :ivar listed: whether the root lists any entry; None when it cannot be listed.
    :ivar list_error: why it cannot be listed.
    """

    dev: int
    mount: bool
    fs: str | None
    listed: bool | None
    list_error: str | None = None

    def stats(self) -> dict:
        """The snapshot stats that record it (integers, and ``root_fs`` when known)."""
        out: dict = {"root_dev": self.dev, "root_mount": int(self.mount)}
        if self.fs is not None:
            out["root_fs"] = self.fs
        return out


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mount_of(real: str) -> tuple[str, str] | None:
    """:returns: (mount point, ``"FSTYPE SOURCE ROOT"``) of the mount holding the real path ``real``."""
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as info:
            lines = info.read().splitlines()
    except OSError:
        return None
    best: tuple[str, str] | None = None
    for line in lines:  # ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        left, sep, right = line.partition(" - ")
        f, r = left.split(), right.split()
        if not sep or len(f) < 5 or len(r) < 2:
            continue
        point = _unescape(f[4])
        if real == point or real.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) >= len(best[0]):  # of equal ones, the last is on top
                best = (point, f"{r[0]} {_unescape(r[1])} {_unescape(f[3])}")
    return best


def source_root(src: str) -> SourceRoot:
    """:returns: what ``src`` is now.  :raises OSError: it cannot be stat-ed."""
    dev = os.stat(src).st_dev
    real = os.path.realpath(src)
    mount = _mount_of(real)
    listed: bool | None = None
    error = None
    try:
        with os.scandir(src) as it:
            listed = next(it, None) is not None
    except OSError as exc:
        error = exc.strerror or str(exc)
    return SourceRoot(dev, os.path.ismount(real) or (mount is not None and mount[0] == real),
                      mount[1] if mount else None, listed, error)


@dataclass(frozen=True, slots=True)
class Reference:
    """What the source looked like at its last commit.

    :ivar what: how the messages name it (``its last snapshot (generation 41)``).
    :ivar same_host: whether it was taken on this host (device numbers mean nothing elsewhere).
    """

    what: str
    generation: int
    stats: dict
    same_host: bool

    def count(self, key: str) -> int:
        value = self.stats.get(key)
        return value if type(value) is int and value > 0 else 0


def latest_snapshot(dest: Destination, source: str) -> Snapshot | None:
    """The readable snapshot of ``source`` with the highest generation (damaged ones are the commit's
    to report)."""
    return max((s for s in dest.snapshots([]) if s.source == source), key=lambda s: s.generation, default=None)


def choose_reference(snap: Snapshot | None, cached: dict | None) -> Reference | None:
    """The latest snapshot, unless the state cache recorded a later commit: the repository lost or
    withheld it, and the local record is the better witness.  None: nothing to compare with."""
    if cached is not None and (snap is None or cached["generation"] > snap.generation):
        listed = f"generation {snap.generation}" if snap is not None else "none"
        return Reference(f"the state cache's last snapshot (generation {cached['generation']}; the repository "
                         f"lists {listed})", cached["generation"], cached["stats"], True)
    if snap is None:
        return None
    return Reference(f"its last snapshot (generation {snap.generation})", snap.generation, snap.stats,
                     snap.hostname == socket.gethostname())


def _n(count: int, what: str) -> str:
    return f"{count} {what}" if count == 1 else f"{count} {what}s"


CONFIRM = "sync once with --confirm-source"


class SyncRun:
    """One sync of the directory ``src`` to ``dest``, as ``options`` say; ``run()`` once.

    :param state: an open state cache to use instead of the one in ``options.cache_dir`` (the caller
        keeps and closes it); ignored when ``options.use_state`` is false.
    :param progress: called with the byte count of each chunk read, on the calling thread.  An
        exception it raises (the daemon's ``Cancelled``) aborts the run: nothing is committed.
    """

    def __init__(self, src: str, dest: Destination, options: SyncOptions, *, state: StateCache | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        if not isinstance(options, SyncOptions):
            raise TypeError(f"options must be SyncOptions, not {type(options).__name__}")
        if progress is not None and not callable(progress):
            raise TypeError("progress must be callable")
        self.src = os.path.abspath(src)
        self.dest = dest
        self.options = options
        self._given_state = state
        self._progress = progress
        self._state: StateCache | None = None
        self._pipe: Pipeline | None = None
        self._chunker: Chunker | None = None  # dest.chunker(), for the run
        self._started = False
        self.report = SyncReport(dry_run=options.dry_run)
        self._builder: TreeBuilder | None = None if options.dry_run else TreeBuilder(dest)
        self._dry_new: set[bytes] = set()  # dry run: the ids counted new (each counted once)
        # Hard links: only the first path of an inode with st_nlink > 1 (what a later link_to names) is kept,
        # so memory follows the hard-linked files, not the tree.
        self._file_chunks: dict[str, tuple[tuple[bytes, ...], int]] = {}  # path -> (chunks, size)
        self._stored_ok: set[str] = set()  # of those, the files in the snapshot (a link to any other is re-read)
        self._link_targets: set[str] = set()  # first paths of inodes with st_nlink > 1

    # --- the run ------------------------------------------------------------------
    def run(self) -> SyncReport:
        """Store ``src`` as a new snapshot of ``options.source`` at ``dest``.

        :returns: the report; ``report.warnings`` lists files that were skipped and the destination's warnings.
        :raises SourceVanished: the source looks vanished or replaced (see the module docstring);
            nothing is committed.
        :raises ReplicatorError: when the destination fails; nothing is committed then.
        """
        if self._started:
            raise RuntimeError("a SyncRun runs once; make a new one")
        self._started = True
        if not os.path.isdir(self.src):
            raise FileNotFoundError(f"source {self.src} is not a directory")
        owned = self._open_state()
        try:
            root = source_root(self.src)
            ref = None if self.options.confirm_source else self._reference()
            self._check_root(root, ref)
            tree = self._store_tree()
            self._check_count(ref)
            if self.options.dry_run:
                self._finish_dry_run()
            else:
                self._commit(tree, root)
        finally:
            if owned:
                self._state.close()  # type: ignore[union-attr]
        return self.report

    def _open_state(self) -> bool:
        """:returns: whether the run opened the state cache (and so closes it)."""
        opts = self.options
        if not opts.use_state:
            return False
        if self._given_state is not None:
            self._state = self._given_state
            return False
        if opts.cache_dir is None:
            return False
        path = state_path(opts.cache_dir, self.dest.id, opts.source)
        self._state = StateCache.open_read_only(path) if opts.dry_run else StateCache(path)
        return self._state is not None

    def _store_tree(self) -> bytes:
        """Walk, read and store every entry; :returns: the root tree id (nothing committed yet)."""
        dest = self.dest
        self._chunker = dest.chunker()
        # A dry run compresses nothing: every chunk comes back as held, and _on_chunk asks the destination.
        known = (lambda _id: True) if self.options.dry_run else dest.has_blob
        self._pipe = Pipeline(dest.chunk_hasher, known, dest.compression_level, self._consume,
                              workers=self.options.workers)
        try:
            for item in walk(self.src, selection=self.options.selection(), on_error=self._warn,
                             on_excluded=self._left_out):
                self._visit(item)
            self._pipe.drain()
            return self._builder.finish() if self._builder is not None else b""
        finally:
            self._pipe.close()

    def _commit(self, tree: bytes, root: SourceRoot) -> None:
        r = self.report
        stats = {"files": r.files, "dirs": r.dirs, "symlinks": r.symlinks, "bytes": r.bytes_total, **root.stats()}
        r.snapshot = self.dest.commit_snapshot(self.options.source, tree, stats,
                                               skip_unchanged=not self.options.always_commit)
        r.committed = self.dest.committed
        r.unchanged = not r.committed
        if self._state is not None:  # unchanged too: its rows name chunks of the latest snapshot's tree
            self._state.remember_snapshot(r.snapshot.id, r.snapshot.generation, stats)
            self._state.commit()
            self._state.forget_unseen()
        r.warnings.extend((DESTINATION, message) for message in self.dest.warnings)
        r.destination_stats = dict(self.dest.stats)

    def _finish_dry_run(self) -> None:
        self.report.warnings.extend((DESTINATION, message) for message in self.dest.warnings)
        self.report.destination_stats = dict(self.dest.stats)

    # --- has the source vanished? ---------------------------------------------------
    def _reference(self) -> Reference | None:
        cached = self._state.last_snapshot() if self._state is not None else None
        return choose_reference(latest_snapshot(self.dest, self.options.source), cached)

    def _refuse(self, reason: str, what: str, hint: str) -> SourceVanished:
        return SourceVanished(reason, f"source {self.src} {what}; nothing committed: {hint}")

    def _check_root(self, root: SourceRoot, ref: Reference | None) -> None:
        """Before the walk: the marker, then (unless confirmed) the root against the reference."""
        marker = self.options.require_marker
        if marker is not None and not os.path.lexists(os.path.join(self.src, marker)):
            raise self._refuse("marker", f"has no {marker} (the required marker): not mounted, or not the "
                               f"volume it should be", f"mount the source, or create {marker} in it if this "
                               "directory is the right one")
        if ref is None:
            return
        had = ref.count("files") + ref.count("dirs") + ref.count("symlinks")
        if root.list_error is not None and had:
            raise self._refuse("unreadable", f"cannot be listed ({root.list_error}), but {ref.what} had "
                               f"{_n(had, 'entry')}", "fix access to it, or if it is to be committed empty, "
                               + CONFIRM)
        if ref.same_host:
            self._check_filesystem(root, ref)
        if root.listed is False and had:
            held = _n(ref.count("files"), "file") if ref.count("files") else _n(had, "entry")
            raise self._refuse("empty", f"is empty, but {ref.what} had {held} (unmounted?)",
                               "mount the source, or if it is really empty now, " + CONFIRM)

    def _check_filesystem(self, root: SourceRoot, ref: Reference) -> None:
        hint = "mount the right volume, or if this is the source now, " + CONFIRM
        was_mount, was_fs, was_dev = (ref.stats.get(k) for k in ("root_mount", "root_fs", "root_dev"))
        if was_mount in (0, 1) and bool(was_mount) != root.mount:
            if was_mount:
                raise self._refuse("filesystem", f"is no longer a mount point (it was at {ref.what}: "
                                   "unmounted?)", hint)
            raise self._refuse("filesystem", f"is now a mount point (it was not at {ref.what}: another volume "
                               "mounted over it?)", hint)
        if isinstance(was_fs, str) and root.fs is not None:
            if was_fs != root.fs:
                raise self._refuse("filesystem", f"is on another filesystem than at {ref.what} "
                                   f"(now {root.fs!r}, was {was_fs!r})", hint)
        elif type(was_dev) is int and was_dev != root.dev:
            raise self._refuse("filesystem", f"is on another filesystem than at {ref.what} "
                               f"(device {root.dev:#x}, was {was_dev:#x})", hint)

    def _check_count(self, ref: Reference | None) -> None:
        """After the walk, before the commit: no more than ``max_shrink`` of the files lost."""
        if ref is None:
            return
        before, now, limit = ref.count("files"), self.report.files, self.options.max_shrink
        if before and (before - now) / before > limit:
            raise self._refuse("shrunk", f"has {_n(now, 'file')}, {(before - now) / before:.0%} fewer than the "
                               f"{_n(before, 'file')} of {ref.what} (at most {limit:.0%} may go at once)",
                               "if they were deleted on purpose, " + CONFIRM + " (or allow more with --max-shrink)")

    def _warn(self, path: str, message: str) -> None:
        self.report.warnings.append((path, message))

    def _left_out(self, path: str, why: str, what: str) -> None:
        r = self.report
        if why == REASON_PATTERN:
            r.excluded += 1
            reason = f"matches {what!r}"
        elif why == REASON_TAGGED:
            r.excluded_tagged += 1
            reason = f"holds {what}"
        elif why == REASON_MOUNT:
            r.mounts_not_crossed += 1
            reason = "another filesystem: recorded as an empty directory"
        else:
            raise ValueError(f"walk: unknown reason {why!r} for leaving out {path!r}")
        if len(r.excluded_paths) < EXCLUDED_LISTED:
            r.excluded_paths.append((path, reason))

    # --- per entry (the caller's thread) ------------------------------------------
    def _visit(self, item: WalkItem) -> None:
        entry = item.entry
        if entry.kind == KIND_FILE:
            if entry.link_to and entry.link_to in self._stored_ok:
                self._pipe.submit(EntryEvent(entry))  # type: ignore[union-attr]
                return
            target = item.nlink > 1
            if entry.link_to:  # its first path is not in the snapshot: read it, and let later links name it
                entry = replace(entry, link_to="")
            if target:
                self._link_targets.add(entry.path)
            cached = self._unchanged(item)
            if cached is not None:
                self.report.files_unchanged += 1
                self._pipe.submit(EntryEvent(replace(entry, chunks=cached)))  # type: ignore[union-attr]
                stored = True
            else:
                stored = self._read_file(entry, item)
            if stored and target:
                self._stored_ok.add(entry.path)
        elif entry.kind in (KIND_DIR, KIND_SYMLINK):
            self._pipe.submit(EntryEvent(entry))  # type: ignore[union-attr]

    def _unchanged(self, item: WalkItem) -> tuple[bytes, ...] | None:
        """Chunks from the state cache when the walk's lstat shows the file unchanged
        and every chunk is still stored: the file is then not even opened."""
        state = self._state
        if state is None:
            return None
        cached = state.lookup(item.entry.path, item.key)
        if cached is None or not all(self.dest.has_blob(c) for c in cached):
            return None
        state.keep(item.entry.path)
        return cached

    def _read_file(self, entry: Entry, item: WalkItem) -> bool:
        """Chunk the file into the pipeline, again if it changed meanwhile.  :returns: whether it is stored."""
        pipe = self._pipe
        assert pipe is not None
        for _attempt in range(TORN_RETRIES):
            try:
                fd = item.open()  # O_NOFOLLOW; past PATH_MAX relative to the walk's directory (sync/walk.py)
            except OSError as exc:
                self._warn(entry.path, f"cannot open: {exc.strerror}")
                return False
            with SparseReader(fd) as f:  # holes read as zeros without reading the disk (sync/sparse.py)
                st0 = os.fstat(fd)
                if not stat.S_ISREG(st0.st_mode):
                    self._warn(entry.path, "is no longer a regular file")
                    return False
                f.without_holes(st0)
                key = stat_key(st0)
                meta = replace(entry, size=st0.st_size, mtime_ns=st0.st_mtime_ns, mode=stat.S_IMODE(st0.st_mode),
                               uid=st0.st_uid, gid=st0.st_gid, link_to="")
                job = FileJob(meta, key, known=self._state is not None and self._state.known(entry.path))
                n = 0
                try:
                    assert self._chunker is not None
                    for chunk in self._chunker.chunks(f, st0.st_size):
                        pipe.submit_chunk(job, chunk)
                        n += len(chunk)
                        if self._progress:
                            self._progress(len(chunk))
                    st1 = os.fstat(fd)
                except OSError as exc:
                    self._warn(entry.path, f"read error: {exc.strerror}")
                    return False
                self.report.bytes_read += n
            if stat_key(st1) == key and n == st0.st_size:
                pipe.submit(FileDone(job))
                return True
            pipe.drain()  # the torn attempt's chunks are stored but never referenced
        self._warn(entry.path, f"changed while being read, {TORN_RETRIES} times; left out of this snapshot")
        return False

    # --- the pipeline's consumer (in submission order) ----------------------------
    def _consume(self, event: object) -> None:
        match event:
            case ChunkEvent():
                self._on_chunk(event)
            case FileDone():
                self._on_file_done(event)
            case EntryEvent():
                self._on_entry(event)
            case _:
                raise TypeError(f"sync pipeline: unknown event {type(event).__name__}")

    def _on_chunk(self, event: ChunkEvent) -> None:
        res, report = event.result, self.report
        if self.options.dry_run:
            if res.id not in self._dry_new and not self.dest.has_blob(res.id):
                self._dry_new.add(res.id)
                report.chunks_new += 1
                report.bytes_new += res.raw_len
        elif res.payload is not None and self.dest.store_blob(BLOB_DATA, res.id, res.method, res.payload,
                                                              res.raw_len):
            report.chunks_new += 1
            report.bytes_new += res.raw_len
        report.chunks_total += 1
        event.job.chunks.append(res.id)

    def _on_file_done(self, event: FileDone) -> None:
        job = event.job
        entry = replace(job.entry, chunks=tuple(job.chunks))
        if self._state is not None and not self.options.dry_run:
            self._state.record(entry.path, job.key, entry.chunks)
        if job.known:
            self.report.files_changed += 1
        else:
            self.report.files_new += 1
        self._add(entry)

    def _on_entry(self, event: EntryEvent) -> None:
        entry = event.entry
        if entry.link_to:
            chunks, size = self._file_chunks[entry.link_to]
            entry = replace(entry, chunks=chunks, size=size)
            self.report.hardlinks += 1
        self._add(entry)

    def _add(self, entry: Entry) -> None:
        report = self.report
        if entry.kind == KIND_FILE:
            if entry.path in self._link_targets:
                self._file_chunks[entry.path] = (entry.chunks, entry.size)
            report.files += 1
            report.bytes_total += entry.size
        elif entry.kind == KIND_DIR:
            report.dirs += 1
        else:
            report.symlinks += 1
        if self._builder is not None:
            self._builder.add(entry)


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
"""
from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING

from replicator.constants import BLOB_DATA
from replicator.format.entry import KIND_DIR, KIND_FILE, KIND_SYMLINK, Entry
from replicator.format.snapshot import Snapshot
from replicator.format.tree import TreeItem
from replicator.sync.options import SyncOptions
from replicator.sync.pipeline import ChunkEvent, ChunkResult, Pipeline
from replicator.sync.state import StateCache, state_path
from replicator.sync.walk import WalkItem, stat_key, walk

if TYPE_CHECKING:  # annotations only: the engine needs no module of the destination at run time
    from replicator.core.chunker import Chunker
    from replicator.repo.writer import Writer as Destination

__all__ = ["ChunkEvent", "ChunkResult", "DESTINATION", "EntryEvent", "FileDone", "FileJob", "SyncOptions",
           "SyncReport", "SyncRun", "TORN_RETRIES", "TreeBuilder"]

TORN_RETRIES = 3
DESTINATION = "(destination)"  # the path of a report warning that comes from the destination, not a source file


@dataclass
class SyncReport:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes_total: int = 0  # plaintext bytes of all files in the snapshot
    bytes_read: int = 0  # bytes actually read from the source (unchanged files are not)
    files_unchanged: int = 0  # taken from the state cache without reading
    chunks_total: int = 0
    chunks_new: int = 0
    bytes_new: int = 0  # plaintext bytes of new chunks
    # (path, message): source files skipped, then the destination's (path DESTINATION)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    destination_stats: dict = field(default_factory=dict)  # dest.stats after the commit (packs_written, ...)
    snapshot: Snapshot | None = None

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)
             if f.name not in ("warnings", "destination_stats", "snapshot")}
        d["warnings"] = [{"path": p, "message": m} for p, m in self.warnings]
        d["destination_stats"] = dict(self.destination_stats)
        if self.snapshot:
            d["snapshot"] = self.snapshot.id
            d["generation"] = self.snapshot.generation
        return d


@dataclass(eq=False, slots=True)
class FileJob:
    """A file being read: its metadata from the open descriptor, its stat key, its chunk ids so far."""

    entry: Entry
    key: tuple[int, int, int, int]
    chunks: list[bytes] = field(default_factory=list)


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
        self.report = SyncReport()
        self._builder = TreeBuilder(dest)
        self._file_chunks: dict[str, tuple[tuple[bytes, ...], int]] = {}  # path -> (chunks, size), for hard links
        self._stored_ok: set[str] = set()  # files in the snapshot (a hard link to any other is re-read)

    # --- the run ------------------------------------------------------------------
    def run(self) -> SyncReport:
        """Store ``src`` as a new snapshot of ``options.source`` at ``dest``.

        :returns: the report; ``report.warnings`` lists files that were skipped and the destination's warnings.
        :raises ReplicatorError: when the destination fails; nothing is committed then.
        """
        if self._started:
            raise RuntimeError("a SyncRun runs once; make a new one")
        self._started = True
        if not os.path.isdir(self.src):
            raise FileNotFoundError(f"source {self.src} is not a directory")
        owned = self._open_state()
        try:
            root = self._store_tree()
            self._commit(root)
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
        self._state = StateCache(state_path(opts.cache_dir, self.dest.id, opts.source))
        return True

    def _store_tree(self) -> bytes:
        """Walk, read and store every entry; :returns: the root tree id (nothing committed yet)."""
        dest = self.dest
        self._chunker = dest.chunker()
        self._pipe = Pipeline(dest.chunk_hasher, dest.has_blob, dest.compression_level, self._consume,
                              workers=self.options.workers)
        try:
            for item in walk(self.src, excludes=self.options.excludes, on_error=self._warn):
                self._visit(item)
            self._pipe.drain()
            return self._builder.finish()
        finally:
            self._pipe.close()

    def _commit(self, root: bytes) -> None:
        r = self.report
        stats = {"files": r.files, "dirs": r.dirs, "symlinks": r.symlinks, "bytes": r.bytes_total}
        r.snapshot = self.dest.commit_snapshot(self.options.source, root, stats)
        if self._state is not None:
            self._state.commit()
            self._state.forget_unseen()
        r.warnings.extend((DESTINATION, message) for message in self.dest.warnings)
        r.destination_stats = dict(self.dest.stats)

    def _warn(self, path: str, message: str) -> None:
        self.report.warnings.append((path, message))

    # --- per entry (the caller's thread) ------------------------------------------
    def _visit(self, item: WalkItem) -> None:
        entry = item.entry
        if entry.kind == KIND_FILE:
            if entry.link_to and entry.link_to in self._stored_ok:
                self._pipe.submit(EntryEvent(entry))  # type: ignore[union-attr]
                self._stored_ok.add(entry.path)
                return
            entry = replace(entry, link_to="")
            cached = self._unchanged(item)
            if cached is not None:
                self.report.files_unchanged += 1
                self._pipe.submit(EntryEvent(replace(entry, chunks=cached)))  # type: ignore[union-attr]
                self._stored_ok.add(entry.path)
            elif self._read_file(entry):
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

    def _read_file(self, entry: Entry) -> bool:
        """Chunk the file into the pipeline, again if it changed meanwhile.  :returns: whether it is stored."""
        path = os.path.join(self.src, entry.path)
        pipe = self._pipe
        assert pipe is not None
        for _attempt in range(TORN_RETRIES):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                self._warn(entry.path, f"cannot open: {exc.strerror}")
                return False
            with os.fdopen(fd, "rb", buffering=0) as f:
                st0 = os.fstat(fd)
                if not stat.S_ISREG(st0.st_mode):
                    self._warn(entry.path, "is no longer a regular file")
                    return False
                key = stat_key(st0)
                meta = replace(entry, size=st0.st_size, mtime_ns=st0.st_mtime_ns, mode=stat.S_IMODE(st0.st_mode),
                               uid=st0.st_uid, gid=st0.st_gid, link_to="")
                job = FileJob(meta, key)
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
        if res.payload is not None and self.dest.store_blob(BLOB_DATA, res.id, res.method, res.payload, res.raw_len):
            report.chunks_new += 1
            report.bytes_new += res.raw_len
        report.chunks_total += 1
        event.job.chunks.append(res.id)

    def _on_file_done(self, event: FileDone) -> None:
        job = event.job
        entry = replace(job.entry, chunks=tuple(job.chunks))
        if self._state is not None:
            self._state.record(entry.path, job.key, entry.chunks)
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
            self._file_chunks[entry.path] = (entry.chunks, entry.size)
            report.files += 1
            report.bytes_total += entry.size
        elif entry.kind == KIND_DIR:
            report.dirs += 1
        else:
            report.symlinks += 1
        self._builder.add(entry)


"""Sync: walk a source tree and commit it as one snapshot at a destination.

Order of durability (the destination enforces it): packs, index, snapshot.
The snapshot is written last, so a kill at any moment leaves the previous
snapshot intact, and the chunks already stored are found by the next run and
not stored again.  A file that changes while it is read (its size, mtime,
ctime or inode differ before and after) is read again, up to
``TORN_RETRIES`` times, and otherwise left out of the snapshot with a
warning: never committed torn.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from replicator.constants import BLOB_DATA
from replicator.repo.entry import KIND_DIR, KIND_FILE, KIND_SYMLINK, Entry
from replicator.repo.snapshot import Snapshot
from replicator.repo.tree import TreeItem
from replicator.sync.destination import Destination
from replicator.sync.pipeline import ChunkResult, Pipeline
from replicator.sync.state import StateCache
from replicator.sync.walk import WalkItem, stat_key, walk

TORN_RETRIES = 3


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
    warnings: list[tuple[str, str]] = field(default_factory=list)
    snapshot: Snapshot | None = None

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("warnings", "snapshot")}
        d["warnings"] = [{"path": p, "message": m} for p, m in self.warnings]
        if self.snapshot:
            d["snapshot"] = self.snapshot.id
            d["generation"] = self.snapshot.generation
        return d


class _FileJob:
    __slots__ = ("entry", "key", "chunks")

    def __init__(self, entry: Entry, key: tuple[int, int, int, int]) -> None:
        self.entry = entry
        self.key = key
        self.chunks: list[bytes] = []


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


def sync(src: str, dest: Destination, source: str, *, state: StateCache | None = None,
         excludes: Sequence[str] = (), progress: Callable[[int], None] | None = None,
         workers: int | None = None) -> SyncReport:
    """Store ``src`` as a new snapshot of ``source`` at ``dest``.

    :returns: the report; ``report.warnings`` lists files that were skipped.
    :raises ReplicatorError: when the destination fails; nothing is committed then.
    """
    src = os.path.abspath(src)
    if not os.path.isdir(src):
        raise FileNotFoundError(f"source {src} is not a directory")
    report = SyncReport()
    builder = TreeBuilder(dest)
    chunker = dest.chunker()
    file_chunks: dict[str, tuple[tuple[bytes, ...], int]] = {}

    def consume(tag: tuple, item: object) -> None:
        kind, job = tag
        if kind == "chunk":
            res: ChunkResult = item  # type: ignore[assignment]
            if res.payload is not None and dest.store_blob(BLOB_DATA, res.id, res.method, res.payload, res.raw_len):
                report.chunks_new += 1
                report.bytes_new += res.raw_len
            report.chunks_total += 1
            job.chunks.append(res.id)
            return
        if kind == "file":
            entry = replace(job.entry, chunks=tuple(job.chunks))
            if state is not None:
                state.record(entry.path, job.key, entry.chunks)
        else:
            entry = item  # type: ignore[assignment]
            if entry.link_to:
                chunks, size = file_chunks[entry.link_to]
                entry = replace(entry, chunks=chunks, size=size)
                report.hardlinks += 1
        if entry.kind == KIND_FILE:
            file_chunks[entry.path] = (entry.chunks, entry.size)
            report.files += 1
            report.bytes_total += entry.size
        elif entry.kind == KIND_DIR:
            report.dirs += 1
        else:
            report.symlinks += 1
        builder.add(entry)

    pipe = Pipeline(dest.chunk_hasher, dest.has_blob, dest.compression_level, consume, workers=workers)
    stored_ok: set[str] = set()

    def warn(path: str, message: str) -> None:
        report.warnings.append((path, message))

    def read_file(entry: Entry) -> bool:
        path = os.path.join(src, entry.path)
        for _attempt in range(TORN_RETRIES):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                warn(entry.path, f"cannot open: {exc.strerror}")
                return False
            with os.fdopen(fd, "rb", buffering=0) as f:
                st0 = os.fstat(fd)
                if not stat.S_ISREG(st0.st_mode):
                    warn(entry.path, "is no longer a regular file")
                    return False
                key = stat_key(st0)
                meta = replace(entry, size=st0.st_size, mtime_ns=st0.st_mtime_ns, mode=stat.S_IMODE(st0.st_mode),
                               uid=st0.st_uid, gid=st0.st_gid, link_to="")
                job = _FileJob(meta, key)
                n = 0
                try:
                    for chunk in chunker.chunks(f, st0.st_size):
                        pipe.submit_chunk(("chunk", job), chunk)
                        n += len(chunk)
                        if progress:
                            progress(len(chunk))
                    st1 = os.fstat(fd)
                except OSError as exc:
                    warn(entry.path, f"read error: {exc.strerror}")
                    return False
                report.bytes_read += n
            if stat_key(st1) == key and n == st0.st_size:
                pipe.submit_event(("file", job), None)
                return True
            pipe.drain()  # the torn attempt's chunks are stored but never referenced
        warn(entry.path, f"changed while being read, {TORN_RETRIES} times; left out of this snapshot")
        return False

    def unchanged(item: WalkItem) -> tuple[bytes, ...] | None:
        """Chunks from the state cache when the walk's lstat shows the file unchanged
        and every chunk is still stored: the file is then not even opened."""
        if state is None:
            return None
        cached = state.lookup(item.entry.path, item.key)
        if cached is None or not all(dest.has_blob(c) for c in cached):
            return None
        state.keep(item.entry.path)
        return cached

    try:
        for item in walk(src, excludes=excludes, on_error=warn):
            entry = item.entry
            if entry.kind == KIND_FILE:
                if entry.link_to and entry.link_to in stored_ok:
                    pipe.submit_event(("entry", None), entry)
                    stored_ok.add(entry.path)
                    continue
                entry = replace(entry, link_to="")
                cached = unchanged(item)
                if cached is not None:
                    report.files_unchanged += 1
                    pipe.submit_event(("entry", None), replace(entry, chunks=cached))
                    stored_ok.add(entry.path)
                elif read_file(entry):
                    stored_ok.add(entry.path)
            elif entry.kind in (KIND_DIR, KIND_SYMLINK):
                pipe.submit_event(("entry", None), entry)
        pipe.drain()
        root = builder.finish()
    finally:
        pipe.close()
    stats = {"files": report.files, "dirs": report.dirs, "symlinks": report.symlinks, "bytes": report.bytes_total}
    report.snapshot = dest.commit_snapshot(source, root, stats)
    if state is not None:
        state.commit()
        state.forget_unseen()
    return report

"""Seeds: restore into a tree that already holds most of the data, fetching only what it lacks.

Failback after a failover restores the other site's newest snapshot into the
old primary's existing tree, over the WAN.  With ``restore --delta`` a file
whose size and modification time already match the snapshot is left as it
is (the quick check rsync makes; restore/writer.py does it, relative to the
directory it writes in), and any other file is rebuilt from the
chunks its current version at the same path already holds, found by chunking
that file with the repository's own chunker and keyed ids (casync's seeds),
plus the chunks fetched from the repository.  A chunk read from a seed is
used only if it hashes to the id the snapshot names, so a seed that changed
meanwhile, or a hostile link in the target, can only cost a fetch.

Memory: the ids of one file at a time (one per chunk of the file being
restored), never of the whole tree.

Must never: use seed bytes whose keyed id does not match, or write anything
(restore/writer.py does).
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from replicator.format.entry import Entry


class Seeds:
    """``read_file(entry)`` for restore/writer.py, seeded from the files in ``target`` (the writer itself keeps
    files that pass the quick check: ``restore(..., keep_unchanged=True)``)."""

    def __init__(self, repo, target: str) -> None:
        self._repo = repo
        self._target = target
        self._chunker = repo.chunker()
        self.chunks_seeded = 0
        self.chunks_fetched = 0
        self.bytes_seeded = 0

    def _stat(self, entry: Entry) -> os.stat_result | None:
        try:
            st = os.lstat(os.path.join(self._target, entry.path))
        except OSError:
            return None
        return st if stat.S_ISREG(st.st_mode) else None

    def _seed_of(self, entry: Entry) -> tuple[int, dict[bytes, tuple[int, int]]] | None:
        """(an open descriptor, chunk id -> (offset, length)) of the file now at the entry's path."""
        if self._stat(entry) is None:
            return None
        try:
            fd = os.open(os.path.join(self._target, entry.path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        wanted, offset = set(entry.chunks), 0
        found: dict[bytes, tuple[int, int]] = {}
        try:
            with os.fdopen(os.dup(fd), "rb") as f:
                for chunk in self._chunker.chunks(f, os.fstat(fd).st_size):
                    cid = self._repo.chunk_hasher(chunk)
                    if cid in wanted:
                        found.setdefault(cid, (offset, len(chunk)))
                    offset += len(chunk)
        except OSError:
            os.close(fd)
            return None
        return fd, found

    def read_file(self, entry: Entry) -> Iterator[bytes]:
        seed = self._seed_of(entry) if entry.chunks else None
        try:
            for cid in entry.chunks:
                data = None
                if seed is not None and cid in seed[1]:
                    offset, length = seed[1][cid]
                    try:
                        data = os.pread(seed[0], length, offset)
                    except OSError:
                        data = None
                    if data is not None and self._repo.chunk_hasher(data) != cid:
                        data = None  # changed since it was chunked: fetch instead
                if data is None:
                    self.chunks_fetched += 1
                    yield self._repo.read_blob(cid)
                else:
                    self.chunks_seeded += 1
                    self.bytes_seeded += len(data)
                    yield data
        finally:
            if seed is not None:
                os.close(seed[0])

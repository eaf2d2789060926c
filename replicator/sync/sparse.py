"""SparseReader: read a source file without reading its holes.

A sparse file (a VM disk image, a database file preallocated with truncate)
can be mostly holes: ranges the file system has no blocks for, which read as
zeros.  This reader asks the file system where the data is (``lseek`` with
``SEEK_DATA`` / ``SEEK_HOLE``) and fills the holes with zeros itself, so a
1 GiB file holding 20 KiB of data costs 20 KiB of reads, not 1 GiB.  The
bytes it returns are exactly those a plain read returns, so chunk boundaries
and ids never depend on how a file is stored.

It owns no policy: it never decides anything about the file (the engine's
stat key before and after the read still catches a file that changes, also
one truncated while a hole is being synthesised), never prints and never
raises for a file system without ``SEEK_DATA`` (it then reads plainly).
"""
from __future__ import annotations

import errno
import os

#: errno values meaning "this file system cannot say where the holes are": read plainly.
_NO_SEEK_DATA = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ESPIPE})
_ZEROS = memoryview(bytes(1 << 20))  # copied into the caller's buffer for holes; never written
_EVERYTHING = 1 << 63  # "data up to the end" when holes cannot be found


class SparseReader:
    """A read-only binary file object over ``fd`` (which it owns and closes) whose holes read as zeros.

    Provides what the chunker and the engine use: ``readinto``, ``fileno``,
    ``close`` and the context manager protocol.  Reads are positional
    (``preadv``), so the descriptor's own offset does not matter.
    """

    __slots__ = ("_fd", "_pos", "_hole_end", "_data_end", "_plain")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pos = 0
        self._hole_end = 0  # [pos, hole_end) is known to be a hole
        self._data_end = 0  # [pos, data_end) is known to be data (or unknown, when plain)
        self._plain = False  # the file system cannot find holes

    def fileno(self) -> int:
        return self._fd

    def without_holes(self, st: os.stat_result) -> None:
        """Read plainly, with no ``lseek``, when ``st`` (the file's fstat) shows as many blocks as bytes:
        such a file has no hole, or (blocks preallocated past its end) little to skip, and a tree of small
        files saves two calls per file.  Either way the bytes are exact: a hole reads as zeros."""
        if st.st_blocks * 512 >= st.st_size:
            self._plain = True

    def readinto(self, buffer: memoryview | bytearray) -> int:
        """Fill the front of ``buffer``; :returns: the byte count, 0 at the end of the file.

        :raises OSError: a read error (a hole never fails).
        """
        view = memoryview(buffer).cast("B")
        if not view:
            return 0
        pos = self._pos
        if pos >= self._hole_end and pos >= self._data_end and not self._locate():
            return 0
        if pos < self._hole_end:
            n = min(len(view), self._hole_end - pos)
            done = 0
            while done < n:
                k = min(n - done, len(_ZEROS))
                view[done:done + k] = _ZEROS[:k]
                done += k
            self._pos = pos + n
            return n
        n = os.preadv(self._fd, [view[:min(len(view), self._data_end - pos)]], pos)
        if n == 0:  # the file ended before the data region did (it shrank): the end, as a plain read says
            self._data_end = pos
        self._pos = pos + n
        return n

    def _locate(self) -> bool:
        """Find what starts at the current position.  :returns: False at the end of the file."""
        pos = self._pos
        if self._plain:
            self._data_end = _EVERYTHING
            return True
        try:
            data = os.lseek(self._fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data at or after pos: a hole up to the end, or the end
                size = os.fstat(self._fd).st_size
                self._hole_end = size
                return size > pos
            if exc.errno in _NO_SEEK_DATA:
                self._plain = True
                self._data_end = _EVERYTHING
                return True
            raise
        if data > pos:
            self._hole_end = data
            return True
        try:
            self._data_end = os.lseek(self._fd, pos, os.SEEK_HOLE)  # the end of the file counts as a hole
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # truncated to before pos since SEEK_DATA: the end
                return False
            raise
        return True

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> SparseReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

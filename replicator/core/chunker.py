"""Content-defined chunking: drives the native scan in ``replicator._ext.cdc``.

Owns buffering, carry-over of the incomplete tail, and the keyed gear table.
The byte scan itself (and its spec) lives in ext/cdc.pyx and
tests/reference/cdc_ref.py; docs/CHUNKING.md describes both.

Core-layer rules: this module never opens files, reads clocks or logs.  It
takes file objects given to it and yields bytes.
"""
from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterator, Sequence
from typing import Protocol

from replicator._ext import cdc
from replicator.core.params import ChunkerParams

GEAR_KEY_SIZE = 32
GEAR_DOMAIN = b"replicator/gear/v1\x00"
"""Domain separation prefix of the gear table derivation.  Changing it (or the
derivation) changes every repository's chunk boundaries: no dedup with old data."""

MIN_BUFFER_SIZE = 8 * 1024 * 1024


class Readable(Protocol):
    """A binary file object with ``readinto`` (e.g. ``open(path, "rb")``, ``io.BytesIO``)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


def gear_table(gear_key: bytes) -> array:
    """The repository's keyed gear table.

    ``stream = SHAKE-256("replicator/gear/v1\\x00" || gear_key)`` (2048 bytes);
    entry ``i`` is ``stream[8*i : 8*i+8]`` read as a little-endian uint64.

    :param gear_key: exactly 32 bytes of key material (a subkey of the repository key).
    :returns: ``array('Q')`` of 256 entries.
    :raises ValueError: if ``gear_key`` is not 32 bytes.
    """
    if not isinstance(gear_key, (bytes, bytearray)) or len(gear_key) != GEAR_KEY_SIZE:
        raise ValueError(f"gear key must be {GEAR_KEY_SIZE} bytes")
    stream = hashlib.shake_256(GEAR_DOMAIN + bytes(gear_key)).digest(2048)
    return array("Q", (int.from_bytes(stream[8 * i:8 * i + 8], "little") for i in range(256)))


def _as_table(gear: Sequence[int] | array) -> array:
    table = array("Q", gear)
    if len(table) != 256:
        raise ValueError(f"gear table must have 256 entries, got {len(table)}")
    return table


class Chunker:
    """Splits byte streams into content-defined chunks.

    Boundaries depend only on the content, the params and the gear table; never
    on how the input is split into reads.  Thread-safe for concurrent use as
    long as each call gets its own file object (no mutable state on self).
    """

    __slots__ = ("params", "_gear", "_args", "buffer_size")

    def __init__(self, params: ChunkerParams, gear: Sequence[int] | array) -> None:
        """:param params: chunk sizes.
        :param gear: a 256-entry uint64 table, usually :func:`gear_table` of the repo key.
        :raises ValueError: on a table that is not 256 entries.
        """
        self.params = params
        self._gear = _as_table(gear)
        self._args = (params.min_size, params.avg_size, params.max_size, self._gear)
        self.buffer_size = max(MIN_BUFFER_SIZE, 4 * params.max_size)

    def cut_points(self, data: bytes | bytearray | memoryview) -> list[int]:
        """:returns: the end offsets of the chunks of ``data`` (the last is ``len(data)``)."""
        return cdc.find_cuts(data, *self._args, True)

    def chunks_of(self, data: bytes | bytearray | memoryview) -> Iterator[bytes]:
        """Chunks of in-memory ``data``, each as ``bytes``."""
        view = memoryview(data).cast("B")
        start = 0
        for end in cdc.find_cuts(view, *self._args, True):
            yield bytes(view[start:end])
            start = end

    def chunks(self, f: Readable, size_hint: int | None = None) -> Iterator[bytes]:
        """Chunks of a binary file object, read with ``f.readinto``.

        Memory is bounded by ``buffer_size`` whatever the file size.  The buffer
        is filled completely (or to EOF) before each scan, so short reads cost
        no extra scanning.  ``size_hint`` (the file's size, when known) keeps
        the buffer small for small files; a file that turns out larger than its
        hint gets the full buffer, so the result never depends on the hint.

        :raises TypeError: if ``f.readinto`` returns None (non-blocking file with no data).
        """
        size = self.buffer_size
        if size_hint is not None and 0 <= size_hint < size - 1:
            size = max(size_hint + 1, 4096)
        buf = bytearray(size)
        view = memoryview(buf)
        filled = 0
        eof = False
        while not eof:
            while True:
                if filled == len(buf):
                    if len(buf) >= self.buffer_size:
                        break
                    buf = bytearray(self.buffer_size)  # larger than hinted: grow once
                    buf[:filled] = view[:filled]
                    view = memoryview(buf)
                n = f.readinto(view[filled:])
                if n is None:
                    raise TypeError("readinto returned None: non-blocking files are not supported")
                if n == 0:
                    eof = True
                    break
                filled += n
            start = 0
            for end in cdc.find_cuts(view[:filled], *self._args, eof):
                yield bytes(view[start:end])
                start = end
            # Carry the incomplete tail (< max_size <= len(buf) / 4) to the front.
            tail = filled - start
            if tail and start:
                buf[:tail] = view[start:filled]
            filled = tail

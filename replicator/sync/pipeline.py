"""Pipeline: chunks are hashed and compressed by worker threads, in order.

The engine's thread reads and chunks (the Cython scan releases the GIL);
workers compute the keyed id, skip chunks the destination already holds and
compress the new ones (BLAKE3 and zstd release the GIL); the engine's thread
takes results back in submission order, encrypts them into packs and builds
the trees.  At most ``max_in_flight`` chunks, and at most ``max_bytes`` of
chunk data (IN_FLIGHT_BYTES, 8 MiB: 32 chunks of the default average size),
are in the workers or waiting for the consumer, which bounds memory at about
twice that (each chunk and its compressed payload) whatever the chunk sizes.

The pipeline is a FIFO of typed events.  ``submit_chunk(job, data)`` becomes
a ``ChunkEvent(job, result)`` once the chunk is processed; any other event
(``submit(event)``) passes through unchanged.  The consumer receives every
event exactly once, in submission order, on the submitting thread, and
dispatches on its type (the engine's events are in sync/engine.py).
"""
from __future__ import annotations

import collections
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from replicator.core.compress import compress
from replicator.core.ids import IdHasher

INLINE_MAX = 64 * 1024  # chunks smaller than this are processed on the engine's thread
IN_FLIGHT_BYTES = 8 * 1024 * 1024  # chunk bytes queued for the workers at most (one chunk more when it is bigger)


@dataclass(frozen=True, slots=True)
class ChunkResult:
    id: bytes
    raw_len: int
    method: int = 0
    payload: bytes | None = None  # None: the destination already had it


@dataclass(frozen=True, slots=True)
class ChunkEvent:
    """A chunk of ``job`` (the submitter's, passed through untouched), hashed and maybe compressed."""

    job: Any
    result: ChunkResult


class _Pending:
    """A chunk still in a worker thread: it becomes a ChunkEvent when it reaches the head of the queue."""

    __slots__ = ("job", "future", "size")

    def __init__(self, job: Any, future: Future, size: int) -> None:
        self.job = job
        self.future = future
        self.size = size


def default_workers() -> int:
    """One core stays for the reading/chunking thread and the pack writer."""
    return max(1, min(8, (os.cpu_count() or 1) - 1))


class Pipeline:
    """FIFO of events; chunks become ChunkEvents, other events pass through in order."""

    def __init__(self, hasher: IdHasher, known: Callable[[bytes], bool], level: int,
                 consume: Callable[[Any], None], *, workers: int | None = None,
                 max_in_flight: int = 32, max_bytes: int = IN_FLIGHT_BYTES) -> None:
        self._hasher = hasher
        self._known = known
        self._level = level
        self._consume = consume
        self._pool = ThreadPoolExecutor(max_workers=workers or default_workers(), thread_name_prefix="chunk")
        self._queue: collections.deque[Any] = collections.deque()  # events, and _Pending chunks
        self._in_flight = 0
        self._max = max_in_flight
        self._bytes = 0  # of the chunks in flight
        self._max_bytes = max_bytes

    def _work(self, data: bytes) -> ChunkResult:
        chunk_id = self._hasher(data)
        if self._known(chunk_id):
            return ChunkResult(chunk_id, len(data))
        method, payload = compress(data, self._level)
        return ChunkResult(chunk_id, len(data), method, payload)

    def submit_chunk(self, job: Any, data: bytes) -> None:
        """Queue a chunk; the consumer gets ``ChunkEvent(job, result)`` in its turn."""
        if len(data) < INLINE_MAX:
            # Handing a small chunk to a thread costs more than hashing and
            # compressing it here (a queue, a future, two GIL hand-offs).
            self.submit(ChunkEvent(job, self._work(data)))
            return
        while self._in_flight >= self._max or (self._in_flight and self._bytes + len(data) > self._max_bytes):
            self._pop()
        self._queue.append(_Pending(job, self._pool.submit(self._work, data), len(data)))
        self._in_flight += 1
        self._bytes += len(data)

    @property
    def bytes_in_flight(self) -> int:
        """Bytes of the chunks submitted to the workers and not yet handed to the consumer."""
        return self._bytes

    def submit(self, event: Any) -> None:
        """Queue an event; the consumer gets it after everything submitted before it."""
        self._queue.append(event)
        if len(self._queue) > 4 * self._max:
            self._pop()

    def _pop(self) -> None:
        item = self._queue.popleft()
        if type(item) is _Pending:
            self._in_flight -= 1
            self._bytes -= item.size
            item = ChunkEvent(item.job, item.future.result())
        self._consume(item)

    def drain(self) -> None:
        """Hand every queued event to the consumer (waiting for the chunks in flight)."""
        while self._queue:
            self._pop()

    def close(self) -> None:
        """Drop what is still queued (nothing more reaches the consumer) and stop the workers."""
        for item in self._queue:
            if type(item) is _Pending:
                item.future.cancel()
        self._queue.clear()
        self._in_flight = 0
        self._bytes = 0
        self._pool.shutdown(wait=True, cancel_futures=True)

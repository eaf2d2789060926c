"""Pipeline: chunks are hashed and compressed by worker threads, in order.

The engine's thread reads and chunks (the Cython scan releases the GIL);
workers compute the keyed id, skip chunks the destination already holds and
compress the new ones (BLAKE3 and zstd release the GIL); the engine's thread
takes results back in submission order, encrypts them into packs and builds
the trees.  At most ``max_in_flight`` chunks are queued, which bounds memory
at roughly max_in_flight x the largest chunk.
"""
from __future__ import annotations

import collections
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Deque

from replicator.core.compress import compress
from replicator.core.ids import IdHasher


INLINE_MAX = 64 * 1024  # chunks smaller than this are processed on the engine's thread


@dataclass(frozen=True)
class ChunkResult:
    id: bytes
    raw_len: int
    method: int = 0
    payload: bytes | None = None  # None: the destination already had it


def default_workers() -> int:
    """One core stays for the reading/chunking thread and the pack writer."""
    return max(1, min(8, (os.cpu_count() or 1) - 1))


class Pipeline:
    """FIFO of events; chunks become futures, other events pass through in order."""

    def __init__(self, hasher: IdHasher, known: Callable[[bytes], bool], level: int,
                 consume: Callable[[Any, Any], None], *, workers: int | None = None,
                 max_in_flight: int = 32) -> None:
        self._hasher = hasher
        self._known = known
        self._level = level
        self._consume = consume
        self._pool = ThreadPoolExecutor(max_workers=workers or default_workers(), thread_name_prefix="chunk")
        self._queue: Deque[tuple[Any, Any]] = collections.deque()
        self._in_flight = 0
        self._max = max_in_flight

    def _work(self, data: bytes) -> ChunkResult:
        chunk_id = self._hasher(data)
        if self._known(chunk_id):
            return ChunkResult(chunk_id, len(data))
        method, payload = compress(data, self._level)
        return ChunkResult(chunk_id, len(data), method, payload)

    def submit_chunk(self, tag: Any, data: bytes) -> None:
        if len(data) < INLINE_MAX:
            # Handing a small chunk to a thread costs more than hashing and
            # compressing it here (a queue, a future, two GIL hand-offs).
            self._queue.append((tag, self._work(data)))
            if len(self._queue) > 4 * self._max:
                self._pop()
            return
        while self._in_flight >= self._max:
            self._pop()
        self._queue.append((tag, self._pool.submit(self._work, data)))
        self._in_flight += 1

    def submit_event(self, tag: Any, event: Any) -> None:
        self._queue.append((tag, event))
        if len(self._queue) > 4 * self._max:
            self._pop()

    def _pop(self) -> None:
        tag, item = self._queue.popleft()
        if isinstance(item, Future):
            self._in_flight -= 1
            item = item.result()
        self._consume(tag, item)

    def drain(self) -> None:
        while self._queue:
            self._pop()

    def close(self) -> None:
        for _tag, item in self._queue:
            if isinstance(item, Future):
                item.cancel()
        self._queue.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

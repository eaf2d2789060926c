"""Read-ahead across files for a restore: the blobs of the next small files are fetched, checked and
decompressed on another thread while the restorer writes the current one.

Why: ``Repository.read_blobs`` pipelines the blobs of one file, but a tree of many small files read
one file at a time pays one round trip per file over ``ssh://`` (and one pass through the storage
per file locally), and opening the blobs on the writing thread leaves the second core idle.  Here
the chunks of the next files go out in one pipelined round of up to ``BATCH_BLOBS`` blobs, on a
thread of their own, and two rounds are in flight at once (``ROUNDS_IN_FLIGHT``): one round's blobs are
checked and decompressed while the next round's answers travel.

Owns: the order (files are handed out in the order of ``entries``; a file the restorer never asks
for, e.g. one refused for its path, is dropped when a later one is asked for), the memory bound
(at most ``ahead_bytes`` of plaintext waiting, plus one batch), and the fall back to a direct read
for what it does not fetch (files above ``small_file``, whose own ``read_blobs`` already pipelines,
hard links, and every file of a batch whose round failed: the direct read then raises that file's
own error, and the others are read on their own).

It also walks ahead: ``entries`` may be a lazy walk of the snapshot (``Repository.walk_tree``), which
a thread of its own (``restore-walk``) runs while the restorer writes, and ``entries()`` hands the
restorer the same entries in the same order.  A restore no longer waits for the whole walk before its
first write (7,900 trees: 0.6 s locally, 1.0 s over ``ssh://`` on loopback); a walk that fails (a
damaged tree) ends ``entries()`` with that error where the walk met it.

Must never: hand a file another file's chunks, hold more than its bound, or lose an error (a file
whose data could not be read fails, by itself, when its turn comes; a walk's error reaches the restorer).
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from replicator.format.entry import KIND_FILE, Entry
from replicator.repo.repository import SPAN_GAP

SMALL_FILE = 1 << 20  # files up to this size are read ahead; larger ones stream through read_blobs
AHEAD_BYTES = 32 << 20  # plaintext waiting for the restorer, at most (plus one batch)
BATCH_BLOBS = 256  # blobs in one round (small files: mostly one blob each)
ROUNDS_IN_FLIGHT = 2  # rounds read at once: one is opened while the next one's answers travel
WALK_PUBLISH = 64  # entries the walk thread hands over at a time (each one while the restorer waits for it)
_DIRECT = object()  # read this file directly (its batch failed, or the prefetcher stopped)


class Prefetcher:
    """``read_file(entry)`` for ``restore/writer.restore``; use as a context manager (``close`` stops the thread).

    :param repo: anything with ``read_blobs(ids, ahead, gap) -> Iterator[bytes]`` (repo/repository.py), safe to
        call from two threads.
    :param entries: the entries the restore will be given, in the same order: a list, or a lazy walk that
        the ``restore-walk`` thread runs (then give the restorer ``entries()``).
    """

    def __init__(self, repo, entries: Iterable[Entry], *, small_file: int = SMALL_FILE,
                 ahead_bytes: int = AHEAD_BYTES, batch_blobs: int = BATCH_BLOBS) -> None:
        self._repo = repo
        self._small_file = small_file
        self._entries: list[Entry] = []  # every entry walked so far, in order
        self._files: list[Entry] = []  # those read ahead
        self._pos: dict[int, int] = {}  # id(entry) -> its position in _files
        self._walked = False  # the walk has ended (or failed: _walk_error)
        self._walk_error: BaseException | None = None
        self._hungry = False  # the restorer waits for the next entry: hand each one over at once
        self._ahead = ahead_bytes
        self._batch = batch_blobs
        self._ready: dict[int, object] = {}  # position -> list of plaintexts, or _DIRECT
        self._buffered = 0
        self._requested = 0  # bytes of the rounds in flight
        self._wanted = 0  # the lowest position the restorer may still ask for
        self._stopped = False
        self._done = False  # the thread has ended: what is not ready is read directly
        self._cond = threading.Condition()
        self.batches = 0  # rounds sent (tests and the curious)
        self._walker = threading.Thread(target=self._walk, args=(entries,), name="restore-walk", daemon=True)
        self._walker.start()
        self._thread = threading.Thread(target=self._run, name="restore-prefetch", daemon=True)
        self._thread.start()

    def _read_ahead(self, e: Entry) -> bool:
        return e.kind == KIND_FILE and not e.link_to and bool(e.chunks) and e.size <= self._small_file

    # --- the walking thread --------------------------------------------------------------
    def _walk(self, entries: Iterable[Entry]) -> None:
        """Hand each entry over as the walk yields it; wake the others every ``WALK_PUBLISH`` entries, or at
        once when the restorer waits for one (it may be the last before a round trip of the walk)."""
        n = 0
        try:
            for e in entries:
                n += 1
                with self._cond:
                    if self._stopped:
                        return
                    self._entries.append(e)
                    if self._read_ahead(e):
                        self._pos[id(e)] = len(self._files)
                        self._files.append(e)
                    if self._hungry or n % WALK_PUBLISH == 0:
                        self._hungry = False
                        self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to the restorer by entries()
            self._walk_error = exc
        finally:
            with self._cond:
                self._walked = True
                self._cond.notify_all()

    # --- the restorer's side -------------------------------------------------------------
    def entries(self) -> Iterator[Entry]:
        """The entries, in order, as the walk yields them; then the walk's error, if it failed."""
        i = 0
        while True:
            with self._cond:
                while i >= len(self._entries) and not self._walked and not self._stopped:
                    self._hungry = True
                    self._cond.wait()
                more = self._entries[i:]
                if not more:
                    if self._walk_error is not None:
                        raise self._walk_error
                    return
            i += len(more)
            yield from more

    def read_file(self, entry: Entry) -> Iterable[bytes]:
        if not self._read_ahead(entry):
            return self._repo.read_blobs(entry.chunks)
        with self._cond:
            while id(entry) not in self._pos and not self._walked and not self._stopped:
                self._hungry = True
                self._cond.wait()  # given before the walk thread handed it over
            pos = self._pos.get(id(entry))
            if pos is None:
                return self._repo.read_blobs(entry.chunks)
            for skipped in range(self._wanted, pos):  # files the restorer passed over (asked in order)
                if skipped in self._ready:
                    self._release(skipped)
            self._wanted = max(self._wanted, pos + 1)
            self._cond.notify_all()
            while pos not in self._ready and not self._done:
                self._cond.wait()
            got = self._release(pos) if pos in self._ready else _DIRECT
        if got is _DIRECT:
            return self._repo.read_blobs(entry.chunks)
        assert isinstance(got, list)
        return iter(got)

    def _release(self, pos: int) -> object:
        got = self._ready.pop(pos)
        if got is not _DIRECT:
            self._buffered -= self._files[pos].size
        self._cond.notify_all()
        return got

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._ready.clear()
            self._cond.notify_all()
        self._thread.join()
        self._walker.join()  # a walk in a round trip ends with it, then sees _stopped

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the reading thread --------------------------------------------------------------
    def _run(self) -> None:
        """Rounds go out in order, ``ROUNDS_IN_FLIGHT`` at a time on a pool of that many threads; what they
        read is handed out in order.  Rounds in flight count against the bound as if they were waiting."""
        pool = ThreadPoolExecutor(max_workers=ROUNDS_IN_FLIGHT, thread_name_prefix="restore-fetch")
        inflight: deque[tuple[int, int, int, Future]] = deque()  # (start, end, bytes, its _fetch)
        try:
            pos = 0
            while True:
                if not inflight and not self._wait_for_files(pos):
                    return
                if pos < len(self._files) and len(inflight) < ROUNDS_IN_FLIGHT and self._round_ready(pos):
                    with self._cond:
                        pos = max(pos, self._wanted - 1 if self._wanted else 0)
                    end, _blobs, size = self._next_batch(pos)
                    with self._cond:
                        held = self._buffered + self._requested
                        if self._stopped:
                            return
                        if not held or held + size <= self._ahead:
                            self._requested += size
                            inflight.append((pos, end, size, pool.submit(self._fetch, self._files[pos:end])))
                            pos = end
                            continue
                if inflight:
                    self._collect(*inflight.popleft())
                    continue
                with self._cond:  # nothing in flight, no room: wait for the restorer to take some
                    while not self._stopped and self._buffered and self._buffered + size > self._ahead:
                        self._cond.wait()
                    if self._stopped:
                        return
                    self._requested += size
                inflight.append((pos, end, size, pool.submit(self._fetch, self._files[pos:end])))
                pos = end
        finally:
            for *_, fut in inflight:
                fut.cancel()
            pool.shutdown(wait=True)
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _wait_for_files(self, pos: int) -> bool:
        """Wait until there is a round to send from ``pos`` (see _round_ready); :returns: False when there
        never will be (the walk has ended and every file was sent, or the prefetcher is closed)."""
        with self._cond:
            while not self._stopped and not self._round_ready(pos):
                if self._walked and pos >= len(self._files):
                    return False
                self._cond.wait()
            return not self._stopped and pos < len(self._files)

    def _round_ready(self, pos: int) -> bool:
        """A round from ``pos`` may go: it is full, or the walk has ended, or the restorer waits for it."""
        if pos >= len(self._files):
            return False
        if self._walked or self._wanted > pos:
            return True
        return self._next_batch(pos)[0] < len(self._files)

    def _collect(self, start: int, end: int, size: int, fut: Future) -> None:
        results = fut.result()  # _fetch raises nothing: a failed round is _DIRECT for each of its files
        with self._cond:
            self._requested -= size
            for offset, got in enumerate(results):
                if start + offset >= self._wanted - 1:  # not passed over meanwhile
                    self._ready[start + offset] = got
                    if got is not _DIRECT:
                        self._buffered += self._files[start + offset].size
            self._cond.notify_all()
            self.batches += 1

    def _next_batch(self, start: int) -> tuple[int, int, int]:
        """(end, blobs, bytes) of the round that starts at ``start``: at least one file, at most ``_batch``
        blobs and a ``ROUNDS_IN_FLIGHT``th of ``_ahead`` bytes beyond the first file."""
        end, blobs, size = start, 0, 0
        while end < len(self._files):
            f = self._files[end]
            if end > start and (blobs + len(f.chunks) > self._batch or size + f.size > self._ahead // ROUNDS_IN_FLIGHT):
                break
            blobs += len(f.chunks)
            size += f.size
            end += 1
        return end, blobs, size

    def _fetch(self, files: list[Entry]) -> list[object]:
        """Each file's plaintexts, in one pipelined round; every file of a failed round is read directly."""
        try:
            ids = [c for f in files for c in f.chunks]  # at most _ahead bytes of small files: one round
            stream: Iterator[bytes] = iter(self._repo.read_blobs(ids, max(1, len(ids)), SPAN_GAP))
            return [[next(stream) for _ in f.chunks] for f in files]
        except Exception:  # noqa: BLE001 - each file then meets its own error, or none, on a direct read
            return [_DIRECT] * len(files)

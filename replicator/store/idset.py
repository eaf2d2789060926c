"""IdSet: the set of stored chunk ids in small, bounded RAM (about 8 bytes per id), exact.

Layout (LSM-style, one level of sorted runs plus a small delta):

- a **delta**: a Python set of the ids added since the last flush, at most ``delta_max`` of them;
- **runs**: files of sorted, unique 32-byte ids in ``directory`` (``run-<n>.ids``: the 16-byte header
  ``RIDSRUN1`` + count as u64 LE, then the ids), read with ``pread`` (the kernel's page cache, neither
  the heap nor this process's resident set, as a mapping would be once its pages are touched);
- for each run, an ``array('Q')`` of the ids' first 8 bytes as big-endian integers, in the same order:
  the only per-id structure in the heap (8 bytes per id).

A lookup bisects each run's prefix array and confirms every prefix hit against the full 32-byte id in the
run file, so two ids that share their first 8 bytes are never confused: **no false positives, ever** (a
false "held" would make a sync skip a chunk the other side lacks).  When the delta is full it becomes a new
run; the newest runs are merged while the newer is at least half the size of the older, so there are
O(log n) runs and each id is rewritten O(log n) times.

Persistence (``save``/``load``) is a cache, never the truth: a manifest (JSON, ``IDSET_CACHE_VERSION``)
names the runs with their SHA-256 and the caller's *fingerprint* of the sources the ids came from (e.g. the
names of the ``ids/`` lists).  ``load`` returns None (the caller rebuilds from its signed lists) when the
manifest is missing, of another version, of another fingerprint, or when a run's size, order or digest is
wrong.  Without a directory the runs live in a private temporary directory removed by ``close``.

Must never: answer "held" for an id that was not added, trust a run it did not verify, or import above store/.
"""
from __future__ import annotations

import bisect
import hashlib
import heapq
import json
import os
import shutil
import sys
import tempfile
import threading
from array import array
from collections.abc import Iterable, Iterator

from replicator.store import atomic

IDSET_CACHE_VERSION = 1  # bump when the run or manifest layout changes: an older cache is then rebuilt
RUN_MAGIC = b"RIDSRUN1"
HEADER = 16  # magic (8) + count (u64 LE)
ID_SIZE = 32
MANIFEST = "manifest.json"
DELTA_MAX = 1 << 16  # ids held in the Python set before they become a run (~6 MiB at ~100 B each)
_BLOCK_IDS = 1 << 15  # ids per read or write block (1 MiB)


PRIVATE_PREFIX = "idset-"  # private directories: idset-<pid>-<random>


def _sweep_private(parent: str) -> None:
    """Remove the private directories in ``parent`` whose process is gone (left by a crash)."""
    for name in os.listdir(parent):
        parts = name.split("-")
        if not name.startswith(PRIVATE_PREFIX) or len(parts) < 3 or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        except OSError:  # alive, another user's: not ours to remove
            pass


def _prefixes(block: bytes | memoryview) -> array:
    """The first 8 bytes of each 32-byte id in ``block`` as big-endian u64, in an array('Q')."""
    words = memoryview(block).cast("Q")[::4]
    out = array("Q", words)
    if sys.byteorder == "little":
        out.byteswap()
    return out


class _Run:
    """One sorted run file, open for ``pread``, with its prefix array."""

    def __init__(self, path: str, sha256: str | None = None) -> None:
        self.path = path
        self.fd: int | None = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            size = os.fstat(self.fd).st_size
            head = os.pread(self.fd, HEADER, 0)
            if len(head) != HEADER or head[:8] != RUN_MAGIC:
                raise ValueError(f"{path}: not an id run")
            self.count = int.from_bytes(head[8:], "little")
            if size != HEADER + ID_SIZE * self.count:
                raise ValueError(f"{path}: {size} bytes for {self.count} ids")
        except BaseException:
            self.close()
            raise
        self.prefix = array("Q")
        digest = hashlib.sha256(head)
        last = b""
        for block in self._blocks():
            digest.update(block)
            if sha256 is not None:  # a run loaded from a cache: check the order (sorted, unique) too
                ids = [block[i : i + ID_SIZE] for i in range(0, len(block), ID_SIZE)]
                if ids[0] <= last or any(a >= b for a, b in zip(ids, ids[1:])):
                    self.close()
                    raise ValueError(f"{path}: ids out of order")
                last = ids[-1]
            self.prefix.extend(_prefixes(block))
        self.sha256 = digest.hexdigest()
        if sha256 is not None and sha256 != self.sha256:
            self.close()
            raise ValueError(f"{path}: digest mismatch")

    def _blocks(self) -> Iterator[bytes]:
        for start in range(0, self.count, _BLOCK_IDS):
            n = min(self.count - start, _BLOCK_IDS)
            assert self.fd is not None
            block = os.pread(self.fd, ID_SIZE * n, HEADER + ID_SIZE * start)
            if len(block) != ID_SIZE * n:
                raise ValueError(f"{self.path}: shorter than its count")
            yield block

    def id_at(self, i: int) -> bytes:
        assert self.fd is not None
        return os.pread(self.fd, ID_SIZE, HEADER + ID_SIZE * i)

    def contains(self, blob_id: bytes, p: int) -> bool:
        prefix = self.prefix
        i = bisect.bisect_left(prefix, p)
        n = self.count
        while i < n and prefix[i] == p:  # every prefix hit is confirmed against the full id
            if self.id_at(i) == blob_id:
                return True
            i += 1
        return False

    def __iter__(self) -> Iterator[bytes]:
        for block in self._blocks():
            for i in range(0, len(block), ID_SIZE):
                yield block[i : i + ID_SIZE]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.prefix = array("Q")

    def delete(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class IdSet:
    """A set of 32-byte ids: ``add``, ``add_many``, ``in``, ``contains_many``, ``len``, ``clear``.

    Thread-safe (one lock).  ``directory`` holds the runs (created if missing; None: a private temporary
    directory).  Use ``IdSet.load`` to reopen a saved set, ``save`` to keep one, ``close`` to release it.
    """

    def __init__(self, directory: str | None = None, *, delta_max: int = DELTA_MAX, parent: str | None = None) -> None:
        """:param parent: with no ``directory``, where the private directory goes (default: the system's
            temporary directory); private directories there of processes that are gone are removed first."""
        self._owned = directory is None
        if directory is None:
            if parent is not None:
                os.makedirs(parent, exist_ok=True)
                _sweep_private(parent)
            directory = tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-", dir=parent)
        self.directory = directory
        os.makedirs(self.directory, exist_ok=True)
        self.delta_max = max(1, delta_max)
        self._delta: set[bytes] = set()
        self._runs: list[_Run] = []
        self._count = 0
        self._serial = 0
        self._lock = threading.Lock()
        self._adopted: set[str] = set()  # run files named by a loaded manifest: kept until replaced
        self.extra: dict = {}  # what ``load`` read beside the runs (see ``save``)

    # --- reading ------------------------------------------------------------------
    def _has(self, blob_id: bytes) -> bool:
        if blob_id in self._delta:
            return True
        if len(blob_id) != ID_SIZE:
            return False
        p = int.from_bytes(blob_id[:8], "big")
        return any(run.contains(blob_id, p) for run in self._runs)

    def __contains__(self, blob_id: object) -> bool:
        if not isinstance(blob_id, bytes):
            return False
        with self._lock:
            return self._has(blob_id)

    def contains_many(self, ids: Iterable[bytes]) -> list[bool]:
        """One answer per id, in order, under one lock (the batched lookup)."""
        with self._lock:
            return [self._has(i) for i in ids]

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[bytes]:
        """Every id, sorted, streamed from the runs (the delta is flushed first).  Not while others add."""
        with self._lock:
            self._flush()
            runs = list(self._runs)
        return heapq.merge(*runs)

    # --- writing ------------------------------------------------------------------
    def add(self, blob_id: bytes) -> None:
        self.add_many((blob_id,))

    def add_many(self, ids: Iterable[bytes]) -> None:
        """Add every id (32 bytes each).  :raises ValueError: an id of another length."""
        with self._lock:
            for blob_id in ids:
                blob_id = bytes(blob_id)
                if len(blob_id) != ID_SIZE:
                    raise ValueError(f"an id is {ID_SIZE} bytes, not {len(blob_id)}")
                if self._has(blob_id):
                    continue
                self._delta.add(blob_id)
                self._count += 1
                if len(self._delta) >= self.delta_max:
                    self._flush()

    def clear(self) -> None:
        with self._lock:
            self._delta = set()
            for run in self._runs:
                self._drop(run)
            self._runs = []
            self._count = 0

    def rebuild(self, ids: Iterable[bytes]) -> None:
        """Empty the set, then add ``ids`` (how a pack that is gone or damaged leaves it).

        A bulk load: an id is checked against the delta only, not the runs (so runs may overlap until
        the end, when they are merged into one without repeats).  It holds the lock throughout: a
        lookup from another thread waits for the whole set.
        """
        self.clear()
        with self._lock:
            for blob_id in ids:
                blob_id = bytes(blob_id)
                if len(blob_id) != ID_SIZE:
                    raise ValueError(f"an id is {ID_SIZE} bytes, not {len(blob_id)}")
                self._delta.add(blob_id)
                if len(self._delta) >= self.delta_max:
                    self._flush()
            self._flush()
            if len(self._runs) > 1:
                runs, self._runs = self._runs, []
                self._runs = [self._merge(runs)]
            self._count = sum(r.count for r in self._runs)

    def _new_path(self) -> str:
        while True:
            self._serial += 1
            path = os.path.join(self.directory, f"run-{os.getpid()}-{self._serial}.ids")
            if not os.path.exists(path):
                return path

    def _merge(self, runs: list[_Run]) -> _Run:
        """One run from ``runs``, which are dropped before the new one's prefix array is built (so the
        prefix arrays of the inputs and of the output are never in RAM together)."""
        path = self._write_file(heapq.merge(*runs))
        for run in runs:
            self._drop(run)
        return _Run(path)

    def _write_run(self, ids: Iterable[bytes]) -> _Run:
        return _Run(self._write_file(ids))

    def _write_file(self, ids: Iterable[bytes]) -> str:
        """Write sorted ``ids`` to a new run file, each once (repeats in a row are dropped)."""
        path = self._new_path()
        count = 0
        with open(path, "wb") as f:
            f.write(RUN_MAGIC + bytes(8))
            block: list[bytes] = []
            last = b""
            for blob_id in ids:
                if blob_id == last:
                    continue
                last = blob_id
                block.append(blob_id)
                if len(block) >= _BLOCK_IDS:
                    f.write(b"".join(block))
                    count += len(block)
                    block = []
            f.write(b"".join(block))
            count += len(block)
            f.seek(len(RUN_MAGIC))
            f.write(count.to_bytes(8, "little"))
        return path

    def _flush(self) -> None:
        """The delta becomes a run; then merge the newest runs while the newer is at least half the older."""
        if not self._delta:
            return
        delta = sorted(self._delta)
        self._runs.append(self._write_run(delta))
        self._delta = set()
        del delta
        while len(self._runs) > 1 and 2 * self._runs[-1].count >= self._runs[-2].count:
            older, newer = self._runs[-2], self._runs[-1]
            self._runs[-2:] = [self._merge([older, newer])]  # disjoint, but for a bulk load

    def _drop(self, run: _Run) -> None:
        if run.path in self._adopted:  # named by a saved manifest: that manifest no longer describes us
            self._adopted.discard(run.path)
            self._forget_manifest()
        run.delete()

    # --- persistence (a cache) ------------------------------------------------------
    def _forget_manifest(self) -> None:
        try:
            os.unlink(os.path.join(self.directory, MANIFEST))
        except FileNotFoundError:
            pass

    def save(self, fingerprint: str, extra: dict | None = None) -> None:
        """Flush the delta and record the runs with ``fingerprint`` (what the ids were read from) and
        ``extra`` (small JSON-able facts the caller read with them; ``load`` sets them as ``.extra``)."""
        with self._lock:
            self._flush()
            doc = {"version": IDSET_CACHE_VERSION, "fingerprint": fingerprint, "count": self._count,
                   "extra": extra or {},
                   "runs": [{"file": os.path.basename(r.path), "count": r.count, "sha256": r.sha256}
                            for r in self._runs]}
            atomic.replace(os.path.join(self.directory, MANIFEST), (json.dumps(doc) + "\n").encode())
            self._adopted = {r.path for r in self._runs}

    def invalidate(self) -> None:
        """Remove the saved manifest: until the next ``save`` the directory is not a valid cache."""
        with self._lock:
            self._forget_manifest()
            self._adopted = set()

    @classmethod
    def load(cls, directory: str, fingerprint: str, *, delta_max: int = DELTA_MAX) -> IdSet | None:
        """The set saved in ``directory`` with this ``fingerprint``, or None (missing, stale or damaged:
        the damaged files are removed; the caller rebuilds from its sources)."""
        try:
            with open(os.path.join(directory, MANIFEST), "rb") as f:
                doc = json.loads(f.read(1 << 20))
            if doc.get("version") != IDSET_CACHE_VERSION or doc.get("fingerprint") != fingerprint:
                raise ValueError("another version or fingerprint")
            entries = doc["runs"]
            extra = dict(doc.get("extra") or {})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            cls.discard_cache(directory)
            return None
        ids = cls(directory, delta_max=delta_max)
        try:
            for entry in entries:
                name = str(entry["file"])
                if os.sep in name or not name.startswith("run-"):
                    raise ValueError(f"bad run name {name!r}")
                run = _Run(os.path.join(directory, name), str(entry["sha256"]))
                ids._runs.append(run)
                if run.count != entry["count"]:
                    raise ValueError("count mismatch")
            ids._count = sum(r.count for r in ids._runs)
            if ids._count != doc["count"]:
                raise ValueError("count mismatch")
        except (OSError, ValueError, KeyError, TypeError):
            ids.close()
            cls.discard_cache(directory)
            return None
        ids._adopted = {r.path for r in ids._runs}
        ids.extra = extra
        return ids

    @staticmethod
    def discard_cache(directory: str) -> None:
        """Remove the manifest and every run file in ``directory`` (nothing else)."""
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return
        for name in names:
            if name == MANIFEST or (name.startswith("run-") and name.endswith(".ids")):
                try:
                    os.unlink(os.path.join(directory, name))
                except FileNotFoundError:
                    pass

    def close(self) -> None:
        """Unmap the runs; delete those no saved manifest names (and a private directory)."""
        with self._lock:
            for run in self._runs:
                if run.path in self._adopted:
                    run.close()
                else:
                    run.delete()
            self._runs = []
            self._delta = set()
            self._count = 0
            if self._owned:
                shutil.rmtree(self.directory, ignore_errors=True)

    def resident_bytes(self) -> int:
        """Heap bytes of the per-id structures (prefix arrays and delta), for reports."""
        with self._lock:
            return (sum(r.prefix.itemsize * len(r.prefix) for r in self._runs)
                    + sys.getsizeof(self._delta) + len(self._delta) * (ID_SIZE + 33))

    def __enter__(self) -> IdSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

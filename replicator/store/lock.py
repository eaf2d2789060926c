"""The one lock helper: lock objects in a repository's Storage, and an exclusive flock on a file.

ObjectLock: ``locks/<32 hex>`` objects (docs/FORMAT.md 2.4), shared (writers) or
exclusive (forget, prune, upgrade, key changes), through put/list/get/delete
only, so they work on any Storage (a local directory, memory, an object store).
Taking one: remove the stale locks (each with a warning naming it), refuse at
once if a live conflicting one exists, write ours (put without overwrite), list
again, and if a live conflicting lock appeared meanwhile remove ours and refuse.
Two exclusive takers racing both see each other after writing and both back
off: never both succeed (at worst both are refused and try again later).
A held lock is refreshed by a background thread every ``refresh`` seconds.
A lock is stale when its last refresh is older than ``stale_after`` seconds,
or when its holder is on this host and that process (pid, boot, start time)
is gone, so a kill -9 never blocks the next run on the same host.

FileLock is used for the repository writer lock (``REPO/lock``: every local sync, every
write session of ``replicator serve``, forget and prune) and for the
daemon's per-job locks.  flock is released by the kernel when the process
dies, so a kill -9 never leaves a stale lock behind.

Must never: block (a second writer is told at once who holds the lock), or
wait for a lock held by this same process through another descriptor
(flock locks per open file description, so that also fails at once).
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from replicator.errors import ObjectNotFound, ReplicatorError, StorageError

log = logging.getLogger(__name__)

LOCKS = "locks"  # the folder of lock objects
LOCK_VERSION = 1
LOCK_MAX = 4096  # bytes of a lock object read; a bigger one is damaged
REFRESH_SECONDS = 300.0  # a held lock object is rewritten this often
STALE_SECONDS = 1800.0  # a lock object not refreshed for this long is stale
SHARED, EXCLUSIVE = "shared", "exclusive"

HOLDER_MAX = 200  # bytes of the holder line read back for the message


class Locked(ReplicatorError):
    """{} is locked by {}"""

    retryable = True

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(path, holder)
        self.path = path
        self.holder = holder


class FileLock:
    """``with FileLock(path, "serve"):`` holds an exclusive flock on ``path`` or raises Locked at once."""

    def __init__(self, path: str, role: str = "", *, shared: bool = False) -> None:
        """``shared``: a shared flock (many holders; excludes only exclusive ones); it writes no holder line."""
        self.path = path
        self.role = role
        self.shared = shared
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, wait: bool = False) -> FileLock:
        """``wait``: until the holder lets go (a lock held for moments: a shared cache file being updated).

        :raises Locked: another process (or descriptor) holds it.  :raises StorageError: cannot open the file."""
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(f"{self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            holder = os.pread(fd, HOLDER_MAX, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise Locked(self.path, holder) from None
            raise StorageError(f"{self.path}: {exc.strerror}") from None
        if not self.shared:
            os.ftruncate(fd, 0)
            role = f" ({self.role})" if self.role else ""
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}{role}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (/proc), or None if it is gone
    (or /proc is not there)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    try:  # field 22; the command (field 2) may hold spaces and parentheses: split after its last ")"
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def _alive(pid: int, start: int | None) -> bool:
    """Whether process ``pid`` of this host still runs and is the one that started at ``start``."""
    if os.path.isdir("/proc/self"):
        now = process_start(pid)
        return now is not None and (start is None or now == start)
    return pid_alive(pid)  # no /proc: the pid alone (a reused pid keeps a lock until it goes stale by time)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (the lock holders here, the daemon's status file in app/)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class LockInfo:
    """One lock object as read back (docs/FORMAT.md 2.4)."""

    name: str
    kind: str
    host: str
    pid: int
    start: int | None
    boot: str
    role: str
    taken: float
    refreshed: float

    @classmethod
    def parse(cls, name: str, data: bytes) -> LockInfo:
        """:raises ValueError: not a lock object of a version this release reads."""
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("v") != LOCK_VERSION or doc.get("kind") not in (SHARED, EXCLUSIVE):
            raise ValueError("not a version 1 lock object")
        start = doc.get("start")
        return cls(name, doc["kind"], str(doc["host"]), int(doc["pid"]), None if start is None else int(start),
                   str(doc.get("boot", "")), str(doc.get("role", "")), float(doc["taken"]), float(doc["refreshed"]))

    def describe(self) -> str:
        role = f" ({self.role})" if self.role else ""
        taken = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.taken))
        return f"{self.kind} lock {self.name}: pid {self.pid} on {self.host}{role} since {taken}"

    def stale_because(self, now: float, stale_after: float, host: str, boot: str) -> str | None:
        """Why this lock is stale, or None when its holder may still be alive."""
        if now - self.refreshed > stale_after:
            return f"not refreshed for {int(now - self.refreshed)} s"
        if self.host == host:
            if self.boot and boot and self.boot != boot:
                return "its host has rebooted since"
            if not _alive(self.pid, self.start):
                return f"process {self.pid} on this host is gone"
        return None


class ObjectLock:
    """``with ObjectLock(storage, EXCLUSIVE, "prune"):`` holds a lock object or raises Locked at once.

    ``removed`` lists the stale locks removed while taking it, ``warnings`` those of them that were not
    certainly dead (not refreshed in time, or unreadable: a holder of this host whose process or boot is
    gone is certainly dead and is only logged, as a flock would have vanished with it); ``lost`` says why the lock was
    found gone at a refresh (another process took it as stale), else None.
    """

    def __init__(self, storage, kind: str = SHARED, role: str = "", *, refresh: float = REFRESH_SECONDS,
                 stale_after: float = STALE_SECONDS, host: str | None = None, pid: int | None = None,
                 ignore: str | None = None) -> None:
        """``ignore``: the name of a lock this same holder already has (a write session taking an exclusive
        lock for a forget or prune it was sent), not counted as a conflict."""
        if kind not in (SHARED, EXCLUSIVE):
            raise ValueError(f"lock kind {kind!r}")
        self.storage = storage
        self.kind = kind
        self.role = role
        self.refresh = refresh
        self.stale_after = stale_after
        self.host = host or socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        self.boot = _boot_id()
        self.name: str | None = None
        self.ignore = ignore
        self.taken = 0.0
        self.warnings: list[str] = []
        self.removed: list[str] = []
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()

    @property
    def held(self) -> bool:
        return self.name is not None

    def _document(self, refreshed: float) -> bytes:
        doc = {"v": LOCK_VERSION, "kind": self.kind, "host": self.host, "pid": self.pid,
               "start": process_start(self.pid), "boot": self.boot, "role": self.role,
               "taken": self.taken, "refreshed": refreshed}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def _conflicts(self, other: LockInfo) -> bool:
        return self.kind == EXCLUSIVE or other.kind == EXCLUSIVE

    def _live_conflict(self) -> LockInfo | None:
        """Remove the stale locks; :returns: a live lock that conflicts with ours, if any."""
        now = time.time()
        for name in list(self.storage.list(LOCKS + "/")):
            if name in (self.name, self.ignore):
                continue
            try:
                info = LockInfo.parse(name, self.storage.get(name, 0, LOCK_MAX))
            except ObjectNotFound:
                continue  # released meanwhile
            except (ValueError, KeyError, TypeError) as exc:
                self._remove_stale(name, f"unreadable ({exc})")
                continue
            why = info.stale_because(now, self.stale_after, self.host, self.boot)
            if why is not None:
                self._remove_stale(name, f"{info.describe()}: {why}", certain=info.host == self.host
                                   and now - info.refreshed <= self.stale_after)
            elif self._conflicts(info):
                return info
        return None

    def _remove_stale(self, name: str, why: str, *, certain: bool = False) -> None:
        message = f"removed stale lock {name} of {self.storage.location}: {why}"
        self.removed.append(message)
        if certain:
            log.info("%s", message)
        else:
            log.warning("%s", message)
            self.warnings.append(message)
        self.storage.delete(name)

    def acquire(self) -> ObjectLock:
        """:raises Locked: a live conflicting lock exists (named in the message).  :raises StorageError:"""
        if self.held:
            raise RuntimeError("lock already held")
        conflict = self._live_conflict()
        if conflict is not None:
            raise Locked(self.storage.location, conflict.describe())
        self.taken = time.time()
        self.name = f"{LOCKS}/{os.urandom(16).hex()}"
        self.storage.put(self.name, self._document(self.taken))
        try:
            conflict = self._live_conflict()  # a conflicting taker that wrote between our list and our put
        except BaseException:
            self.release()
            raise
        if conflict is not None:
            self.release()
            raise Locked(self.storage.location, conflict.describe())
        if self.refresh > 0:
            self._stop.clear()
            self._thread = threading.Thread(target=self._refresher, name=f"lock-refresh {self.name}", daemon=True)
            self._thread.start()
        return self

    def refresh_now(self) -> None:
        """Rewrite our lock object with a new refresh time; sets ``lost`` when it was removed meanwhile."""
        with self._write_lock:
            name = self.name
            if name is None or self.lost is not None:
                return
            if not self.storage.exists(name):
                self.lost = f"lock {name} of {self.storage.location} was removed by another process"
                log.error("%s", self.lost)
                return
            self.storage.put(name, self._document(time.time()), overwrite=True)

    def _refresher(self) -> None:
        while not self._stop.wait(self.refresh):
            try:
                self.refresh_now()
            except ReplicatorError as exc:  # a storage hiccup: try again at the next period
                log.warning("cannot refresh lock %s: %s", self.name, exc)

    def release(self) -> None:
        """Stop refreshing and remove our lock object; never raises for a storage error."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        with self._write_lock:
            name, self.name = self.name, None
        if name is not None and self.lost is None:
            try:
                self.storage.delete(name)
            except ReplicatorError as exc:
                log.warning("cannot remove lock %s: %s (it goes stale after %d s)", name, exc, self.stale_after)

    def __enter__(self) -> ObjectLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


LOCK_FILE = "lock"  # the flock(2) target of a local repository directory (docs/FORMAT.md 2, 2.4)


class RepositoryLock:
    """The lock of one repository: a lock object of ``kind`` (ObjectLock) and, for a local directory, a
    shared flock on ``REPO/lock`` as well, so that a release before 0.5 (which takes that flock
    exclusively and knows no lock objects) and this one still exclude each other.

    :raises Locked: at ``acquire``, naming the holder.
    """

    def __init__(self, storage, kind: str, role: str = "") -> None:
        self.storage = storage
        self.kind = kind
        self.role = role
        root = getattr(storage, "root", None)
        self._file = FileLock(os.path.join(root, LOCK_FILE), role, shared=True) if root else None
        self._object = ObjectLock(storage, kind, role)

    @property
    def warnings(self) -> list[str]:
        return self._object.warnings

    @property
    def lost(self) -> str | None:
        return self._object.lost

    @property
    def held(self) -> bool:
        return self._object.held

    def acquire(self) -> RepositoryLock:
        if self._file is not None:
            try:
                self._file.acquire()
            except Locked as exc:
                raise Locked(exc.path, f"an older release ({exc.holder})") from None
        try:
            self._object.acquire()
        except BaseException:
            if self._file is not None:
                self._file.release()
            raise
        return self

    def exclusively(self, role: str) -> ObjectLock:
        """An exclusive lock taken while this shared one is held (ours does not count as a conflict):
        ``with lock.exclusively("prune"):``.  :raises Locked: another holder exists."""
        if self.kind == EXCLUSIVE:
            raise RuntimeError("already exclusive")
        return ObjectLock(self.storage, EXCLUSIVE, role, ignore=self._object.name)

    def release(self) -> None:
        self._object.release()
        if self._file is not None:
            self._file.release()

    def __enter__(self) -> RepositoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

"""LocalSink: a Sink over a Storage, with the repository's key-less bookkeeping (``ids/``, ``refs/``).

The same class stores a local sync (the writer and the sink in one process)
and every write session of ``replicator serve`` (the writer at the other
site, ``untrusted=True``), so a repository holds the same objects whichever
way it was written.  It never sees a key: what it checks is what anyone can
check, SHA-256 names, object shapes, and that a snapshot's refs are held.

Held ids come from the ``ids/`` lists of packs that exist and are not
quarantined (``quarantine/<pack hash>``: a pack some verification found
damaged), read once at open, plus what this session stores.  So a writer
sends again every chunk a damaged pack held, and a commit naming a chunk that
only a damaged pack holds is refused: the damage heals at the next sync.  Write order: pack, then its id list
(a crash between leaves a pack without a list: harmless, it is sent again);
refs, then the snapshot (the snapshot's appearance is the commit point).

Must never: decrypt, hold a key, advertise an id of a pack that is gone, or
write a snapshot whose refs are not all held.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

from replicator import constants as C
from replicator.errors import IntegrityError, MissingChunks, ObjectNotFound, ReadOnly, RepositoryNotFound
from replicator.format import layout as L
from replicator.format.idlist import decode_ids, encode_ids
from replicator.format.repoconfig import parse_config
from replicator.store.local import LocalStorage
from replicator.store.lock import FileLock, Locked

LOCK_FILE = "lock"
LIST_PREFIXES = (L.SNAPSHOTS, L.IDS, L.PACKS)


def quarantine_damaged(path: str, damaged: dict[str, str], found_by: str) -> tuple[list[str], str | None]:
    """Quarantine the packs in ``damaged`` (digest -> reason) under the writer lock.

    :returns: (digests quarantined now, a note when it could not be done now: a sync holds the lock).
    """
    if not damaged:
        return [], None
    done: list[str] = []
    try:
        with LocalSink.open(path, writable=True, untrusted=True, role=found_by) as sink:
            for digest, reason in sorted(damaged.items()):
                if sink.quarantine(digest, reason, found_by):
                    done.append(digest)
    except Locked:
        return done, (f"{len(damaged)} damaged pack(s) not quarantined now: a sync holds the repository lock; "
                      f"run again when it has finished")
    return done, None


def open_storage(path: str) -> tuple[LocalStorage, dict]:
    """The storage and parsed config of the repository directory at ``path``; needs no passphrase.

    :raises RepositoryNotFound: no directory, or no config in it.  :raises RepositoryError: foreign or damaged config.
    """
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise RepositoryNotFound(path)
    storage = LocalStorage(path)
    try:
        data = storage.get(L.CONFIG)
    except ObjectNotFound:
        raise RepositoryNotFound(path) from None
    return storage, parse_config(data, path)


class LocalSink:
    """Use ``LocalSink.open(path)`` for a directory, or the constructor over any Storage."""

    def __init__(self, storage, *, lock: FileLock | None = None, writable: bool = True,
                 untrusted: bool = False) -> None:
        self.storage = storage
        self.location = storage.location
        self.stats: dict = {"packs_stored": 0, "packs_known": 0, "commits": 0}
        self.warnings: list[str] = []
        self._lock = lock
        self._writable = writable
        self._untrusted = untrusted
        self._held: set[bytes] = set()
        self._held_lock = threading.Lock()
        self._quarantined = {L.digest_of(n) for n in storage.list(L.QUARANTINE) if L.QUARANTINE_RE.match(n)}
        self._load_held()

    def _load_held(self) -> None:
        held: set[bytes] = set()
        for name, data in self.get_many(self.list(L.IDS)):
            try:
                held.update(decode_ids(data, name))
            except ValueError as exc:
                self.warnings.append(f"{exc}; its chunks will be sent again")
        with self._held_lock:
            self._held = held

    @classmethod
    def open(cls, path: str, *, writable: bool, untrusted: bool, role: str = "") -> LocalSink:
        """Open the repository directory at ``path``; a writable sink holds the writer lock.

        :raises RepositoryNotFound: :raises Locked: another writer holds the lock.
        """
        storage, _config = open_storage(path)
        lock = FileLock(os.path.join(storage.root, LOCK_FILE), role).acquire() if writable else None
        try:
            if writable:
                storage.clean_temporaries()
            return cls(storage, lock=lock, writable=writable, untrusted=untrusted)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    # --- reading ----------------------------------------------------------------
    def describe(self) -> tuple[bytes, bytes]:
        return self.storage.get(L.CONFIG), self.storage.get(L.KEY)

    def has(self, blob_id: bytes) -> bool:
        return blob_id in self._held

    def list(self, prefix: str) -> list[str]:
        if prefix not in LIST_PREFIXES:
            raise ValueError(f"cannot list {prefix!r}")
        names = self.storage.list(prefix)
        if prefix == L.IDS:
            # Only lists of packs that exist and are not quarantined: a writer deduplicates against
            # whatever is listed here.
            names = (n for n in names if L.IDS_RE.match(n) and L.digest_of(n) not in self._quarantined
                     and self.storage.exists(L.pack_name(L.digest_of(n))))
        elif prefix == L.SNAPSHOTS:
            names = (n for n in names if L.SNAPSHOT_RE.match(n))
        else:
            names = (n for n in names if L.is_pack(n))
        return sorted(names)

    def get_many(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        for name in names:
            yield name, self.storage.get(name)

    # --- writing ----------------------------------------------------------------
    def _need_write(self, what: str) -> None:
        if not self._writable:
            raise ReadOnly(self.location, what)

    def put_pack(self, name: str, data: bytes | memoryview, ids: Sequence[bytes]) -> None:
        """Store the pack, then its id list; durable when it returns."""
        self._need_write("storing packs")
        digest = L.digest_of(name)
        if self._untrusted:
            if not L.is_pack(name) or hashlib.sha256(data).hexdigest() != digest:
                raise IntegrityError(f"pack {digest[:16]}: content does not match its name")
            if not (len(data) >= C.PACK_HEADER_SIZE + C.PACK_FOOTER_SIZE and data[:8] == C.PACK_MAGIC
                    and data[-8:] == C.PACK_FOOTER_MAGIC):
                raise IntegrityError(f"pack {digest[:16]} is not a pack")
        if digest in self._quarantined:
            self._restore_quarantined(name, data)
        elif self._store_once(name, data):
            self.stats["packs_stored"] += 1
        else:
            self.stats["packs_known"] += 1
        ids_name = L.ids_name(digest)
        if not self._store_once(ids_name, encode_ids(ids)):
            # Already listed (the same pack sent twice): the stored list stays the declaration.
            ids = list(decode_ids(self.storage.get(ids_name), ids_name))
        with self._held_lock:
            self._held.update(ids)

    def flush(self) -> None:
        """Nothing to wait for: ``put_pack`` is durable when it returns."""

    @property
    def quarantined(self) -> frozenset[str]:
        """Digests of the packs found damaged."""
        return frozenset(self._quarantined)

    def quarantine(self, digest: str, reason: str, found_by: str) -> bool:
        """Record pack ``digest`` as damaged: from now on its ids are not held (nor listed), so the next
        sync sends those chunks again.  The pack itself stays until ``prune``.

        :returns: False when it was already quarantined.
        """
        self._need_write("quarantining packs")
        if digest in self._quarantined:
            return False
        doc = {"reason": reason, "found_by": found_by,
               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._store_once(L.quarantine_name(digest), (json.dumps(doc, sort_keys=True) + "\n").encode())
        self._quarantined.add(digest)
        self._load_held()  # another pack may hold some of the same ids: recount from the lists
        return True

    def commit(self, name: str, data: bytes, refs: Sequence[bytes]) -> None:
        self._need_write("committing snapshots")
        digest = L.digest_of(name)
        if not L.SNAPSHOT_RE.match(name) or hashlib.sha256(data).hexdigest() != digest:
            raise IntegrityError(f"snapshot {digest[:16]}: content does not match its name")
        if self._untrusted and (not data.startswith(C.SNAPSHOT_MAGIC) or len(data) < 60 or
                                not C.FORMAT_VERSION_MIN <= int.from_bytes(data[8:10], "little")
                                <= C.FORMAT_VERSION_MAX):
            raise IntegrityError(f"snapshot {digest[:16]} is not a snapshot of a supported version")
        missing = sum(1 for r in refs if r not in self._held)
        if missing:
            raise MissingChunks(digest[:16], missing)
        # refs first, the snapshot last: its appearance is the commit point.
        self._store_once(L.refs_name(digest), encode_ids(refs))
        self._store_once(name, data)
        self.stats["commits"] += 1

    def _restore_quarantined(self, name: str, data: bytes | memoryview) -> None:
        """The writer sent a pack that is stored damaged: these bytes hash to its name, so they are the
        object itself; put them back and lift the quarantine (the one case an object is rewritten)."""
        digest = L.digest_of(name)
        if hashlib.sha256(data).hexdigest() != digest:
            raise IntegrityError(f"pack {digest[:16]}: content does not match its name")
        self.storage.put(name, data, overwrite=True)
        self.storage.delete(L.quarantine_name(digest))
        self._quarantined.discard(digest)
        self.stats["packs_restored"] = self.stats.get("packs_restored", 0) + 1

    def _store_once(self, name: str, data: bytes | memoryview) -> bool:
        """:returns: False when the object existed (objects are named by content or by their pack)."""
        try:
            self.storage.put(name, data)
        except FileExistsError:
            return False
        return True

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> LocalSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


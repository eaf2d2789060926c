"""LocalSink: a Sink over a Storage, with the repository's key-less bookkeeping (``ids/``, ``refs/``).

The same class stores a local sync (the writer and the sink in one process)
and every write session of ``replicator serve`` (the writer at the other
site, ``untrusted=True``), so a repository holds the same objects whichever
way it was written.  It never sees a key: what it checks is what anyone can
check, SHA-256 names, object shapes, that a snapshot's refs are held, and
that every pack's declaration of its ids and every snapshot carries a proof
signed by the repository's key (format/idlist.py), verified with the public
key kept in the clear in ``keys/default``: a party that can reach this sink
without the passphrase cannot make it store a junk snapshot or a forged list.

Held ids come from the ``ids/`` lists of packs that exist and are not
quarantined (``quarantine/<pack hash>``: a pack some verification found
damaged), read once at open (or, for a writable sink over a directory, from the IdSet cache in
``idset-cache/`` that the previous session saved over exactly these lists), plus what this session
stores.  So a writer sends again every chunk a damaged pack held, and a commit naming a chunk that
only a damaged pack holds is refused: the damage heals at the next sync.  Write order: pack, then its id list
(a crash between leaves a pack without a list: harmless, it is sent again);
refs, then the source's head, then the snapshot (the snapshot's appearance is the commit point).  Each
commit's claim (its source's tag and parent) is checked against that head first: a parent that is not the
head is refused (compare-and-swap), as is a commit from the side a ``promote`` fenced (format/head.py).

Must never: decrypt, hold a key, advertise an id of a pack that is gone, or
write a snapshot whose refs are not all held or a declaration that does not verify.
"""
from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence

from replicator import constants as C
from replicator.errors import (
    Fenced,
    IntegrityError,
    LineageConflict,
    MissingChunks,
    ObjectNotFound,
    ReadOnly,
    RepositoryError,
    RepositoryNotFound,
)
from replicator.format import head as H
from replicator.format import idlist as I
from replicator.format import layout as L
from replicator.format.keyfile import parse_keyfile
from replicator.format.repoconfig import parse_config
from replicator.repo.tables import ranges_reader
from replicator.store.idset import IdSet
from replicator.store.local import LocalStorage
from replicator.store.location import is_object_url, open_location
from replicator.store.lock import EXCLUSIVE, SHARED, FileLock, Locked, RepositoryLock
from replicator.times import rfc3339

HELD_CACHE_DIR = "idset-cache"  # the held ids' IdSet, beside the index: a cache, rebuilt from ids/ when in doubt
HELD_CACHE_LOCK = "lock"  # in HELD_CACHE_DIR: the one session that uses (and saves) the cache
_REFS_BATCH = 1 << 16  # refs looked up per batch at commit
LIST_PREFIXES = (L.SNAPSHOTS, L.IDS, L.PACKS)


def quarantine_damaged(path: str, damaged: dict[str, str], found_by: str) -> tuple[list[str], str | None]:
    """Quarantine the packs in ``damaged`` (digest -> reason) under the writer lock.

    :returns: (digests quarantined now, a note when it could not be done now: an exclusive lock is held).
    """
    if not damaged:
        return [], None
    done: list[str] = []
    try:
        with LocalSink.open(path, writable=True, untrusted=True, role=found_by, exclusive=True) as sink:
            for digest, reason in sorted(damaged.items()):
                if sink.quarantine(digest, reason, found_by):
                    done.append(digest)
    except Locked:
        return done, (f"{len(damaged)} damaged pack(s) not quarantined now: a forget, prune or upgrade holds the "
                      f"repository lock; "
                      f"run again when it has finished")
    return done, None


def open_storage(path: str) -> tuple[LocalStorage, dict]:
    """The storage and parsed config of the repository at ``path`` (a directory or s3:// URL); needs no passphrase.

    :raises RepositoryNotFound: no directory, or no config in it.  :raises RepositoryError: foreign or damaged config.
    """
    if is_object_url(path):
        storage = open_location(path)
    else:
        path = os.path.abspath(path)
        if not os.path.isdir(path):
            raise RepositoryNotFound(path)
        storage = LocalStorage(path)
    try:
        data = storage.get(L.CONFIG)
    except ObjectNotFound:
        raise RepositoryNotFound(path) from None
    return storage, parse_config(data, path)


def set_fence(storage, tag: bytes, fence: H.Fence | None) -> H.Head:
    """``promote`` (its side may write the source, the other is refused) or ``handback`` (the reverse):
    rewrite the head of the source tagged ``tag`` with ``fence``, keeping its snapshot.  The caller holds
    the repository's lock.  Durable when it returns; a damaged head is replaced (the operator's act)."""
    name = L.head_name(tag)
    try:
        head: H.Head | None = H.decode_head(storage.get(name), name)
    except (ObjectNotFound, ValueError):
        head = None
    new = H.Head(head.snapshot if head else None, head.previous if head else None, fence)
    storage.put(name, new.encode(), overwrite=True)
    return new


class LocalSink:
    """Use ``LocalSink.open(path)`` for a directory, or the constructor over any Storage."""

    def __init__(self, storage, *, lock: RepositoryLock | None = None, writable: bool = True,
                 untrusted: bool = False) -> None:
        self.storage = storage
        self.location = storage.location
        self.stats: dict = {"packs_stored": 0, "packs_known": 0, "commits": 0}
        self.warnings: list[str] = []
        self._lock = lock
        self._writable = writable
        self._untrusted = untrusted
        # Held ids in bounded RAM (store/idset.py).  A writable sink over a directory keeps them beside the
        # index and reuses them at the next open when the ids/ lists are the same; writers share a
        # repository, so the cache belongs to one session at a time (its flock): the others, a read-only
        # sink (which may run beside a writer) and a sink over another Storage build theirs privately.
        self._held_dir: str | None = None
        self._held_owner: FileLock | None = None
        self._held_names: set[str] = set()  # the ids/ lists the held ids were read from or written by us
        private_parent = None
        if isinstance(storage, LocalStorage):
            cache = os.path.join(storage.root, HELD_CACHE_DIR)
            private_parent = cache
            if writable:
                os.makedirs(cache, exist_ok=True)
                try:
                    self._held_owner = FileLock(os.path.join(cache, HELD_CACHE_LOCK), "held ids").acquire()
                    self._held_dir = cache
                except Locked:
                    pass
        self._held = IdSet(self._held_dir, parent=None if self._held_dir else private_parent)
        self._held_stale = False
        self._held_warnings: list[str] = []
        self._held_closed = False
        # Declarations are checked with the public key kept in the clear beside the sealed key.
        config = parse_config(storage.get(L.CONFIG), self.location)
        self.verifier = I.Verifier(config["id"], bytes.fromhex(parse_keyfile(storage.get(L.KEY))["signing_public_key"]))
        self._quarantined = {L.digest_of(n) for n in storage.list(L.QUARANTINE) if L.QUARANTINE_RE.match(n)}
        self.legacy_packs: set[str] = set()  # digests of packs whose id list has no proof (written before 0.3)
        self._held_loaded = False
        if writable:  # a read-only session (a restore from the other site) may never ask: read when first asked
            self._load_held(reuse=True)

    def _held_fingerprint(self) -> str:
        """What the held ids were read from: name, size and modification time of every listed ``ids/``
        object (a list added, gone, quarantined or rewritten changes it; this sink's own rewrites happen
        in a writable session, which invalidates the cache until it closes)."""
        h = hashlib.sha256()
        for name in self.list(L.IDS):
            st = os.stat(os.path.join(self.storage.root, name))  # a cache dir exists over a LocalStorage only
            h.update(f"{name} {st.st_size} {st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def _load_held(self, *, reuse: bool = False) -> None:
        """Held ids: from the lists on this disk (checked when they were stored, so not checked again), or,
        with ``reuse``, from the cache a previous session saved over the same lists."""
        self._held_loaded = True
        if reuse and self._held_dir is not None:
            cached = IdSet.load(self._held_dir, self._held_fingerprint())
            if cached is not None:
                self._held.close()
                self._held = cached
                cached.invalidate()  # this session may change the lists: no cache until close saves it
                self.legacy_packs = set(cached.extra.get("legacy", []))
                self._held_warnings = list(cached.extra.get("warnings", []))
                self._held_names = set(cached.extra.get("lists", []))
                self.warnings.extend(self._held_warnings)
                self.stats["held_from"] = "cache"
                self._held_stale = False
                return
        self._held.invalidate()
        legacy: set[str] = set()
        warnings: list[str] = []

        names = self.list(L.IDS)
        self._held_names = set(names)

        def listed() -> Iterator[bytes]:
            for name, data in self.get_many(names):
                try:
                    parsed = I.parse_list(data, name)
                except ValueError as exc:
                    warnings.append(f"{exc}; its chunks will be sent again")
                    continue
                if parsed.proof is None:
                    legacy.add(L.digest_of(name))
                yield from I.decode_ids(parsed.ids, name)

        self._held.rebuild(listed())  # a bulk load: one sort and merge, not a lookup per id
        self.warnings.extend(warnings)
        self._held_warnings = warnings
        self.legacy_packs = legacy
        self.stats["held_from"] = "lists"
        self._held_stale = False

    def _held_ids(self) -> IdSet:
        if not self._held_loaded:
            self._load_held(reuse=True)
        return self._held

    def _count_missing(self, refs: I.Buffer) -> int:
        """How many ids of the buffer ``refs`` are not held (looked up a batch at a time: only a batch of them
        is ever a bytes object each)."""
        self._held_ids()
        view, step = memoryview(refs), _REFS_BATCH * C.ID_SIZE
        return sum(self._held.contains_many(I.iter_ids(view[i : i + step])).count(False)
                   for i in range(0, len(view), step))

    def _save_held(self) -> None:
        """Keep the held ids for the next writable open (only when they are exactly the listed lists')."""
        if self._held_dir is None or self._held_stale:
            return
        if set(self.list(L.IDS)) != self._held_names:
            return  # another writer stored (or prune removed) lists meanwhile: not what these ids were read from
        try:
            self._held.save(self._held_fingerprint(), {"legacy": sorted(self.legacy_packs),
                                                      "warnings": self._held_warnings,
                                                      "lists": sorted(self._held_names)})
        except OSError as exc:  # a cache: the next open reads the lists again
            self.warnings.append(f"held ids not cached ({exc}); the next open reads the id lists again")

    @classmethod
    def open(cls, path: str, *, writable: bool, untrusted: bool, role: str = "", exclusive: bool = False) -> LocalSink:
        """Open the repository directory at ``path``; a writable sink holds a shared writer lock
        (store/lock.py RepositoryLock: other writers may write at the same time; its forget and prune
        take an exclusive lock as well); ``exclusive``: an exclusive lock instead (quarantine: no writer runs).

        :raises RepositoryNotFound: :raises Locked: an exclusive holder (or an older release) holds the lock.
        """
        storage, _config = open_storage(path)
        lock = RepositoryLock(storage, EXCLUSIVE if exclusive else SHARED, role).acquire() if writable else None
        try:
            return cls(storage, lock=lock, writable=writable, untrusted=untrusted)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    # --- reading ----------------------------------------------------------------
    def describe(self) -> tuple[bytes, bytes]:
        return self.storage.get(L.CONFIG), self.storage.get(L.KEY)

    def has(self, blob_id: bytes) -> bool:
        return blob_id in self._held_ids()

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

    def get_ranges(self, wanted: Sequence[tuple[str, int, int]]) -> builtins.list[tuple[int, bytes]]:
        """For each (pack name, offset, length): (the pack's size, those bytes, fewer at its end)."""
        for name, _offset, _length in wanted:
            if not L.is_pack(name):
                raise ValueError(f"ranges are read from packs only, not {name!r}")
        return ranges_reader(self.storage)(wanted)

    def trust(self, verifier: I.Verifier) -> None:
        """Nothing to do: the lists on this disk were checked when they were stored."""

    # --- writing ----------------------------------------------------------------
    def _need_write(self, what: str) -> None:
        if not self._writable:
            raise ReadOnly(self.location, what)

    def put_pack(self, name: str, data: bytes | bytearray | memoryview, ids: Sequence[bytes], proof: bytes) -> None:
        """Store the pack, then its signed id list; durable when it returns.

        :raises IntegrityError: the bytes are not the named pack, or ``proof`` is not a key holder's
            declaration that this pack holds exactly ``ids``.
        """
        self._need_write("storing packs")
        digest = L.digest_of(name)
        ids_blob = self._check_declaration(name, ids, proof)
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
        self._write_ids(digest, ids_blob, proof, ids)

    def declare_pack(self, name: str, ids: Sequence[bytes], proof: bytes) -> None:
        """Replace the id list of a stored pack by a key holder's signed declaration (the upgrade of a list
        written without proof, or one that does not verify).  :raises ObjectNotFound: no such pack."""
        self._need_write("declaring packs")
        ids_blob = self._check_declaration(name, ids, proof)
        digest = L.digest_of(name)
        if not L.is_pack(name) or not self.storage.exists(name):
            raise ObjectNotFound(name)
        if digest in self._quarantined:
            raise IntegrityError(f"pack {digest[:16]} is quarantined (damaged); its chunks are being sent again")
        self._write_ids(digest, ids_blob, proof, ids, replace=True)

    def _check_declaration(self, name: str, ids: Sequence[bytes], proof: bytes) -> bytes:
        ids_blob = I.encode_ids(ids)
        if not self.verifier.pack(L.digest_of(name), ids_blob, proof):
            raise IntegrityError(f"pack {L.digest_of(name)[:16]}: its declaration of the ids it holds is not signed "
                                 f"by this repository's key (not made by a key holder)")
        return ids_blob

    def _write_ids(self, digest: str, ids_blob: bytes, proof: bytes, ids: Sequence[bytes], *,
                   replace: bool = False) -> None:
        ids_name = L.ids_name(digest)
        data = I.encode_list(I.IDS_MAGIC, ids_blob, proof)
        stored_now = self._store_once(ids_name, data)
        self._held_names.add(ids_name)
        if not stored_now:
            stored = self.storage.get(ids_name)
            if stored != data and (replace or self.verifier.ids_object(digest, stored) is None):
                # A list without proof (or a forged one) gives way to the key holder's declaration.
                self.storage.put(ids_name, data, overwrite=True)
                self.legacy_packs.discard(digest)
                self._held_stale = True  # the old list may have claimed ids this pack does not hold
                self._held.add_many(ids)
                return
            if stored != data:
                ids = list(I.decode_ids(stored, ids_name))  # both verify: the stored list stays the declaration
        self.legacy_packs.discard(digest)
        self._held.add_many(ids)

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
               "time": rfc3339()}
        self._store_once(L.quarantine_name(digest), (json.dumps(doc, sort_keys=True) + "\n").encode())
        self._quarantined.add(digest)
        self._load_held()  # another pack may hold some of the same ids: recount from the lists
        return True

    def commit(self, name: str, data: bytes, refs: I.Buffer | Sequence[bytes], proof: bytes,
               claim: H.Claim) -> None:
        """Check the claim against this source's head, store the snapshot's signed refs, the new head, then
        the snapshot (the commit point).

        :param refs: the ids it references, sorted and unique, as one buffer of 32 bytes each (a list of
            ids is accepted too).
        :param claim: the source's tag and the snapshot this one continues (format/head.py).
        :raises IntegrityError: not the named object, or ``proof`` is not a key holder's.
        :raises MissingChunks: a ref is not held.
        :raises Fenced: the source is fenced against this side (``promote``/``handback``).
        :raises LineageConflict: the claimed parent is not the source's head here (compare-and-swap).
        """
        self._need_write("committing snapshots")
        refs = I.as_buffer(refs)
        digest = L.digest_of(name)
        if not L.SNAPSHOT_RE.match(name) or hashlib.sha256(data).hexdigest() != digest:
            raise IntegrityError(f"snapshot {digest[:16]}: content does not match its name")
        if not self.verifier.snapshot(digest, proof):
            raise IntegrityError(f"snapshot {digest[:16]} is not signed by this repository's key "
                                 f"(not made by a key holder); not committed")
        if self._untrusted and (not data.startswith(C.SNAPSHOT_MAGIC) or len(data) < 60 or
                                not C.FORMAT_VERSION_MIN <= int.from_bytes(data[8:10], "little")
                                <= C.FORMAT_VERSION_MAX):
            raise IntegrityError(f"snapshot {digest[:16]} is not a snapshot of a supported version")
        head = self.head(claim.tag)
        self._check_claim(head, claim, digest)
        if self._held_stale:  # a declaration replaced a list this session: recount before checking
            self._load_held()
        missing = self._count_missing(refs)
        if missing:  # other writers (sharing the repository) may have stored them since this session began
            self._load_held()
            missing = self._count_missing(refs)
        if missing:
            raise MissingChunks(digest[:16], missing)
        # refs, then the head, the snapshot last: its appearance is the commit point.  A head naming a
        # snapshot that never appeared (a crash here) accepts any parent next time (format/head.py).
        self._store_once(L.refs_name(digest), I.encode_list(I.REFS_MAGIC, I.encode_ids(refs), proof))
        self.storage.put(L.head_name(claim.tag), H.after_commit(head, digest).encode(), overwrite=True)
        self._store_once(name, data)
        self.stats["commits"] += 1

    @property
    def side(self) -> str:
        """Who commits through this sink: a sender over ``serve`` (untrusted), or this host itself."""
        return H.SIDE_REMOTE if self._untrusted else H.SIDE_LOCAL

    def head(self, tag: bytes) -> H.Head | None:
        """This source's head here, None when none was written.  :raises IntegrityError: unreadable."""
        name = L.head_name(tag)
        try:
            return H.decode_head(self.storage.get(name), name)
        except ObjectNotFound:
            return None
        except ValueError as exc:
            # A damaged head must not open the gate: refuse until it is repaired (handback/promote rewrite it).
            raise IntegrityError(f"{exc}; commits of this source are refused until 'replicator promote' or "
                                 f"'replicator handback' rewrites it") from None

    def _check_claim(self, head: H.Head | None, claim: H.Claim, digest: str) -> None:
        present = head is not None and head.snapshot is not None and self._intact_snapshot(head.snapshot)
        refusal = H.check_commit(head, claim, self.side, present, digest)
        if refusal is None:
            return
        if refusal.kind == "fenced":
            raise Fenced(self.location, refusal.message)
        raise LineageConflict(self.location, refusal.message)

    def _intact_snapshot(self, digest: str) -> bool:
        """Whether snapshot ``digest`` is stored and still hashes to its name (a rotted head is no head: the
        writer could not read it either, and numbers its commit above it)."""
        try:
            return hashlib.sha256(self.storage.get(L.snapshot_name(digest))).hexdigest() == digest
        except ObjectNotFound:
            return False

    def refs_of(self, digest: str) -> bytes:
        """The refs of stored snapshot ``digest`` (sorted, one buffer), what a commit's refs difference applies to.

        :raises ObjectNotFound: no snapshot or no refs.  :raises IntegrityError: a damaged refs object.
        """
        name = L.refs_name(digest)
        if not self.storage.exists(L.snapshot_name(digest)):
            raise ObjectNotFound(L.snapshot_name(digest))
        try:
            refs = bytes(I.parse_list(self.storage.get(name), name).ids)
        except ValueError as exc:
            raise IntegrityError(str(exc)) from None
        if not I.is_sorted_unique(refs):
            raise IntegrityError(f"{name}: ids out of order")
        return refs

    def legacy_snapshots(self) -> builtins.list[str]:
        """Digests of snapshots whose refs object has no proof (written before 0.3): 8 bytes read per snapshot."""
        found = []
        for name in self.list(L.SNAPSHOTS):
            digest = L.digest_of(name)
            try:
                head = self.storage.get(L.refs_name(digest), 0, len(I.REFS_MAGIC))
            except ObjectNotFound:
                continue  # no refs at all: the key holder's upgrade writes them (repo/upgrade.py)
            if head != I.REFS_MAGIC:
                found.append(digest)
        return found

    def declare_snapshot(self, name: str, proof: bytes) -> None:
        """Add a key holder's proof to the refs of a stored snapshot written without one (nothing to do when
        it has no refs: only the key holder's local upgrade can write those).

        :raises ObjectNotFound: no such snapshot.  :raises IntegrityError: bad proof.
        """
        self._need_write("declaring snapshots")
        digest = L.digest_of(name)
        if not L.SNAPSHOT_RE.match(name) or not self.storage.exists(name):
            raise ObjectNotFound(name)
        if not self.verifier.snapshot(digest, proof):
            raise IntegrityError(f"snapshot {digest[:16]}: the proof is not signed by this repository's key")
        refs_name = L.refs_name(digest)
        try:
            parsed = I.parse_list(self.storage.get(refs_name), refs_name)
        except ObjectNotFound:
            return
        except ValueError as exc:
            raise IntegrityError(str(exc)) from None
        if parsed.proof is None:
            self.storage.put(refs_name, I.encode_list(I.REFS_MAGIC, bytes(parsed.ids), proof), overwrite=True)

    # --- deleting: a key holder's forget, then prune by refs/ and ids/ alone (no key) ----------------
    def _exclusive(self, role: str):
        """An exclusive lock beside this session's shared one (a write session of ``serve`` told to forget
        or prune); nothing when the caller holds the lock (a Repository opened exclusively).

        :raises Locked: another writer holds a lock: refused at once, nothing deleted."""
        if self._lock is None or self._lock.kind == EXCLUSIVE:
            return contextlib.nullcontext()
        return self._lock.exclusively(role)

    def forget(self, name: str, proof: bytes) -> bool:
        with self._exclusive("forget"):
            return self._forget(name, proof)

    def prune(self, *, dry_run: bool = False) -> dict[str, int]:
        with contextlib.nullcontext() if dry_run else self._exclusive("prune"):
            return self._prune(dry_run=dry_run)

    def _forget(self, name: str, proof: bytes) -> bool:
        """Delete snapshot ``name``, then its refs, on the key holder's forget proof (format/idlist.py).

        :returns: False when it is not here (a retry after a lost answer: nothing to do).
        :raises IntegrityError: the proof is not a key holder's (nothing deleted).
        :raises RepositoryError: it is the head of a source here (the latest is never forgotten: the
            next commit of that source names it as its parent).
        """
        self._need_write("forgetting snapshots")
        digest = L.digest_of(name)
        if not L.SNAPSHOT_RE.match(name):
            raise ValueError(f"not a snapshot name: {name!r}")
        if not self.verifier.forget(digest, proof):
            raise IntegrityError(f"forget of snapshot {digest[:16]} is not signed by this repository's key (not "
                                 f"ordered by a key holder); nothing deleted")
        for head_name in self.storage.list(L.HEADS):
            if not L.HEAD_RE.match(head_name):
                continue
            try:
                head = H.decode_head(self.storage.get(head_name), head_name)
            except (ObjectNotFound, ValueError):
                continue
            if head.snapshot == digest:
                raise RepositoryError(self.location, f"snapshot {digest[:16]} is the latest of its source here "
                                                     f"({head_name}): it is never forgotten")
        present = self.storage.exists(name)
        self.storage.delete(name)  # the snapshot first: it is what readers see; refs without it are garbage
        self.storage.delete(L.refs_name(digest))
        return present

    def _prune(self, *, dry_run: bool = False) -> dict[str, int]:
        """Delete every pack that no remaining snapshot's ``refs/`` names, with its id list, key-less.

        A pack's contents are its ``ids/`` list (checked when stored); a pack without a readable list is
        kept (``packs_kept_unlisted``), and so is a quarantined one.  Orphaned ``ids/`` and ``refs/`` go.
        Memory: every referenced id once (32 bytes each, as the key holder's prune).
        :returns: the counters of ``constants.PRUNE_COUNTERS``.
        :raises IntegrityError: a snapshot has no usable refs/ object: what it references is unknown,
            so nothing is deleted (``replicator upgrade`` at the key holder writes it).
        """
        self._need_write("pruning")
        report = dict.fromkeys(C.PRUNE_COUNTERS, 0)
        snapshots = {L.digest_of(n) for n in self.storage.list(L.SNAPSHOTS) if L.SNAPSHOT_RE.match(n)}
        referenced: set[bytes] = set()
        for digest in sorted(snapshots):
            name = L.refs_name(digest)
            try:
                referenced.update(I.decode_ids(I.parse_list(self.storage.get(name), name).ids, name))
            except (ObjectNotFound, ValueError) as exc:
                why = "it has no refs/ object" if isinstance(exc, ObjectNotFound) else f"its {name} is unusable ({exc})"
                raise IntegrityError(f"snapshot {digest[:16]}: {why}, so what it references is unknown: nothing "
                                     f"pruned (run 'replicator upgrade' where the passphrase is)") from None
        report["snapshots"] = len(snapshots)
        packs = {L.digest_of(n): n for n in self.storage.list(L.PACKS) if L.is_pack(n)}
        report["packs_total"] = len(packs)
        listed: set[str] = set()
        for ids_name in sorted(self.storage.list(L.IDS)):
            if not L.IDS_RE.match(ids_name):
                continue
            digest = L.digest_of(ids_name)
            if digest not in packs:  # its pack is gone: an orphan
                report["id_lists_deleted"] += 1
                if not dry_run:
                    self.storage.delete(ids_name)
                continue
            try:
                ids = I.decode_ids(I.parse_list(self.storage.get(ids_name), ids_name).ids, ids_name)
                used = digest in self._quarantined or any(i in referenced for i in ids)
            except ValueError:
                continue  # not listed: counted as kept below
            listed.add(digest)
            if used:
                continue
            report["packs_deleted"] += 1
            report["bytes_deleted"] += self.storage.size(packs[digest])
            report["id_lists_deleted"] += 1
            if not dry_run:
                self.storage.delete(ids_name)  # first: never advertise ids of a pack that is gone
                self.storage.delete(packs[digest])
        report["packs_kept_unlisted"] = len(set(packs) - listed)
        for refs_name in sorted(self.storage.list(L.REFS)):
            if L.REFS_RE.match(refs_name) and L.digest_of(refs_name) not in snapshots:
                report["refs_deleted"] += 1
                if not dry_run:
                    self.storage.delete(refs_name)
        if report["packs_deleted"] and not dry_run:
            self._load_held()  # what was deleted is held no more
        return report

    def _restore_quarantined(self, name: str, data: bytes | bytearray | memoryview) -> None:
        """The writer sent a pack that is stored damaged: these bytes hash to its name, so they are the
        object itself; put them back and lift the quarantine (the one case an object is rewritten)."""
        digest = L.digest_of(name)
        if hashlib.sha256(data).hexdigest() != digest:
            raise IntegrityError(f"pack {digest[:16]}: content does not match its name")
        self.storage.put(name, data, overwrite=True)
        self.storage.delete(L.quarantine_name(digest))
        self._quarantined.discard(digest)
        self.stats["packs_restored"] = self.stats.get("packs_restored", 0) + 1

    def _store_once(self, name: str, data: bytes | bytearray | memoryview) -> bool:
        """:returns: False when the object existed (objects are named by content or by their pack)."""
        try:
            self.storage.put(name, data)
        except FileExistsError:
            return False
        return True

    def close(self) -> None:
        if not self._held_closed:
            self._held_closed = True
            if self._held_stale and self._held_dir is not None:
                self._load_held()  # a list replaced this session: what is saved must be what the lists say
            self._save_held()
            self._held.close()
            if self._held_owner is not None:
                self._held_owner.release()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> LocalSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


"""Repository: a repository directory opened with the passphrase (the key holder's side).

Owns: ``init``, ``open`` (with or without the writer lock), the index cache
kept in line with the packs, the read side (blobs, trees, snapshots), and
``writer()``, which returns the one key-holding Writer over this
repository's LocalSink, so a local sync writes exactly what ``serve`` would.

A locked open also brings a repository written by an older release up to
date (repo/upgrade.py): the key-less ``ids/`` and ``refs/`` objects that a
served repository needs are written from the pack tables and the trees.

Must never: write packs or snapshots itself (the Writer does, through the
sink), trust the index for anything but locating blobs (it is a cache), or
recurse on tree depth.
"""
from __future__ import annotations

import collections
import itertools
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from replicator import constants as C
from replicator.core import crypto
from replicator.core.compress import DEFAULT_LEVEL
from replicator.core.params import DEFAULT_PARAMS, ChunkerParams
from replicator.errors import (
    IntegrityError,
    ObjectNotFound,
    ReplicatorError,
    RepositoryError,
    RepositoryExists,
    RepositoryLocked,
    StorageError,
    UnsupportedVersion,
)
from replicator.format import layout as L
from replicator.format.entry import KIND_DIR, Entry
from replicator.format.pack import BlobEntry, open_blob, pack_key, parse_header
from replicator.format.repoconfig import make_config
from replicator.format.snapshot import Snapshot, open_snapshot
from replicator.format.tree import TreeFormatError, TreeItem, decode_tree
from replicator.repo.keyring import Keyring
from replicator.repo.keys import KeySlots, local_identity, seal_slot
from replicator.repo.lineage import LineageMemory
from replicator.repo.local_sink import LocalSink, open_storage
from replicator.repo.tables import TABLE_BATCH, ranges_reader, read_tables
from replicator.repo.writer import Writer
from replicator.store.index import Index
from replicator.store.local import LocalStorage
from replicator.store.location import is_object_url, open_location
from replicator.store.lock import EXCLUSIVE, SHARED, Locked, RepositoryLock

if TYPE_CHECKING:
    from replicator.repo.upgrade import UpgradeReport

INDEX_FILE = "index.sqlite"
TREE_ROUND = 256  # trees read in one round by walk_tree
TREE_AHEAD_BYTES = 8 << 20  # tree blobs walk_tree holds read ahead (decoded), at most (plus one round)
TREE_PENDING_MAX = 1 << 16  # subtree ids walk_tree remembers to read ahead (32 bytes each)
SPAN_MAX = 8 << 20  # bytes of neighbouring blobs read as one range
SPAN_GAP = 4096  # bytes of other blobs read and skipped to keep one range, by a restore's rounds only
READ_AHEAD = 32  # blobs read in one round by read_blobs (32 x 1 MiB at most in flight)


def _at(exc: IntegrityError, path: str) -> IntegrityError:
    """``exc``, naming the directory whose tree could not be read."""
    return IntegrityError(f"{exc} (the tree of '{path or '/'}')")


def generation_order(snaps: list[Snapshot]) -> list[Snapshot]:
    """Snapshots by source name, then generation (oldest first); ties by recorded time, then id.

    This is the only order of snapshots: a generation is numbered by the one
    writer above every snapshot it sees, so a higher one was committed later,
    whatever ``time_ns`` (the primary's wall clock, possibly wrong) says.
    """
    return sorted(snaps, key=lambda s: (s.source, s.generation, s.time_ns, s.id))


@dataclass(frozen=True)
class DamagedSnapshot:
    """An object under ``snapshots/`` that could not be read; ``junk``: its name is not a snapshot name."""

    name: str
    error: ReplicatorError
    junk: bool = False

    @property
    def id(self) -> str:
        return L.digest_of(self.name)

    @property
    def problem(self) -> str:
        """One line naming the object (``snapshot <id>: <what is wrong>``)."""
        return " ".join(str(self.error).removeprefix("integrity error: ").split())


@dataclass
class SnapshotListing:
    """What ``Repository.read_snapshots`` found: readable snapshots in generation order, and the damaged."""

    snapshots: list[Snapshot]
    damaged: list[DamagedSnapshot] = field(default_factory=list)
    location: str = ""

    def sources(self) -> list[str]:
        return sorted({s.source for s in self.snapshots})

    def sole_source(self) -> str | None:
        """The one source; None when there is none.  :raises RepositoryError: several sources."""
        sources = self.sources()
        if len(sources) > 1:
            raise RepositoryError(self.location, f"holds snapshots of {len(sources)} sources "
                                                 f"({', '.join(map(repr, sources))}); name the source: "
                                                 f"generations order one source, clocks order nothing")
        return sources[0] if sources else None

    def latest(self, source: str | None) -> Snapshot | None:
        """The highest generation of ``source`` (None: of the sole source); None when it has none.

        :raises RepositoryError: ``source`` is None and there are several.
        :raises IntegrityError: two snapshots claim the highest generation (which is latest is unknown).
        """
        if source is None:
            source = self.sole_source()
        mine = [s for s in self.snapshots if s.source == source]
        if not mine:
            return None
        top = [s for s in mine if s.generation == mine[-1].generation]  # generation order: the top is last
        if len(top) > 1:
            raise IntegrityError(f"source {source!r} has {len(top)} snapshots of generation {top[0].generation} "
                                 f"({', '.join(s.short_id for s in top)}); which is the latest is unknown: "
                                 f"name one by its id")
        return top[0]


def _new_storage(path: str):
    """Empty storage for ``init`` at a directory (absent or empty) or an s3:// URL (no config under the prefix)."""
    if is_object_url(path):
        storage = open_location(path)
        if storage.exists(L.CONFIG) or storage.exists(L.KEY):
            raise RepositoryExists(path)
        return storage
    path = os.path.abspath(path)
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise RepositoryExists(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{path}: {exc.strerror}") from None
    return LocalStorage(path)


class Repository:
    """An open, unlocked repository.  Use as a context manager."""

    key_slot: str = L.DEFAULT_KEY_SLOT  # the key slot whose passphrase opened it (repo/keys.py)

    def __init__(self, storage, keyring: Keyring, *, exclusive: bool, index_path: str | None = None,
                 shared: bool = False, role: str = "") -> None:
        """``storage``: a LocalStorage, or any read-only Storage (over SSH) with ``index_path`` for the index
        cache (the index of a local repository lives in its directory).

        ``exclusive``: take the repository lock (store/lock.py RepositoryLock), exclusive unless ``shared``
        (a sync: writers share the repository; a shared open neither removes temporaries nor upgrades,
        which need every writer gone)."""
        self.storage = storage
        self.location = storage.location
        self.keyring = keyring
        self.config = keyring.config
        self.id = keyring.id
        self.params: ChunkerParams = keyring.params
        self.compression_level: int = keyring.compression_level
        self.keys = keyring.keys
        self.public_key = keyring.public_key
        self.chunk_hasher = keyring.chunk_hasher
        self.tree_hasher = keyring.tree_hasher
        self._lock: RepositoryLock | None = None
        self._index: Index | None = None
        self._pack_keys: dict[str, crypto.Aead] = {}
        self._reader: ThreadPoolExecutor | None = None  # read_blobs's next round (started on first use)
        # Packs found damaged while bringing the index up to date; verify reports them.
        self.damaged_packs: dict[str, str] = {}
        # Things an operator should hear about that did not stop the operation.
        self.warnings: list[str] = []
        self.upgraded: UpgradeReport | None = None  # the UpgradeReport of a locked open, when anything was brought up to date
        try:
            if exclusive:
                try:
                    self._lock = RepositoryLock(storage, SHARED if shared else EXCLUSIVE, role).acquire()
                except Locked as exc:
                    raise RepositoryLocked(self.location, exc.holder) from None
                self.warnings.extend(self._lock.warnings)  # stale locks taken over
                if not shared:
                    storage.clean_temporaries()
            self._index = Index(index_path or os.path.join(storage.root, INDEX_FILE), self.id)
            if self._index.rebuilt_because:  # a damaged or empty cache, set aside: the packs are indexed again
                self.warnings.append(self._index.rebuilt_because)
            self.catch_up()
            if exclusive:
                self._upgrade(shared)
        except BaseException:
            self.close()
            raise

    def _upgrade(self, shared: bool) -> None:
        """Bring objects an older release wrote up to date (repo/upgrade.py).  A shared (writer's) open does
        it only when something is missing, under an exclusive lock taken beside its shared one; when
        another writer holds a lock it is left for later, with a warning."""
        from replicator.repo.upgrade import upgrade

        if not shared:
            report = upgrade(self)
        elif self._needs_upgrade():
            assert self._lock is not None
            try:
                with self._lock.exclusively("upgrade"):
                    report = upgrade(self)
            except Locked as exc:
                self.warnings.append(f"{self.location} holds objects of an older release, not brought up to date "
                                     f"now: {exc.holder} (run 'replicator upgrade' when no writer runs)")
                return
        else:
            return
        if report.changed:
            self.upgraded = report

    def _needs_upgrade(self) -> bool:
        from replicator.format import idlist as I
        from replicator.repo.upgrade import DECLARATIONS_META

        if self.index.get_meta(DECLARATIONS_META) != str(I.LIST_VERSION):
            return True
        packs = sum(1 for n in self.storage.list(L.PACKS) if L.is_pack(n))
        snapshots = sum(1 for n in self.storage.list(L.SNAPSHOTS) if L.SNAPSHOT_RE.match(n))
        return (sum(1 for _ in self.storage.list(L.IDS)) < packs
                or sum(1 for _ in self.storage.list(L.REFS)) < snapshots)

    # --- lifecycle ---------------------------------------------------------
    @classmethod
    def init(cls, path: str, passphrase: bytes, *, params: ChunkerParams | None = None,
             log2n: int = C.SCRYPT_LOG2N_DEFAULT, compression_level: int = DEFAULT_LEVEL,
             created_by: str | None = None) -> Repository:
        """A new repository at ``path`` whose first key slot, ``keys/default``, seals a new master key under
        ``passphrase`` (labelled ``created_by``, default ``user@host`` of this process)."""
        storage = _new_storage(path)
        repo_id = crypto.random_bytes(32)
        master = crypto.random_bytes(C.KEY_SIZE)
        # The key file first, the config last: a directory without config is
        # not a repository, so a crash during init leaves nothing half-made.
        storage.put(L.KEY, seal_slot(master, repo_id, L.DEFAULT_KEY_SLOT, passphrase, log2n,
                                     created_by or local_identity()))
        storage.put(L.CONFIG, make_config(repo_id, params or DEFAULT_PARAMS, compression_level, time.time_ns()))
        storage.close()
        return cls.open(path, passphrase, exclusive=True)

    @classmethod
    def open(cls, path: str, passphrase: bytes, *, exclusive: bool = False, key: str | None = None,
             shared: bool = False, role: str = "") -> Repository:
        """Unlock with ``passphrase``: key slot ``key`` only, else each slot (repo/keys.py); ``key_slot`` then
        names the one that matched, and ``warnings`` the damaged slots skipped.

        :raises WrongPassphrase: no slot tried opens with it.
        """
        storage, config = open_storage(path)
        unlocked = KeySlots(storage, config).unlock(passphrase, key)
        repo = cls(storage, unlocked.keyring, exclusive=exclusive, shared=shared, role=role)
        repo.key_slot = unlocked.slot.name
        repo.warnings[:0] = unlocked.warnings
        return repo

    open_storage = staticmethod(open_storage)

    @property
    def index(self) -> Index:
        """The blob-location cache.  :raises RepositoryError: the repository was closed."""
        if self._index is None:
            raise RepositoryError(self.location, "is closed")
        return self._index

    @property
    def locked(self) -> bool:
        """Whether this process holds the writer lock (opened with ``exclusive=True``)."""
        return self._lock is not None

    def writer(self, *, owned: bool = False, lineage: LineageMemory | None = None) -> Writer:
        """The key-holding writer over this repository's local sink (needs the lock).

        :param owned: the writer closes this repository when it is closed.
        :param lineage: what the caller remembers committing here (checked before each commit).
        """
        if not self.locked:
            raise RepositoryError(self.location, "writing needs the repository opened exclusively (locked)")
        sink = LocalSink(self.storage)  # under our lock; trusted: the writer is this process
        sink.warnings.extend(self.warnings)  # an index rebuilt at open reaches the sync's report
        return Writer(self.keyring, sink, on_pack=self.index.add_pack, owned=[self] if owned else [],
                      lineage=lineage)

    def close(self) -> None:
        """Release the lock and the index."""
        if self._reader is not None:
            self._reader.shutdown(wait=True, cancel_futures=True)
            self._reader = None
        if self._index is not None:
            self._index.close()
            self._index = None
        self.storage.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- index upkeep ------------------------------------------------------
    def catch_up(self) -> tuple[int, int]:
        """Bring the index in line with the packs in storage.

        Packs in storage but not in the index (written by ``serve``, or before a
        crash) are indexed from their tables, read by ranges: a pack is never
        read whole or re-hashed here (``verify --data`` does that).  Rows of
        packs that are gone are dropped.
        :returns: (packs added, packs dropped)
        """
        quarantined = {L.pack_name(L.digest_of(n)) for n in self.storage.list(L.QUARANTINE) if L.QUARANTINE_RE.match(n)}
        stored = {n for n in self.storage.list(L.PACKS) if L.is_pack(n)}
        known = self.index.packs()
        added = dropped = 0
        # Intact packs first; a quarantined (damaged) pack only fills in blobs no intact pack holds, so
        # the copies a sync stored again are the ones read, and what is still intact in it stays readable.
        todo = sorted(stored - known.keys(), key=lambda n: (n in quarantined, n))
        get_ranges = ranges_reader(self.storage)
        for i in range(0, len(todo), TABLE_BATCH):
            batch = todo[i : i + TABLE_BATCH]
            for name, (size, entries) in zip(batch, read_tables(get_ranges, batch, self.keys.encrypt)):
                if isinstance(entries, ObjectNotFound):
                    continue  # deleted since the listing (prune elsewhere)
                if isinstance(entries, ReplicatorError):
                    # Not indexed, so nothing can reference it through this index:
                    # leave it out and let verify report it; the rest stays usable.
                    self.damaged_packs[name] = str(entries)
                    continue
                self.index.add_pack(name, size, entries, replace=name not in quarantined)
                added += 1
        for name in known.keys() - stored:
            self.index.remove_pack(name)
            dropped += 1
        return added, dropped

    def rebuild_index(self) -> int:
        """Forget the index and rebuild it from the pack tables. :returns: blobs indexed."""
        self.index.clear()
        self.catch_up()
        return self.index.count()

    # --- reading -----------------------------------------------------------
    def chunker(self):
        return self.keyring.chunker()

    def has_blob(self, blob_id: bytes) -> bool:
        return self.index.has(blob_id)

    def _aead_for(self, pack: str) -> crypto.Aead:
        aead = self._pack_keys.get(pack)
        if aead is None:
            salt = parse_header(self.storage.get(pack, 0, C.PACK_HEADER_SIZE), pack)
            aead = self._pack_keys[pack] = pack_key(self.keys.encrypt, salt)
        return aead

    def _locate(self, blob_id: bytes) -> tuple[str, BlobEntry]:
        found = self.index.lookup(blob_id)
        if found is None:
            raise IntegrityError(f"blob {blob_id.hex()[:16]} is missing from the repository")
        return found

    def _open(self, pack: str, entry: BlobEntry, sealed: bytes) -> bytes:
        if len(sealed) != entry.length:
            raise IntegrityError(f"pack {pack} is truncated")
        return open_blob(self._aead_for(pack), entry, sealed, self.chunk_hasher if entry.type == C.BLOB_DATA
                         else self.tree_hasher, pack)

    def read_blob(self, blob_id: bytes) -> bytes:
        """:returns: the verified plaintext of a blob.  :raises IntegrityError: missing or damaged."""
        pack, entry = self._locate(blob_id)
        try:
            sealed = self.storage.get(pack, entry.offset, entry.length)
        except ObjectNotFound:
            raise IntegrityError(f"pack {pack} is missing") from None
        return self._open(pack, entry, sealed)

    def read_blobs(self, blob_ids: Iterable[bytes], ahead: int = READ_AHEAD, gap: int = 0) -> Iterator[bytes]:
        """The verified plaintexts of ``blob_ids``, in order, read ahead ``ahead`` at a time in one
        pipelined round (a storage over SSH answers them in one round trip; a local one reads each in turn).
        While one round is handed out, the next is read and opened on the repository's reading thread, so
        the network (or the disk), the decryption and the caller's writes overlap.  Safe to call from two
        threads at once (restore/prefetch.py does).  ``gap``: bytes of unwanted blobs a range may read
        over to join two wanted ones (``SPAN_GAP`` for a restore's small files, whose directory's tree
        lies between them; 0, the default, reads exactly the wanted bytes: a failback or a walk that
        reads trees and chunks apart would otherwise read each pack twice).

        :raises IntegrityError: a blob is missing or damaged (when its turn comes).
        """
        get_ranges = ranges_reader(self.storage)
        batches = _batched(blob_ids, ahead)
        first = next(batches, None)
        if first is None:
            return
        second = next(batches, None)
        if second is None:  # one round (a small file): no thread
            yield from _in_turn(self._read_batch(get_ranges, first, gap))
            return
        if self._reader is None:
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")
        nxt = self._reader.submit(self._read_batch, get_ranges, first, gap)
        for batch in itertools.chain((second,), batches):
            current, nxt = nxt, self._reader.submit(self._read_batch, get_ranges, batch, gap)
            try:
                yield from _in_turn(current.result())
            except BaseException:
                nxt.cancel()
                raise
        yield from _in_turn(nxt.result())

    def _read_batch(self, get_ranges, blob_ids: list[bytes], gap: int = 0) -> list[bytes | IntegrityError]:
        """One round: each blob's plaintext, or the IntegrityError that its turn raises.

        Blobs that lie next to each other in a pack (a file's chunks, the small files of one directory:
        written in that order) are read as one range of at most ``SPAN_MAX`` bytes, so a round costs a
        few requests (over ssh://) or reads (locally), not one per blob; two blobs at most ``gap`` bytes
        apart too.
        """
        found = self.index.lookup_many(blob_ids) if len(blob_ids) > 1 else {}
        located = [found.get(b) or self._locate(b) for b in blob_ids]  # _locate raises for a missing one
        spans: list[tuple[str, int, int, list[int]]] = []  # (pack, start, end, indexes of its blobs)
        for i in sorted(range(len(located)), key=lambda i: (located[i][0], located[i][1].offset)):
            pack, entry = located[i]
            if spans and spans[-1][0] == pack and 0 <= entry.offset - spans[-1][2] <= gap \
                    and entry.offset + entry.length - spans[-1][1] <= SPAN_MAX:
                last = spans[-1]
                spans[-1] = (pack, last[1], max(last[2], entry.offset + entry.length), last[3] + [i])
            else:
                spans.append((pack, entry.offset, entry.offset + entry.length, [i]))
        try:
            got = get_ranges([(pack, start, end - start) for pack, start, end, _i in spans])
        except ObjectNotFound as exc:
            raise IntegrityError(f"{exc}: a pack is missing") from None
        out: list[bytes | IntegrityError] = [b""] * len(located)
        for (pack, start, _end, indexes), (_size, data) in zip(spans, got):
            for i in indexes:
                entry = located[i][1]
                try:
                    out[i] = self._open(pack, entry, data[entry.offset - start : entry.offset - start + entry.length])
                except IntegrityError as exc:
                    out[i] = exc
        return out

    def snapshot_names(self) -> list[str]:
        return sorted(n for n in self.storage.list(L.SNAPSHOTS) if L.SNAPSHOT_RE.match(n))

    def load_snapshot(self, name: str) -> Snapshot:
        return open_snapshot(name, self.storage.get(name), self.keys.encrypt, self.public_key, self.id)

    def read_snapshots(self) -> SnapshotListing:
        """Every snapshot object under ``snapshots/``: the readable ones in generation order, and the rest.

        One damaged object never hides the others: it is described in
        ``damaged`` (as is any object whose name is not a snapshot name), and
        the caller names it to the operator.
        """
        snaps: list[Snapshot] = []
        damaged: list[DamagedSnapshot] = []
        for name in sorted(self.storage.list(L.SNAPSHOTS)):
            if not L.SNAPSHOT_RE.match(name):
                damaged.append(DamagedSnapshot(name, IntegrityError(f"{name} is not a snapshot name"), junk=True))
                continue
            try:
                snaps.append(self.load_snapshot(name))
            except ObjectNotFound:
                continue  # forgotten since the listing
            except (IntegrityError, UnsupportedVersion, StorageError) as exc:
                damaged.append(DamagedSnapshot(name, exc))
        return SnapshotListing(generation_order(snaps), damaged, self.location)

    def snapshots(self, damaged: list[str] | None = None) -> list[Snapshot]:
        """All readable snapshots in generation order: by source, then generation (oldest first).

        The order never depends on ``time_ns`` (the primary's clock, which can be wrong).
        :param damaged: when given, damaged snapshots are described here and
            skipped; otherwise the first one raises.
        :raises IntegrityError: a damaged snapshot, unless ``damaged`` is given.
        """
        listing = self.read_snapshots()
        for bad in listing.damaged:
            if bad.junk:
                continue  # not a snapshot name: nothing this program wrote
            if damaged is None:
                raise bad.error
            damaged.append(str(bad.error))
        return listing.snapshots

    def find_snapshot(self, ref: str | None = None, source: str | None = None, *,
                      listing: SnapshotListing | None = None) -> Snapshot:
        """The snapshot whose id starts with ``ref``, or the latest: the highest generation (of ``source``).

        Damaged snapshots are skipped, unless ``ref`` names one.  Without
        ``source``, the repository must hold a single source: across sources
        only the clocks could say which is "latest", and they are not trusted.
        :param listing: what ``read_snapshots`` returned, to read the snapshots only once.
        :raises RepositoryError: no match, an ambiguous prefix, no snapshot, or several sources.
        :raises IntegrityError: ``ref`` names a damaged snapshot; the latest generation is repeated.
        """
        listing = listing if listing is not None else self.read_snapshots()
        if ref:
            ref = ref.lower()
            hits = [s for s in listing.snapshots if s.id.startswith(ref)]
            bad = [d for d in listing.damaged if not d.junk and d.id.startswith(ref)]
            if len(hits) + len(bad) != 1:
                raise RepositoryError(self.location, f"{'no' if not hits and not bad else 'more than one'} "
                                                     f"snapshot matches {ref!r}")
            if bad:
                raise bad[0].error
            return hits[0]
        latest = listing.latest(source)
        if latest is None:
            others = listing.sources()
            raise RepositoryError(self.location, "has no snapshot yet" if source is None
                                  else f"has no snapshot of source {source!r}"
                                  + (f"; its sources: {', '.join(map(repr, others))}" if others else ""))
        return latest

    def read_tree(self, tree_id: bytes, parent: str) -> list[TreeItem]:
        try:
            return decode_tree(self.read_blob(tree_id), parent)
        except TreeFormatError as exc:
            raise IntegrityError(f"tree {tree_id.hex()[:16]} at '{parent or '/'}': {exc}") from None

    def walk_tree(self, tree_id: bytes, parent: str = "") -> Iterator[Entry]:
        """All entries under a tree, in pre-order (a directory before its contents); see walk_items."""
        return (item.entry for item in self.walk_items(tree_id, parent))

    def walk_items(self, tree_id: bytes, parent: str = "") -> Iterator[TreeItem]:
        """All items (entries, with their subtree ids) under a tree, in pre-order (a directory before its
        contents, names in byte order); no recursion.

        Trees are read ahead in rounds of up to ``TREE_ROUND``, breadth first: the subtrees met so far
        that are not read yet go in the round of the next tree needed, and each tree read ahead is
        decoded at once so that its own subtrees go in the next round.  Over ssh:// a tree of thousands
        of directories costs a few round trips, not one per directory.  What is read ahead waits
        decoded, for at most ``TREE_AHEAD_BYTES`` of tree blobs (then trees are read as needed); a
        tree that does not decode fails the walk when the walk reaches it.
        """
        get_ranges = ranges_reader(self.storage)
        ahead: dict[tuple[bytes, str], tuple[list[TreeItem] | IntegrityError, int]] = {}
        held = 0
        pending: collections.deque[tuple[bytes, str]] = collections.deque()  # subtrees met, not read yet

        def decode(tid: bytes, data: bytes, path: str) -> list[TreeItem] | IntegrityError:
            try:
                items = decode_tree(data, path)
            except TreeFormatError as exc:
                return IntegrityError(f"tree {tid.hex()[:16]} at '{path or '/'}': {exc}")
            if len(pending) < TREE_PENDING_MAX:
                pending.extend((it.subtree, it.entry.path) for it in items if it.entry.kind == KIND_DIR)
            return items

        def tree(tid: bytes, path: str) -> list[TreeItem]:
            nonlocal held
            found = ahead.pop((tid, path), None)
            if found is not None:
                items, size = found
                held -= size
            else:
                wanted = [(tid, path)]
                seen = {(tid, path)}
                while pending and len(wanted) < TREE_ROUND and held < TREE_AHEAD_BYTES:
                    key = pending.popleft()
                    if key not in seen and key not in ahead:
                        seen.add(key)
                        wanted.append(key)
                try:
                    got = self._read_batch(get_ranges, [t for t, _p in wanted])
                except IntegrityError:  # a tree read ahead is missing: read the one needed alone
                    try:
                        wanted, got = wanted[:1], self._read_batch(get_ranges, [tid])
                    except IntegrityError as exc:  # the one needed is missing (its pack, or from the index)
                        raise _at(exc, path) from None
                first = got[0]
                if isinstance(first, IntegrityError):
                    raise _at(first, path)
                items = decode(tid, first, path)
                for (t, p), data in zip(wanted[1:], got[1:]):
                    # a damaged tree read ahead fails the walk only when the walk reaches it
                    ahead[(t, p)] = (_at(data, p), 0) if isinstance(data, IntegrityError) else (decode(t, data, p), len(data))
                    held += 0 if isinstance(data, IntegrityError) else len(data)
            if isinstance(items, IntegrityError):
                raise items
            return items

        stack = [iter(tree(tree_id, parent))]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
                continue
            yield item
            if item.entry.kind == KIND_DIR:
                stack.append(iter(tree(item.subtree, item.entry.path)))


def _batched(items: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _in_turn(results: list[bytes | IntegrityError]) -> Iterator[bytes]:
    """The plaintexts of a round, raising a blob's error when its turn comes (not before the blobs ahead)."""
    for got in results:
        if isinstance(got, IntegrityError):
            raise got
        yield got

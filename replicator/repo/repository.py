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

import os
import time
from collections.abc import Iterator

from replicator import constants as C
from replicator.core import crypto
from replicator.core.compress import DEFAULT_LEVEL
from replicator.core.params import DEFAULT_PARAMS, ChunkerParams
from replicator.errors import (
    IntegrityError,
    ObjectNotFound,
    RepositoryError,
    RepositoryExists,
    RepositoryLocked,
    StorageError,
    UnsupportedVersion,
)
from replicator.format import keyfile as K
from replicator.format import layout as L
from replicator.format.entry import KIND_DIR, Entry
from replicator.format.pack import BlobEntry, open_blob, open_table, pack_key, parse_header, table_range
from replicator.format.repoconfig import make_config
from replicator.format.snapshot import Snapshot, open_snapshot
from replicator.format.tree import TreeFormatError, TreeItem, decode_tree
from replicator.repo.keyring import Keyring
from replicator.repo.local_sink import LOCK_FILE, LocalSink, open_storage
from replicator.repo.writer import Writer
from replicator.store.index import Index
from replicator.store.local import LocalStorage
from replicator.store.lock import FileLock, Locked

INDEX_FILE = "index.sqlite"


def read_table_from(storage, name: str, encrypt_key: bytes) -> list[BlobEntry]:
    """The table of a stored pack, read by ranges (header, footer, table): never the whole pack.

    :raises IntegrityError: :raises UnsupportedVersion: :raises ObjectNotFound:
    """
    size = storage.size(name)
    salt = parse_header(storage.get(name, 0, C.PACK_HEADER_SIZE), name)
    start, length = table_range(size, storage.get(name, max(0, size - C.PACK_FOOTER_SIZE), C.PACK_FOOTER_SIZE),
                                name)
    return open_table(salt, storage.get(name, start, length), start, name, encrypt_key)


class Repository:
    """An open, unlocked repository.  Use as a context manager."""

    def __init__(self, storage: LocalStorage, keyring: Keyring, *, exclusive: bool) -> None:
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
        self._lock: FileLock | None = None
        self._index: Index | None = None
        self._pack_keys: dict[str, crypto.Aead] = {}
        # Packs found damaged while bringing the index up to date; verify reports them.
        self.damaged_packs: dict[str, str] = {}
        # Things an operator should hear about that did not stop the operation.
        self.warnings: list[str] = []
        self.upgraded = None  # the UpgradeReport of a locked open, when anything was brought up to date
        try:
            if exclusive:
                try:
                    self._lock = FileLock(os.path.join(storage.root, LOCK_FILE)).acquire()
                except Locked as exc:
                    raise RepositoryLocked(self.location, exc.holder) from None
                storage.clean_temporaries()
            self._index = Index(os.path.join(storage.root, INDEX_FILE), self.id)
            self.catch_up()
            if exclusive:
                from replicator.repo.upgrade import upgrade

                report = upgrade(self)
                if report.changed:
                    self.upgraded = report
        except BaseException:
            self.close()
            raise

    # --- lifecycle ---------------------------------------------------------
    @classmethod
    def init(cls, path: str, passphrase: bytes, *, params: ChunkerParams | None = None,
             log2n: int = C.SCRYPT_LOG2N_DEFAULT, compression_level: int = DEFAULT_LEVEL) -> Repository:
        path = os.path.abspath(path)
        if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
            raise RepositoryExists(path)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{path}: {exc.strerror}") from None
        storage = LocalStorage(path)
        repo_id = crypto.random_bytes(32)
        master = crypto.random_bytes(C.KEY_SIZE)
        # The key file first, the config last: a directory without config is
        # not a repository, so a crash during init leaves nothing half-made.
        storage.put(L.KEY, K.make_keyfile(master, repo_id, passphrase, log2n))
        storage.put(L.CONFIG, make_config(repo_id, params or DEFAULT_PARAMS, compression_level, time.time_ns()))
        return cls.open(path, passphrase, exclusive=True)

    @classmethod
    def open(cls, path: str, passphrase: bytes, *, exclusive: bool = False) -> Repository:
        storage, _config = open_storage(path)
        keyring = Keyring.unlock(storage.get(L.CONFIG), storage.get(L.KEY), passphrase, storage.location)
        return cls(storage, keyring, exclusive=exclusive)

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

    def writer(self, *, owned: bool = False) -> Writer:
        """The key-holding writer over this repository's local sink (needs the lock).

        :param owned: the writer closes this repository when it is closed.
        """
        if not self.locked:
            raise RepositoryError(self.location, "writing needs the repository opened exclusively (locked)")
        sink = LocalSink(self.storage)  # under our lock; trusted: the writer is this process
        return Writer(self.keyring, sink, on_pack=self.index.add_pack, owned=[self] if owned else [])

    def close(self) -> None:
        """Release the lock and the index."""
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
        stored = {n for n in self.storage.list(L.PACKS) if L.is_pack(n)}
        known = self.index.packs()
        added = dropped = 0
        for name in sorted(stored - known.keys()):
            try:
                entries = read_table_from(self.storage, name, self.keys.encrypt)
            except (IntegrityError, UnsupportedVersion) as exc:
                # Not indexed, so nothing can reference it through this index:
                # leave it out and let verify report it; the rest stays usable.
                self.damaged_packs[name] = str(exc)
                continue
            except ObjectNotFound:
                continue  # deleted since the listing (prune elsewhere)
            self.index.add_pack(name, self.storage.size(name), entries)
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

    def read_blob(self, blob_id: bytes) -> bytes:
        """:returns: the verified plaintext of a blob.  :raises IntegrityError: missing or damaged."""
        found = self.index.lookup(blob_id)
        if found is None:
            raise IntegrityError(f"blob {blob_id.hex()[:16]} is missing from the repository")
        pack, entry = found
        try:
            sealed = self.storage.get(pack, entry.offset, entry.length)
        except ObjectNotFound:
            raise IntegrityError(f"pack {pack} is missing") from None
        if len(sealed) != entry.length:
            raise IntegrityError(f"pack {pack} is truncated")
        return open_blob(self._aead_for(pack), entry, sealed, self.chunk_hasher if entry.type == C.BLOB_DATA
                         else self.tree_hasher, pack)

    def snapshot_names(self) -> list[str]:
        return sorted(n for n in self.storage.list(L.SNAPSHOTS) if L.SNAPSHOT_RE.match(n))

    def load_snapshot(self, name: str) -> Snapshot:
        return open_snapshot(name, self.storage.get(name), self.keys.encrypt, self.public_key, self.id)

    def snapshots(self, damaged: list[str] | None = None) -> list[Snapshot]:
        """All snapshots, oldest first.

        :param damaged: when given, damaged snapshots are described here and
            skipped; otherwise the first one raises.
        :raises IntegrityError: a damaged snapshot, unless ``damaged`` is given.
        """
        snaps = []
        for name in self.snapshot_names():
            try:
                snaps.append(self.load_snapshot(name))
            except (IntegrityError, UnsupportedVersion) as exc:
                if damaged is None:
                    raise
                damaged.append(str(exc))
        return sorted(snaps, key=lambda s: (s.time_ns, s.source, s.generation))

    def find_snapshot(self, ref: str | None = None, source: str | None = None) -> Snapshot:
        """The snapshot whose id starts with ``ref``, or the latest (of ``source``)."""
        snaps = self.snapshots()
        if ref:
            hits = [s for s in snaps if s.id.startswith(ref.lower())]
            if len(hits) != 1:
                raise RepositoryError(self.location, f"{'no' if not hits else 'more than one'} snapshot matches {ref!r}")
            return hits[0]
        if source is not None:
            snaps = [s for s in snaps if s.source == source]
        if not snaps:
            raise RepositoryError(self.location, "has no snapshot yet")
        return snaps[-1]

    def read_tree(self, tree_id: bytes, parent: str) -> list[TreeItem]:
        try:
            return decode_tree(self.read_blob(tree_id), parent)
        except TreeFormatError as exc:
            raise IntegrityError(f"tree {tree_id.hex()[:16]} at '{parent or '/'}': {exc}") from None

    def walk_tree(self, tree_id: bytes, parent: str = "") -> Iterator[Entry]:
        """All entries under a tree, in pre-order (a directory before its contents); no recursion."""
        stack = [iter(self.read_tree(tree_id, parent))]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
                continue
            yield item.entry
            if item.entry.kind == KIND_DIR:
                stack.append(iter(self.read_tree(item.subtree, item.entry.path)))

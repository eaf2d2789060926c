"""Repository: the facade over storage, keys, packs, index and snapshots.

Write order is packs, then index, then snapshot.  A pack is durable in
storage before any index row names it; a snapshot object is written only
after every blob it references is in a durable pack.  A crash at any moment
therefore leaves: the previous snapshots intact, maybe packs that no
snapshot references yet (found again at the next open, so their chunks are
not stored twice), maybe a temporary file (removed at the next locked open).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

from replicator import constants as C
from replicator.core import crypto
from replicator.core.chunker import Chunker, gear_table
from replicator.core.compress import DEFAULT_LEVEL, compress
from replicator.core.ids import IdHasher
from replicator.core.params import DEFAULT_PARAMS, ChunkerParams
from replicator.errors import (
    IntegrityError,
    ObjectNotFound,
    RepositoryError,
    RepositoryExists,
    RepositoryLocked,
    RepositoryNotFound,
    StorageError,
    UnsupportedVersion,
)
from replicator.repo import keys as K
from replicator.repo.entry import KIND_DIR, Entry
from replicator.repo.index import Index
from replicator.repo.local import LocalStorage
from replicator.repo.packs import PackWriter, open_blob, pack_key, pack_name, parse_header, read_table
from replicator.repo.snapshot import Snapshot, open_snapshot, seal_snapshot
from replicator.repo.tree import TreeFormatError, TreeItem, decode_tree, encode_tree

CONFIG_NAME = "config"
KEY_NAME = "keys/default"
INDEX_FILE = "index.sqlite"
LOCK_FILE = "lock"


def parse_config(data: bytes, location: str) -> dict:
    try:
        cfg = json.loads(data)
        magic = cfg.get("magic")
    except (ValueError, AttributeError):
        raise RepositoryError(location, "config is not a replicator repository config") from None
    if magic != C.REPO_MAGIC:
        raise RepositoryError(location, "not a replicator repository (foreign config)")
    version = cfg.get("version")
    if type(version) is not int or not C.FORMAT_VERSION_MIN <= version <= C.FORMAT_VERSION_MAX:
        raise UnsupportedVersion(location, version, C.FORMAT_VERSION_MIN, C.FORMAT_VERSION_MAX)
    try:
        if not isinstance(cfg["id"], str) or len(cfg["id"]) != 64 or cfg["id"] != cfg["id"].lower() \
                or len(bytes.fromhex(cfg["id"])) != 32:
            raise ValueError("id must be 64 lowercase hex digits")
        cfg["params"] = ChunkerParams.from_dict(cfg["chunker"])
        cfg["compression_level"] = int(cfg.get("compression", {}).get("level", DEFAULT_LEVEL))
    except (ValueError, KeyError, TypeError) as exc:
        raise RepositoryError(location, f"config is damaged ({exc})") from None
    return cfg


class Repository:
    """An open, unlocked repository.  Use as a context manager."""

    def __init__(self, storage: LocalStorage, local_dir: str, config: dict, master: bytes,
                 keydoc: dict, *, exclusive: bool) -> None:
        self.storage = storage
        self.location = storage.location
        self.config = config
        self.id = config["id"]
        self.params: ChunkerParams = config["params"]
        self.compression_level: int = config["compression_level"]
        self._id_bytes = bytes.fromhex(self.id)
        self.keys = K.KeySet.derive(master, self._id_bytes)
        self.public_key = bytes.fromhex(keydoc["signing_public_key"])
        self.signer = crypto.SigningKey(self.keys.sign_seed)
        self.chunk_hasher = IdHasher(self.keys.chunk_id)
        self.tree_hasher = IdHasher(self.keys.tree_id)
        self._lock_fd: int | None = None
        self._pack_thread: ThreadPoolExecutor | None = None
        self._pack_jobs: list[Future] = []
        self.index: Index | None = None
        # Packs found damaged while bringing the index up to date; verify reports them.
        self.damaged_packs: dict[str, str] = {}
        # Things an operator should hear about that did not stop the operation.
        self.warnings: list[str] = []
        try:
            if exclusive:
                self._lock(local_dir)
                storage.clean_temporaries()
            self._setup(local_dir)
        except BaseException:
            self.close()
            raise

    def _setup(self, local_dir: str) -> None:
        self.index = Index(os.path.join(local_dir, INDEX_FILE), self.id)
        self._writer: PackWriter | None = None
        # Ids stored in this session but not yet in the index: in the pack being
        # filled or in a pack the writer thread is sealing and storing.
        self._pending: set[bytes] = set()
        self._pending_lock = threading.Lock()
        self._pack_keys: dict[str, crypto.Aead] = {}
        self.stats = {"packs_written": 0, "bytes_written": 0, "blobs_written": 0}
        self.catch_up()

    # --- lifecycle ---------------------------------------------------------
    @classmethod
    def init(cls, path: str, passphrase: bytes, *, params: ChunkerParams | None = None,
             log2n: int = C.SCRYPT_LOG2N_DEFAULT, compression_level: int = DEFAULT_LEVEL) -> "Repository":
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
        params = params or DEFAULT_PARAMS
        config = {
            "magic": C.REPO_MAGIC,
            "version": C.FORMAT_VERSION_CURRENT,
            "id": repo_id.hex(),
            "chunker": params.to_dict(),
            "compression": {"algorithm": "zstd", "level": compression_level},
            "created_ns": time.time_ns(),
        }
        # The key file first, the config last: a directory without config is
        # not a repository, so a crash during init leaves nothing half-made.
        storage.put(KEY_NAME, K.make_keyfile(master, repo_id, passphrase, log2n))
        storage.put(CONFIG_NAME, (json.dumps(config, indent=1, sort_keys=True) + "\n").encode())
        return cls.open(path, passphrase, exclusive=True)

    @classmethod
    def open(cls, path: str, passphrase: bytes, *, exclusive: bool = False) -> "Repository":
        storage, config = cls.open_storage(path)
        keydata = storage.get(KEY_NAME)
        master = K.unlock(keydata, bytes.fromhex(config["id"]), passphrase, storage.location)
        return cls(storage, storage.root, config, master, K.parse_keyfile(keydata), exclusive=exclusive)

    @staticmethod
    def open_storage(path: str) -> tuple[LocalStorage, dict]:
        """Open the storage and config without the passphrase. :raises RepositoryNotFound:"""
        path = os.path.abspath(path)
        if not os.path.isdir(path):
            raise RepositoryNotFound(path)
        storage = LocalStorage(path)
        try:
            data = storage.get(CONFIG_NAME)
        except ObjectNotFound:
            raise RepositoryNotFound(path) from None
        return storage, parse_config(data, path)

    def _lock(self, local_dir: str) -> None:
        fd = os.open(os.path.join(local_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise RepositoryLocked(self.location, holder) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._lock_fd = fd

    @property
    def locked(self) -> bool:
        """Whether this process holds the writer lock (opened with ``exclusive=True``)."""
        return self._lock_fd is not None

    def close(self) -> None:
        """Release the lock.  Blobs not flushed are dropped (they belong to no snapshot)."""
        if self._pack_thread is not None:
            for job in self._pack_jobs:
                job.cancel()
            self._pack_thread.shutdown(wait=True)
            self._pack_thread = None
            self._pack_jobs = []
        if self.index is not None:
            self.index.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- index upkeep ------------------------------------------------------
    def catch_up(self) -> tuple[int, int]:
        """Bring the index in line with the packs in storage.

        Packs written before a crash but never indexed are read and added;
        index rows of packs that are gone are dropped.
        :returns: (packs added, packs dropped)
        """
        stored = set(self.storage.list("data/"))
        known = self.index.packs()
        added = dropped = 0
        for name in sorted(stored - known.keys()):
            data = self.storage.get(name)
            try:
                if pack_name(data) != name:
                    raise IntegrityError(f"pack {name}: content does not match its name")
                entries = read_table(data, name, self.keys.encrypt)
            except (IntegrityError, UnsupportedVersion) as exc:
                # Not indexed, so nothing can reference it through this index:
                # leave it out and let verify report it; the rest stays usable.
                self.damaged_packs[name] = str(exc)
                continue
            self.index.add_pack(name, len(data), entries)
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

    # --- writing -----------------------------------------------------------
    def chunker(self) -> Chunker:
        return Chunker(self.params, gear_table(self.keys.gear))

    def has_blob(self, blob_id: bytes) -> bool:
        """Thread-safe: whether the repository (or the pack being filled) holds the blob."""
        return blob_id in self._pending or self.index.has(blob_id)

    def store_blob(self, blob_type: int, blob_id: bytes, method: int, payload: bytes, raw_len: int) -> bool:
        """Add an already-compressed blob. :returns: False when it was known (nothing stored)."""
        if self.has_blob(blob_id):
            return False
        if self._writer is None:
            self._writer = PackWriter(self.keys.encrypt)
        self._writer.add(blob_type, blob_id, method, payload, raw_len)
        with self._pending_lock:
            self._pending.add(blob_id)
        self.stats["blobs_written"] += 1
        if len(self._writer) >= C.PACK_TARGET_SIZE or self._writer.count >= C.PACK_MAX_BLOBS:
            self._flush_async()
        return True

    def _write_pack(self, writer: PackWriter) -> None:
        """Writer thread: seal, store durably, then index; only then forget the ids as pending."""
        name, data, entries = writer.finish()
        self.storage.put(name, data)
        self.index.add_pack(name, len(data), entries)
        with self._pending_lock:
            self._pending.difference_update(e.id for e in entries)
        self.stats["packs_written"] += 1
        self.stats["bytes_written"] += len(data)

    def _flush_async(self) -> None:
        """Hand the current pack to the writer thread; at most two packs wait, bounding memory."""
        writer, self._writer = self._writer, None
        if writer is None or not writer.count:
            return
        if self._pack_thread is None:
            self._pack_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pack")
        self._pack_jobs.append(self._pack_thread.submit(self._write_pack, writer))
        while len(self._pack_jobs) > 2 or (self._pack_jobs and self._pack_jobs[0].done()):
            self._pack_jobs.pop(0).result()  # re-raises a storage error here

    def flush(self) -> None:
        """Make every stored blob durable: packs to storage, then their rows to the index."""
        self._flush_async()
        while self._pack_jobs:
            self._pack_jobs.pop(0).result()

    def store_tree(self, items: list[TreeItem]) -> bytes:
        data = encode_tree(items)
        tree_id = self.tree_hasher(data)
        if not self.has_blob(tree_id):
            method, payload = compress(data, self.compression_level)
            self.store_blob(C.BLOB_TREE, tree_id, method, payload, len(data))
        return tree_id

    def commit_snapshot(self, source: str, tree_id: bytes, stats: dict) -> Snapshot:
        """Flush, then write the signed snapshot root: the commit point of a sync."""
        self.flush()
        damaged: list[str] = []
        previous = [s for s in self.snapshots(damaged=damaged) if s.source == source]
        for problem in damaged:
            # A damaged snapshot must not stop replication of new data; its
            # generation is unknown, so say so.  verify reports it too.
            self.warnings.append(f"{problem} (ignored when numbering this snapshot)")
        latest = max(previous, key=lambda s: s.generation, default=None)
        snap = Snapshot(
            id="",
            repository=self.id,
            source=source,
            # Generations of damaged snapshots are unknown: stay above them by
            # counting each as a possible later generation of this source.
            generation=(latest.generation if latest else 0) + len(damaged) + 1,
            time_ns=time.time_ns(),
            tree=tree_id,
            hostname=socket.gethostname(),
            stats=stats,
            parent=latest.id if latest else None,
        )
        name, data = seal_snapshot(snap, self.keys.encrypt, self.signer)
        self.storage.put(name, data)
        return open_snapshot(name, data, self.keys.encrypt, self.public_key, self.id)

    # --- reading -----------------------------------------------------------
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
        return sorted(self.storage.list("snapshots/"))

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
        """All entries under a tree, in pre-order (a directory before its contents)."""
        for item in self.read_tree(tree_id, parent):
            yield item.entry
            if item.entry.kind == KIND_DIR:
                yield from self.walk_tree(item.subtree, item.entry.path)

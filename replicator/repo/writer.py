"""Writer: the only code that writes the repository format, for every destination.

It holds the keys (a Keyring) and writes through a key-less Sink: blobs are
queued into a pack, each full pack is sealed (AES-GCM) and handed to the
sink on the writer thread, trees are encoded and stored as blobs, and the
commit seals and signs the snapshot root and hands it to the sink with the
ids it references.  A local sync, a sync over SSH and a test in memory run
this same code; only the sink differs.

Durability order (the sink keeps it): packs, then their id lists, then the
snapshot's refs, then the snapshot.  ``commit_snapshot`` flushes first, so a
snapshot is never visible before every blob it references is durable.

Threads: ``has_blob`` and the hashers are called from the pipeline's worker
threads; everything else from the engine's thread.  At most one pack is
being sealed and handed to the sink while the next one fills, which bounds
memory at about two packs (2 x 16 MiB).

Must never: give a key to the sink, commit a snapshot whose blobs are not
flushed, or number a snapshot below one that exists.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from replicator import constants as C
from replicator.core.chunker import Chunker
from replicator.core.compress import compress
from replicator.errors import HistoryDiverged, IntegrityError, UnsupportedVersion
from replicator.format import idlist as I
from replicator.format.entry import KIND_FILE
from replicator.format.pack import BlobEntry, PackWriter
from replicator.format.snapshot import Snapshot, open_snapshot, seal_snapshot
from replicator.format.tree import TreeItem, encode_tree
from replicator.repo.keyring import Keyring
from replicator.repo.lineage import LineageMemory, claim_for
from replicator.repo.sink import Sink

PACKS_WAITING = 1  # packs on the writer thread (being sealed and handed to the sink) at most, beside the one filling

OnPack = Callable[[str, int, list[BlobEntry]], None]


class Writer:
    """Write blobs, trees and one snapshot through ``sink``.  Use as a context manager; one commit per writer."""

    def __init__(self, keyring: Keyring, sink: Sink, *, on_pack: OnPack | None = None,
                 owned: Iterable = (), lineage: LineageMemory | None = None) -> None:
        self.keyring = keyring
        self.sink = sink
        self.location = sink.location
        self.id = keyring.id
        self.chunk_hasher = keyring.chunk_hasher
        self.tree_hasher = keyring.tree_hasher
        self.compression_level = keyring.compression_level
        self.warnings: list[str] = sink.warnings
        self._stats = {"packs_written": 0, "bytes_written": 0, "blobs_written": 0}
        self._on_pack = on_pack
        self._owned = list(owned)
        self.lineage = lineage
        self._declarer = keyring.declarer
        self.upgraded: Any = None  # what signing the destination's old lists did at open (app/destinations.py)
        sink.trust(keyring.verifier)  # the sink deduplicates only against lists a key holder signed
        self._pack: PackWriter | None = None
        # Ids queued in this session but not yet handed to the sink: in the pack
        # being filled or in a pack the writer thread is sealing.
        self._pending: set[bytes] = set()
        self._pending_lock = threading.Lock()
        # Every id a tree names, 32 bytes each, duplicates and all, in one buffer (issue 11: a set of bytes
        # objects cost ~170 bytes per ref); sorted and de-duplicated in place at the commit.
        self._refs = bytearray()
        self._thread: ThreadPoolExecutor | None = None
        self._jobs: list[Future] = []
        self.committed = False  # whether the last commit_snapshot wrote a snapshot (False: nothing changed)

    @property
    def stats(self) -> dict:
        return {**self.sink.stats, **self._stats}

    def chunker(self) -> Chunker:
        return self.keyring.chunker()

    # --- blobs -------------------------------------------------------------------
    def has_blob(self, blob_id: bytes) -> bool:
        """Thread-safe: whether the sink holds the blob or this session queued it."""
        return blob_id in self._pending or self.sink.has(blob_id)

    def store_blob(self, blob_type: int, blob_id: bytes, method: int, payload: bytes, raw_len: int) -> bool:
        """Queue an already-compressed blob.  :returns: False when it was held (nothing stored)."""
        if self.has_blob(blob_id):
            return False
        if self._pack is None:
            self._pack = PackWriter(self.keyring.keys.encrypt)
        self._pack.add(blob_type, blob_id, method, payload, raw_len)
        with self._pending_lock:
            self._pending.add(blob_id)
        self._stats["blobs_written"] += 1
        if len(self._pack) >= C.PACK_TARGET_SIZE or self._pack.count >= C.PACK_MAX_BLOBS:
            self._hand_off()
        return True

    def store_tree(self, items: list[TreeItem]) -> bytes:
        """Store one directory's tree blob (if new).  :returns: its id.  Everything it names becomes a ref."""
        data = encode_tree(items)
        tree_id = self.tree_hasher(data)
        self.add_refs((tree_id,))
        for item in items:
            if item.entry.kind == KIND_FILE:
                self.add_refs(item.entry.chunks)
        if not self.has_blob(tree_id):
            method, payload = compress(data, self.compression_level)
            self.store_blob(C.BLOB_TREE, tree_id, method, payload, len(data))
        return tree_id

    def add_refs(self, ids: Iterable[bytes]) -> None:
        """Collect ids the snapshot references (32 bytes each; duplicates are dropped at the commit)."""
        for blob_id in ids:
            if len(blob_id) != C.ID_SIZE:
                raise ValueError(f"a ref is {C.ID_SIZE} bytes, not {len(blob_id)}")
            self._refs += blob_id

    # --- packs -------------------------------------------------------------------
    def _seal_and_put(self, pack: PackWriter) -> None:
        """Writer thread: seal, hand to the sink, tell the owner; only then forget the ids as pending."""
        name, data, entries = pack.finish()
        ids = sorted({e.id for e in entries})
        self.sink.put_pack(name, data, ids, self._declarer.pack(name.rsplit("/", 1)[-1], b"".join(ids)))
        if self._on_pack is not None:
            self._on_pack(name, len(data), entries)
        with self._pending_lock:
            self._pending.difference_update(ids)
        self._stats["packs_written"] += 1
        self._stats["bytes_written"] += len(data)

    def _hand_off(self) -> None:
        pack, self._pack = self._pack, None
        if pack is None or not pack.count:
            return
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pack")
        self._jobs.append(self._thread.submit(self._seal_and_put, pack))
        while len(self._jobs) > PACKS_WAITING or (self._jobs and self._jobs[0].done()):
            self._jobs.pop(0).result()  # re-raises the sink's error here

    def flush(self) -> None:
        """Make every queued blob durable in the sink."""
        self._hand_off()
        while self._jobs:
            self._jobs.pop(0).result()
        self.sink.flush()

    # --- snapshots -----------------------------------------------------------------
    def _load(self, names: Iterable[str], found: list[Snapshot], damaged: list[str]) -> None:
        for name, data in self.sink.get_many(names):
            try:
                found.append(open_snapshot(name, data, self.keyring.keys.encrypt, self.keyring.public_key, self.id))
            except (IntegrityError, UnsupportedVersion) as exc:
                damaged.append(str(exc))

    def snapshots(self, damaged: list[str]) -> list[Snapshot]:
        """Every readable snapshot the sink holds; the unreadable ones are described in ``damaged``."""
        found: list[Snapshot] = []
        self._load(self.sink.list("snapshots/"), found, damaged)
        return found

    def commit_snapshot(self, source: str, tree_id: bytes, stats: dict, *, skip_unchanged: bool = False) -> Snapshot:
        """Flush, check the destination's history, seal, sign and commit the snapshot root, read it back.

        :param skip_unchanged: commit nothing when nothing changed (``unchanged``): the history checks
            run all the same, then the latest snapshot is returned and ``self.committed`` is False.
        :raises HistoryDiverged: the destination's latest snapshot of ``source`` is not the one this
            site committed there last (nor a descendant), or the commit is not there afterwards.
        """
        self.flush()
        damaged: list[str] = []
        listed = self.sink.list("snapshots/")
        every: list[Snapshot] = []
        self._load(listed, every, damaged)
        for problem in damaged:
            # A damaged snapshot must not stop replication of new data; its
            # generation is unknown, so say so.  verify reports it too.
            self.warnings.append(f"{problem} (ignored when numbering this snapshot)")
        latest = max((s for s in every if s.source == source), key=lambda s: s.generation, default=None)
        if latest is None:
            self._warn_new_lineage(source, every)
        if self.lineage is not None:
            self.lineage.check(source, latest, every)
        if skip_unchanged and not damaged and self.unchanged(source, latest, tree_id, stats):
            assert latest is not None
            self._refs = bytearray()
            self.committed = False
            return latest
        snap = Snapshot(
            id="", repository=self.id, source=source,
            # Generations of damaged snapshots are unknown: stay above them by
            # counting each as a possible later generation of this source.
            generation=(latest.generation if latest else 0) + len(damaged) + 1,
            time_ns=time.time_ns(), tree=tree_id, hostname=socket.gethostname(), stats=stats,
            parent=latest.id if latest else None)
        name, data = seal_snapshot(snap, self.keyring.keys.encrypt, self.keyring.signer)
        self.add_refs((tree_id,))
        if self.lineage is not None:
            self.lineage.expect(source, name.rsplit("/", 1)[-1])
        # Sorted and de-duplicated in place (in C): the commit's refs are the same buffer, 32 bytes per ref.
        # One commit per writer, so nothing needs it after.
        refs, self._refs = I.sort_unique_inplace(self._refs), bytearray()
        self.sink.commit(name, data, refs, self._declarer.snapshot(name.rsplit("/", 1)[-1]),
                         claim_for(self.keyring.keys.source_tag, source, latest.id if latest else None))
        del refs
        committed = open_snapshot(name, data, self.keyring.keys.encrypt, self.keyring.public_key, self.id)
        self._read_back(committed, data, set(listed))
        if self.lineage is not None:
            self.lineage.record(committed)
        self.committed = True
        return committed

    def unchanged(self, source: str, latest: Snapshot | None, tree_id: bytes, stats: dict) -> bool:
        """Whether a snapshot of ``tree_id`` with ``stats`` would say nothing ``latest`` does not: ``latest``
        is the destination's latest snapshot of ``source``, this site committed it last (the lineage memory
        names it; without one, never), from this host, with the same root tree and the same stats (counts,
        bytes, root device, mount and filesystem).  Its time alone would differ."""
        head = self.lineage.head(source) if self.lineage is not None else None
        return (latest is not None and head is not None and latest.id == head.id and latest.source == source
                and latest.hostname == socket.gethostname() and latest.tree == tree_id and latest.stats == stats)

    def _warn_new_lineage(self, source: str, every: list[Snapshot]) -> None:
        """A first snapshot of ``source`` where this host already wrote others: likely the same data under a
        second name (the daemon's default name is not the one a one-shot sync was given), which the mirror,
        retention and the lineage check would then each follow separately."""
        host = socket.gethostname()
        mine = sorted({s.source for s in every if s.hostname == host and s.source != source})
        if mine:
            self.warnings.append(f"{source!r} starts a new lineage at {self.location}, which already holds "
                                 f"snapshots from this host under {', '.join(map(repr, mine))}: if this is the "
                                 f"same data, sync it under that name (--name / source_name) instead")

    def _read_back(self, snap: Snapshot, data: bytes, before: set[str]) -> None:
        """The destination now lists ``snap``, holds its exact bytes, and no other snapshot of its source
        at its generation or above appeared meanwhile.  :raises HistoryDiverged:"""
        name = f"snapshots/{snap.id}"
        listed = self.sink.list("snapshots/")
        if name not in listed or dict(self.sink.get_many([name])).get(name) != data:
            raise HistoryDiverged(self.location, f"it acknowledged snapshot {snap.short_id} of {snap.source} "
                                  f"but does not hold it")
        appeared: list[Snapshot] = []
        self._load([n for n in listed if n not in before and n != name], appeared, [])
        rival = [s for s in appeared if s.source == snap.source and s.generation >= snap.generation]
        if rival:
            raise HistoryDiverged(self.location, f"snapshot {rival[0].short_id} (generation {rival[0].generation}) "
                                  f"of {snap.source} appeared beside this commit: another writer")

    # --- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        """Stop the writer thread and close the sink.  Blobs not flushed are dropped (no snapshot names them)."""
        if self._thread is not None:
            for job in self._jobs:
                job.cancel()
            self._thread.shutdown(wait=True)
            self._thread = None
            self._jobs = []
        self.sink.close()
        for resource in self._owned:
            resource.close()
        self._owned = []

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

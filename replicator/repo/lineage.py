"""Lineage memory: what this site last committed to a destination, per source.

A destination that loses, hides or replaces snapshots (a lying or damaged
secondary, a restore from an old image, an operator deleting the newest
snapshot) must not be silently built upon: the next snapshot would reuse a
generation, or continue from an older tree as if nothing happened.  The
writer remembers, per destination repository and source, the generation and
id of the last snapshot it committed there (one small JSON file per
destination, in the sender's cache directory), and before numbering the next
one checks that the destination's latest snapshot of that source is that one.
A descendant committed by another writer is refused too: another site took
over writing the source (a failover), and this one must not commit its
stale tree on top; the operator fails back and takes the role back with an
explicit reset (docs/OPERATIONS.md "Failover and failback").  The snapshot
about to be committed is remembered first (``expect``), so a crash between the
commit and ``record`` does not pass our own commit off as another writer's.
After the commit the writer reads the destination's listing back and checks
the new snapshot is there and is the latest.

Must never: decide from the destination's word alone that history is fine
when this site remembers otherwise; the operator resets it explicitly.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from replicator.core.ids import IdHasher
from replicator.errors import HistoryDiverged
from replicator.format.head import TAG_SIZE, Claim, Fence
from replicator.format.snapshot import Snapshot
from replicator.store import atomic
from replicator.store.lock import FileLock
from replicator.times import rfc3339

LINEAGE_VERSION = 1


@dataclass(frozen=True)
class Committed:
    generation: int
    id: str
    pending: str | None = None  # the snapshot this site was committing there when it last wrote this


class LineageMemory:
    """The remembered heads of one destination, in ``path`` (JSON, replaced atomically)."""

    def __init__(self, path: str, location: str) -> None:
        self.path = path
        self.location = location
        self._heads: dict[str, Committed] = self._read()

    def _read(self) -> dict[str, Committed]:
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read())
            if doc.get("version") == LINEAGE_VERSION:
                return {src: Committed(int(v["generation"]), str(v["id"]), v.get("pending"))
                        for src, v in doc["sources"].items()}
            return {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            # An unreadable memory must not pass for "nothing remembered": refuse until reset.
            raise HistoryDiverged(self.location, f"the lineage memory {self.path} is unreadable") from None

    def head(self, source: str) -> Committed | None:
        return self._heads.get(source)

    def check(self, source: str, latest: Snapshot | None, snapshots: Iterable[Snapshot]) -> None:
        """:raises HistoryDiverged: the destination's ``latest`` of ``source`` is not what this site
        committed there last, nor a descendant of it."""
        head = self._heads.get(source)
        if head is None:
            return
        if latest is None:
            raise HistoryDiverged(self.location, f"this site committed generation {head.generation} "
                                  f"({head.id[:16]}) of {source} there, but it now has no snapshot of {source}")
        if latest.generation < head.generation:
            raise HistoryDiverged(self.location, f"its latest snapshot of {source} is generation "
                                  f"{latest.generation} ({latest.short_id}), older than generation "
                                  f"{head.generation} ({head.id[:16]}) that this site committed there")
        if latest.id in (head.id, head.pending):
            return  # ours (the pending one: committed, then a crash before it was recorded)
        by_id = {s.id: s for s in snapshots}
        node: Snapshot | None = latest
        while node is not None and node.generation > head.generation:
            node = by_id.get(node.parent) if node.parent else None
        if node is None or node.id != head.id:
            raise HistoryDiverged(self.location, f"its latest snapshot of {source}, generation "
                                  f"{latest.generation} ({latest.short_id}), does not descend from generation "
                                  f"{head.generation} ({head.id[:16]}) that this site committed there (a fork)")
        raise HistoryDiverged(self.location, f"generation {latest.generation} ({latest.short_id}) of {source} was "
                              f"committed there by {latest.hostname} after generation {head.generation} that this "
                              f"site committed: another site writes {source} now (a failover?), and this site "
                              f"must not commit over it; fail back first (docs/OPERATIONS.md 'Failover and "
                              f"failback')")

    def expect(self, source: str, snapshot_id: str) -> None:
        """Remember, before committing it, the snapshot about to be committed (durable when it returns)."""
        head = self._heads.get(source)
        if head is not None:
            self._save(source, Committed(head.generation, head.id, snapshot_id))

    def record(self, snap: Snapshot) -> None:
        """Remember ``snap`` as the head of its source (durable when it returns)."""
        self._save(snap.source, Committed(snap.generation, snap.id))

    def forget(self, source: str) -> None:
        """The operator's explicit reset: accept the destination's history of ``source`` as it is."""
        if self._heads.pop(source, None) is not None:
            self._save(source, None)

    def _save(self, source: str, head: Committed | None) -> None:
        """Write ``source``'s head (None: none) into the file as it is now: the senders of this host share it
        (parallel syncs of several sources, the daemon's jobs), so each changes its own source's entry only,
        under a lock beside the file, and never writes back what it read at its start."""
        lock = FileLock(self.path + ".lock", "lineage memory").acquire(wait=True)
        try:
            heads = self._read()
            if head is None:
                heads.pop(source, None)
            else:
                heads[source] = head
            doc = {"version": LINEAGE_VERSION, "destination": self.location,
                   "sources": {s: {"generation": c.generation, "id": c.id, **({"pending": c.pending} if c.pending
                                                                               else {})}
                               for s, c in sorted(heads.items())}}
            atomic.replace(self.path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
            self._heads = heads
        finally:
            lock.release()


def lineage_path(cache_dir: str, repo_id: str, location: str) -> str:
    """Where the memory of one destination lives in a sender's cache directory.

    Keyed by the repository id and the destination's location together: a copied repository (the
    same id at two places, e.g. a seed carried between the sites) has two histories.
    """
    where = hashlib.sha256(location.encode()).hexdigest()[:16]
    return os.path.join(cache_dir, repo_id, f"lineage-{where}.json")


def source_tag(tag_key: bytes, source: str) -> bytes:
    """The clear tag that names ``source`` at a key-less receiver (``heads/<tag>``): a keyed hash, so the
    receiver can tell sources apart without learning their names."""
    return IdHasher(tag_key)(b"source\0" + source.encode("utf-8", "surrogateescape"))[:TAG_SIZE]


def fence_source(repo, source: str, side: str, reason: str) -> None:
    """``promote`` (``side`` = local: this site writes ``source``) or ``handback`` (remote: the other site
    does) on ``repo``, a local Repository opened exclusively."""
    from replicator.repo.local_sink import set_fence

    set_fence(repo.storage, source_tag(repo.keyring.keys.source_tag, source),
              Fence(side, socket.gethostname(), rfc3339(), reason))


def claim_for(tag_key: bytes, source: str, parent: str | None) -> Claim:
    """What a commit of ``source`` continuing ``parent`` (a snapshot digest, None for the first) says."""
    return Claim(source_tag(tag_key, source), parent)

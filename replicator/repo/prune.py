"""Deleting objects: forgetting snapshots and pruning packs no snapshot needs.

Everything here requires a repository opened with ``exclusive=True``: the
writer lock (``lock``, flock) is held by every local sync for its whole run
and by ``replicator serve`` for a whole write session (OPEN to the end of the
session), so no sync that might reference or deduplicate against a pack can
run while packs are deleted.  That lock is the whole concurrency story; see
docs/FORMAT.md "Deleting objects".

Deletion order (each step durable before the next matters only for the
key-less checks of the receiving site; a crash anywhere leaves a readable
repository):

* a snapshot: ``snapshots/<h>`` first, then ``refs/<h>`` (a refs object
  without its snapshot is garbage; a snapshot without refs fails the key-less
  check);
* a pack: ``ids/<h>`` first, then ``data/<xx>/<h>``, then its index rows (an
  id list naming a deleted pack would let a sender deduplicate against chunks
  that are gone; a pack without an id list is merely sent again).

A pack is deleted only when none of the blob ids in **its own table** (read
from the pack, never taken from the index, which is an unauthenticated cache)
is referenced by a remaining snapshot.  Prune refuses to run when a snapshot
or tree cannot be read: what a damaged snapshot references is unknown.

Must never: delete without the lock, delete a pack holding a referenced blob,
or decide from the index alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from replicator.errors import IntegrityError, ObjectNotFound, RepositoryError, UnsupportedVersion
from replicator.format.entry import KIND_DIR, KIND_FILE
from replicator.format.pack import read_table
from replicator.repo.repository import Repository

_HEX = set("0123456789abcdef")


def _is_hash(text: str) -> bool:
    return len(text) == 64 and set(text) <= _HEX


def _require_lock(repo: Repository, what: str) -> None:
    if not repo.locked:
        raise RepositoryError(repo.location, f"{what} needs the repository opened exclusively (locked)")


def delete_snapshots(repo: Repository, snapshot_ids: list[str]) -> int:
    """Delete snapshot objects (and their ``refs/`` objects). :returns: how many were deleted."""
    _require_lock(repo, "forget")
    for sid in snapshot_ids:
        if not _is_hash(sid):
            raise ValueError(f"not a snapshot id: {sid!r}")
        repo.storage.delete(f"snapshots/{sid}")  # the snapshot first: it is what readers see
        repo.storage.delete(f"refs/{sid}")
    return len(snapshot_ids)


def referenced_blobs(repo: Repository) -> tuple[set[bytes], int]:
    """Every blob id (trees and chunks) reachable from any snapshot.

    :returns: (ids, number of snapshots walked)
    :raises IntegrityError: a snapshot or a tree cannot be read: pruning would be unsafe.
    """
    damaged: list[str] = []
    snaps = repo.snapshots(damaged=damaged)
    if damaged:
        raise IntegrityError(f"{len(damaged)} snapshot(s) cannot be read, so what they reference is unknown; "
                             f"nothing deleted (first: {damaged[0]})")
    refs: set[bytes] = set()
    stack = [s.tree for s in snaps]
    while stack:
        tree_id = stack.pop()
        if tree_id in refs:
            continue
        refs.add(tree_id)
        for item in repo.read_tree(tree_id, ""):  # IntegrityError propagates: refuse to prune
            if item.entry.kind == KIND_DIR:
                stack.append(item.subtree)
            elif item.entry.kind == KIND_FILE:
                refs.update(item.entry.chunks)
    return refs, len(snaps)


@dataclass
class PruneReport:
    dry_run: bool = False
    snapshots: int = 0
    blobs_referenced: int = 0
    packs_total: int = 0
    packs_deleted: int = 0
    bytes_deleted: int = 0
    packs_partly_used: int = 0
    bytes_reclaimable_in_partly_used: int = 0  # unreferenced blob bytes left inside kept packs
    packs_kept_by_table: int = 0  # the index said unused, the pack's own table disagreed
    id_lists_deleted: int = 0  # ids/ objects deleted with their packs or orphaned
    refs_deleted: int = 0  # refs/ objects of snapshots that no longer exist
    damaged_packs_left: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def prune(repo: Repository, *, dry_run: bool = False) -> PruneReport:
    """Delete every pack none of whose blobs a snapshot references; report the rest.

    Partly used packs are kept whole (no repacking in this version); their
    unreferenced bytes are reported as reclaimable.
    :raises RepositoryError: the repository is not locked.
    :raises IntegrityError: a snapshot or tree is unreadable (nothing is deleted).
    """
    _require_lock(repo, "prune")
    report = PruneReport(dry_run=dry_run)
    repo.catch_up()
    refs, report.snapshots = referenced_blobs(repo)
    report.blobs_referenced = len(refs)
    report.damaged_packs_left = sorted(repo.damaged_packs)
    packs = repo.index.packs()
    report.packs_total = len(packs) + len(repo.damaged_packs)
    for name in sorted(packs):
        entries = repo.index.blobs_in(name)
        unused = [e for e in entries if e.id not in refs]
        if len(unused) < len(entries):
            if unused:
                report.packs_partly_used += 1
                report.bytes_reclaimable_in_partly_used += sum(e.length for e in unused)
            continue
        # The index says nothing in this pack is needed: confirm from the pack itself.
        try:
            data = repo.storage.get(name)
            table = read_table(data, name, repo.keys.encrypt)
        except ObjectNotFound:
            repo.index.remove_pack(name)
            continue
        except (IntegrityError, UnsupportedVersion):
            report.damaged_packs_left.append(name)
            continue
        if any(e.id in refs for e in table):
            report.packs_kept_by_table += 1
            continue
        report.packs_deleted += 1
        report.bytes_deleted += len(data)
        report.deleted.append(name)
        if dry_run:
            continue
        digest = name.rsplit("/", 1)[1]
        if repo.storage.exists(f"ids/{digest}"):
            report.id_lists_deleted += 1
        repo.storage.delete(f"ids/{digest}")  # first: never advertise ids of a pack that is gone
        repo.storage.delete(name)
        repo.index.remove_pack(name)
    _drop_orphans(repo, report, dry_run)
    return report


def _drop_orphans(repo: Repository, report: PruneReport, dry_run: bool) -> None:
    """``ids/`` objects whose pack is gone and ``refs/`` objects whose snapshot is gone."""
    packs = {n.rsplit("/", 1)[1] for n in repo.storage.list("data/")}
    deleted = {n.rsplit("/", 1)[1] for n in report.deleted}
    for name in sorted(repo.storage.list("ids/")):
        digest = name.rsplit("/", 1)[1]
        if digest in deleted:
            if dry_run:  # would go with its pack
                report.id_lists_deleted += 1
        elif digest not in packs:
            report.id_lists_deleted += 1
            if not dry_run:
                repo.storage.delete(name)
    snaps = {n.rsplit("/", 1)[1] for n in repo.storage.list("snapshots/")}
    for name in sorted(repo.storage.list("refs/")):
        if name.rsplit("/", 1)[1] not in snaps:
            report.refs_deleted += 1
            if not dry_run:
                repo.storage.delete(name)

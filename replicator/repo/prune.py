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
is referenced by a remaining snapshot.  A damaged snapshot's references are
taken from its key-less ``refs/`` object (everything listed there is kept, so
one rotted snapshot does not stop pruning); prune refuses to run when a
damaged snapshot has no usable ``refs/`` object, or a tree of an intact
snapshot cannot be read: what they reference is unknown.

Must never: delete without the lock, delete a pack holding a referenced blob,
or decide from the index alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from replicator.constants import BLOB_TREE
from replicator.errors import IntegrityError, ObjectNotFound, RepositoryError, StorageError, UnsupportedVersion
from replicator.format import layout as L
from replicator.format.entry import KIND_DIR, KIND_FILE
from replicator.format.idlist import decode_ids
from replicator.format.pack import read_table
from replicator.repo.repository import DamagedSnapshot, Repository, SnapshotListing

_HEX = set("0123456789abcdef")


def _is_hash(text: str) -> bool:
    return len(text) == 64 and set(text) <= _HEX


def _require_lock(repo: Repository, what: str) -> None:
    if not repo.locked:
        raise RepositoryError(repo.location, f"{what} needs the repository opened exclusively (locked)")


def delete_snapshots(repo: Repository, snapshot_ids: list[str]) -> int:
    """Delete snapshot objects (and their ``refs/`` objects). :returns: how many were deleted.

    Over ssh:// (a storage with ``forget``: a write session, the other site's lock held) each deletion is
    an order signed with the repository's key, which the other site checks before it deletes anything.
    """
    forget = getattr(repo.storage, "forget", None)
    if forget is not None:
        declarer = repo.keyring.declarer
        forget([(L.snapshot_name(sid), declarer.forget(sid)) for sid in snapshot_ids])
        return len(snapshot_ids)
    _require_lock(repo, "forget")
    for sid in snapshot_ids:
        if not _is_hash(sid):
            raise ValueError(f"not a snapshot id: {sid!r}")
        repo.storage.delete(f"snapshots/{sid}")  # the snapshot first: it is what readers see
        repo.storage.delete(f"refs/{sid}")
    return len(snapshot_ids)


def _refs_of_damaged(repo: Repository, bad: DamagedSnapshot) -> set[bytes]:
    """What the key-less ``refs/<hash>`` object beside a damaged snapshot lists (docs/FORMAT.md 2.1).

    Unauthenticated, but only ever used to keep more: a forged list can keep
    garbage, never delete what an intact snapshot needs.
    :raises IntegrityError: it is missing, unreadable, not a list of ids, or empty
        (every snapshot references at least its root tree).
    """
    name = L.refs_name(bad.id)
    try:
        ids = set(decode_ids(repo.storage.get(name), name))
    except (StorageError, ValueError) as exc:
        why = "it has no refs/ object" if isinstance(exc, ObjectNotFound) else f"its {name} cannot be used ({exc})"
        raise IntegrityError(f"{bad.problem}; {why}, so what it references is unknown: nothing deleted") from None
    if not ids:
        raise IntegrityError(f"{bad.problem}; its {name} lists nothing, so what it references is unknown: "
                             f"nothing deleted")
    return ids


def referenced_blobs(repo: Repository, listing: SnapshotListing | None = None,
                     kept_by_refs: dict[str, int] | None = None) -> tuple[set[bytes], int]:
    """Every blob id (trees and chunks) reachable from any snapshot.

    A damaged snapshot's references are taken from its ``refs/`` object, and
    the trees among them that still read are walked too.  An object whose name
    is not a snapshot name (junk) references nothing: this program never wrote it.
    :param listing: what ``repo.read_snapshots()`` returned (read here when None).
    :param kept_by_refs: filled with damaged snapshot id -> number of ids its refs/ object lists.
    :returns: (ids, number of snapshots walked)
    :raises IntegrityError: a damaged snapshot without a usable refs/ object, or a
        tree of an intact snapshot that cannot be read: pruning would be unsafe.
    """
    listing = listing if listing is not None else repo.read_snapshots()
    refs: set[bytes] = set()
    stack = [s.tree for s in listing.snapshots]
    optional: list[bytes] = []  # trees a damaged snapshot's refs/ names: walked if they read
    for bad in listing.damaged:
        if bad.junk:
            continue
        ids = _refs_of_damaged(repo, bad)
        refs |= ids
        if kept_by_refs is not None:
            kept_by_refs[bad.id] = len(ids)
        optional.extend(i for i in ids if (found := repo.index.lookup(i)) is not None and found[1].type == BLOB_TREE)
    seen: set[bytes] = set()
    for trees, required in ((stack, True), (optional, False)):
        while trees:
            tree_id = trees.pop()
            if tree_id in seen:
                continue
            seen.add(tree_id)
            refs.add(tree_id)
            try:
                items = repo.read_tree(tree_id, "")
            except IntegrityError:
                if required:
                    raise  # a tree of an intact snapshot: refuse to prune
                continue  # its ids are kept through the refs/ list anyway
            for item in items:
                if item.entry.kind == KIND_DIR:
                    trees.append(item.subtree)
                elif item.entry.kind == KIND_FILE:
                    refs.update(item.entry.chunks)
    return refs, len(listing.snapshots)


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
    quarantined_deleted: int = 0  # quarantined (damaged) packs whose referenced chunks are all stored again
    quarantined_kept: list[str] = field(default_factory=list)  # still the only home of referenced chunks
    # snapshot objects that could not be read: {name, id, problem, junk, kept_by_refs (ids kept from its refs/)}
    damaged_snapshots: list[dict] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def prune(repo: Repository, *, dry_run: bool = False) -> PruneReport:
    """Delete every pack none of whose blobs a snapshot references; report the rest.

    Partly used packs are kept whole (no repacking in this version); their
    unreferenced bytes are reported as reclaimable.
    :raises RepositoryError: the repository is not locked.
    :raises IntegrityError: a damaged snapshot has no usable refs/ object, or a
        tree of an intact snapshot is unreadable (nothing is deleted).
    """
    _require_lock(repo, "prune")
    report = PruneReport(dry_run=dry_run)
    repo.catch_up()
    listing = repo.read_snapshots()
    kept_by_refs: dict[str, int] = {}
    refs, report.snapshots = referenced_blobs(repo, listing, kept_by_refs)
    report.damaged_snapshots = [{"name": d.name, "id": d.id, "problem": d.problem, "junk": d.junk,
                                 "kept_by_refs": kept_by_refs.get(d.id, 0)} for d in listing.damaged]
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
    _drop_healed_quarantine(repo, refs, report, dry_run)
    _drop_orphans(repo, report, dry_run)
    return report


def _home(repo: Repository, blob_id: bytes) -> str | None:
    found = repo.index.lookup(blob_id)
    return found[0] if found else None


def _drop_healed_quarantine(repo: Repository, refs: set[bytes], report: PruneReport, dry_run: bool) -> None:
    """Delete a quarantined (damaged) pack once every referenced chunk it declared is held by an intact pack.

    The damaged pack is no home of anything (the index leaves it out), so it is only kept while it is the
    last trace of a referenced chunk, for whoever wants to try to recover it by hand.  Its id list is its
    own declaration; with none, the pack is kept.
    """
    for qname in sorted(repo.storage.list(L.QUARANTINE)):
        if not L.QUARANTINE_RE.match(qname):
            continue
        digest = L.digest_of(qname)
        pack = L.pack_name(digest)
        try:
            declared = list(decode_ids(repo.storage.get(L.ids_name(digest)), L.ids_name(digest)))
        except (ObjectNotFound, ValueError):
            if repo.storage.exists(pack):
                report.quarantined_kept.append(pack)
                continue
            declared = []  # the pack is gone already: only the quarantine object is left
        if any(i in refs and _home(repo, i) in (None, pack) for i in declared):
            report.quarantined_kept.append(pack)
            continue
        report.quarantined_deleted += 1
        if dry_run:
            continue
        repo.storage.delete(L.ids_name(digest))  # the same order as for any pack: the declaration first
        repo.storage.delete(pack)
        repo.storage.delete(qname)


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

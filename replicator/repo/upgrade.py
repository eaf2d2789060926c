"""Bring a repository written by an older release up to date, in place (docs/FORMAT.md "Changes").

Release 0.1.0 wrote, from a local sync, packs and snapshots but none of the
key-less objects that ``serve`` keeps: no ``ids/<pack>`` (what a pack holds,
so a sender deduplicates against it) and no ``refs/<snapshot>`` (what a
snapshot references, so the receiver checks it without the key).  Served
as it was, such a repository made the next remote sync send everything
again and ``serve --verify-only`` report every snapshot as damaged.

This needs the key (the ids come from the encrypted pack tables and trees)
and the writer lock; it runs at every locked open, where it costs a listing
when nothing is missing, and as ``replicator upgrade``.  It only adds
objects, each written atomically, so a crash leaves a repository that the
next open finishes.

Must never: modify or delete an object, or write an id list that is not
read from the pack's own authenticated table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from replicator.errors import IntegrityError, UnsupportedVersion
from replicator.format import layout as L
from replicator.format.entry import KIND_DIR, KIND_FILE
from replicator.format.idlist import encode_ids
from replicator.repo.repository import read_table_from

if TYPE_CHECKING:
    from replicator.repo.repository import Repository


@dataclass
class UpgradeReport:
    id_lists_written: int = 0
    refs_written: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.id_lists_written or self.refs_written or self.problems)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def snapshot_refs(repo: Repository, tree_id: bytes) -> set[bytes]:
    """Every blob id (trees and chunks) reachable from ``tree_id``, without recursion.

    :raises IntegrityError: a tree cannot be read.
    """
    refs: set[bytes] = set()
    stack = [tree_id]
    while stack:
        tid = stack.pop()
        if tid in refs:
            continue
        refs.add(tid)
        for item in repo.read_tree(tid, ""):
            if item.entry.kind == KIND_DIR:
                stack.append(item.subtree)
            elif item.entry.kind == KIND_FILE:
                refs.update(item.entry.chunks)
    return refs


def upgrade(repo: Repository) -> UpgradeReport:
    """Write the missing ``ids/`` and ``refs/`` objects.  Needs the lock (the caller holds it)."""
    report = UpgradeReport()
    storage = repo.storage
    listed = {L.digest_of(n) for n in storage.list(L.IDS)}
    for name in sorted(n for n in storage.list(L.PACKS) if L.is_pack(n)):
        digest = L.digest_of(name)
        if digest in listed or name in repo.damaged_packs:
            continue
        try:
            entries = read_table_from(storage, name, repo.keys.encrypt)
        except (IntegrityError, UnsupportedVersion) as exc:
            report.problems.append(f"{exc}; no id list written for it")
            continue
        _put_new(storage, L.ids_name(digest), encode_ids(e.id for e in entries))
        report.id_lists_written += 1
    with_refs = {L.digest_of(n) for n in storage.list(L.REFS)}
    for name in repo.snapshot_names():
        digest = L.digest_of(name)
        if digest in with_refs:
            continue
        try:
            snap = repo.load_snapshot(name)
            refs = snapshot_refs(repo, snap.tree)
        except (IntegrityError, UnsupportedVersion) as exc:
            report.problems.append(f"{exc}; no refs written for it")
            continue
        _put_new(storage, L.refs_name(digest), encode_ids(refs))
        report.refs_written += 1
    return report


def _put_new(storage, name: str, data: bytes) -> None:
    try:
        storage.put(name, data)
    except FileExistsError:
        pass  # another upgrade got there first: same content, from the same table or tree

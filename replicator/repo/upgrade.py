"""Bring a repository written by an older release up to date, in place (docs/FORMAT.md "Changes").

Release 0.1.0 wrote, from a local sync, packs and snapshots but none of the
key-less objects that ``serve`` keeps: no ``ids/<pack>`` (what a pack holds,
so a sender deduplicates against it) and no ``refs/<snapshot>`` (what a
snapshot references, so the receiver checks it without the key).  Served
as it was, such a repository made the next remote sync send everything
again and ``serve --verify-only`` report every snapshot as damaged.

Release 0.2 wrote those lists without the declaration proofs that release
0.3 requires (format/idlist.py): ``sign_declarations`` gives every list the
key holder's proof, through any sink, so the same code upgrades a local
repository and one at the other site over SSH (reading each pack's table
by ranges, never the whole pack).  A list that does not match the pack's
authenticated table (a forged declaration) is replaced by the true one.

This needs the key (the ids come from the encrypted pack tables and trees)
and the writer lock; it runs at every locked open, where it costs a listing
when nothing is missing, at every sync to a remote that holds unsigned lists,
and as ``replicator upgrade``.  It adds objects and rewrites only id lists
(atomically, to the same ids with a proof, or to the pack's true ids), so a
crash leaves a repository that the next run finishes.

Must never: modify or delete a pack or a snapshot, or sign an id list that is
not read from the pack's own authenticated table, or a snapshot that does not
open with the key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from replicator.errors import IntegrityError, ReplicatorError, UnsupportedVersion
from replicator.format import idlist as I
from replicator.format import layout as L
from replicator.format.entry import KIND_DIR, KIND_FILE
from replicator.format.snapshot import open_snapshot
from replicator.repo.keyring import Keyring
from replicator.repo.local_sink import LocalSink
from replicator.repo.tables import TABLE_BATCH, read_table_from, read_tables

if TYPE_CHECKING:
    from replicator.repo.repository import Repository

DECLARATIONS_META = "declarations"  # index note: every list of this repository carries its proof


@dataclass
class UpgradeReport:
    id_lists_written: int = 0
    refs_written: int = 0
    id_lists_signed: int = 0
    snapshots_signed: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.id_lists_written or self.refs_written or self.id_lists_signed or self.snapshots_signed
                    or self.problems)

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
    """Write the missing ``ids/`` and ``refs/`` objects and sign those without proof.  Needs the lock
    (the caller holds it)."""
    report = UpgradeReport()
    storage = repo.storage
    declarer = repo.keyring.declarer
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
        blob = I.encode_ids(e.id for e in entries)
        _put_new(storage, L.ids_name(digest), I.encode_list(I.IDS_MAGIC, blob, declarer.pack(digest, blob)))
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
        blob = I.encode_ids(refs)
        _put_new(storage, L.refs_name(digest), I.encode_list(I.REFS_MAGIC, blob, declarer.snapshot(digest)))
        report.refs_written += 1
    if repo.index.get_meta(DECLARATIONS_META) != str(I.LIST_VERSION):
        with LocalSink(storage) as sink:  # under the caller's lock
            sign_declarations(repo.keyring, sink, sink.legacy_snapshots(), report)
        if not report.problems:
            repo.index.set_meta(DECLARATIONS_META, str(I.LIST_VERSION))
    return report


def sign_declarations(keyring: Keyring, sink, snapshot_digests, report: UpgradeReport) -> UpgradeReport:
    """Give a proof to every id list in ``sink.legacy_packs`` (from the pack's own table) and to the refs
    of every snapshot in ``snapshot_digests`` that opens with the key.  Works through any sink."""
    declarer = keyring.declarer
    legacy = sorted(sink.legacy_packs)
    for i in range(0, len(legacy), TABLE_BATCH):
        digests = legacy[i : i + TABLE_BATCH]
        names = [L.pack_name(d) for d in digests]
        try:
            tables = read_tables(sink.get_ranges, names, keyring.keys.encrypt)
        except ReplicatorError as exc:  # the session failed (a remote refused a read): nothing more now
            report.problems.append(f"{exc}; run again")
            break
        for digest, name, (_size, table) in zip(digests, names, tables):
            if isinstance(table, ReplicatorError):
                report.problems.append(f"{table}; its id list is left unsigned (verify reports the pack)")
                continue
            ids = sorted({e.id for e in table})
            sink.declare_pack(name, ids, declarer.pack(digest, b"".join(ids)))
            report.id_lists_signed += 1
    names = [L.snapshot_name(d) for d in snapshot_digests]
    for name, data in sink.get_many(names):
        digest = L.digest_of(name)
        try:
            open_snapshot(name, data, keyring.keys.encrypt, keyring.public_key, keyring.id)
        except (IntegrityError, UnsupportedVersion) as exc:
            report.problems.append(f"{exc}; not signed (it was not made with this repository's key)")
            continue
        sink.declare_snapshot(name, declarer.snapshot(digest))
        report.snapshots_signed += 1
    sink.flush()
    return report


def _put_new(storage, name: str, data: bytes) -> None:
    try:
        storage.put(name, data)
    except FileExistsError:
        pass  # another upgrade got there first: same content, from the same table or tree

"""Verification: structure always, every byte with ``data=True``.

Structural: every snapshot object authenticates and its signature verifies;
every tree of every snapshot decrypts and decodes; every chunk a file names
is in the index (which was brought in line with storage at open).  With
``data``: every pack is read whole, its SHA-256 compared with its name, its
table authenticated, and every blob decrypted, decompressed and re-hashed.
Damage is reported with what it affects: the snapshot and the file paths.
Identical subtrees (same tree id) are checked once across all snapshots.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from replicator.constants import BLOB_DATA
from replicator.errors import IntegrityError, ObjectNotFound, StorageError, UnsupportedVersion
from replicator.format.entry import KIND_DIR, KIND_FILE
from replicator.format.pack import open_blob, pack_key, parse_header, read_table
from replicator.format.snapshot import Snapshot
from replicator.repo.repository import Repository


@dataclass
class VerifyReport:
    snapshots: int = 0
    trees: int = 0
    files: int = 0
    chunks_referenced: int = 0
    packs_checked: int = 0
    blobs_checked: int = 0
    bytes_checked: int = 0
    data: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return dict(self.__dict__, ok=self.ok)


def _check_packs(repo: Repository, report: VerifyReport,
                 progress: Callable[[int], None] | None) -> tuple[dict[bytes, str], set[bytes]]:
    """Read every pack whole.

    :returns: (damaged blob id -> reason, ids of the blobs that read back intact).
        The second set comes from the packs themselves, never from the index, so
        a forged or stale index cannot hide a missing chunk.
    """
    bad: dict[bytes, str] = {}
    present: set[bytes] = set()
    names = sorted(repo.storage.list("data/"))
    for name in names:
        try:
            data = repo.storage.get(name)
        except (ObjectNotFound, StorageError) as exc:
            reason = f"pack {name} unreadable: {exc}"
            report.problems.append(reason)
            for e in repo.index.blobs_in(name):
                bad[e.id] = reason
            continue
        report.packs_checked += 1
        report.bytes_checked += len(data)
        if progress:
            progress(len(data))
        try:
            if hashlib.sha256(data).hexdigest() != name.rsplit("/", 1)[-1]:
                raise IntegrityError(f"pack {name}: content does not match its name (bytes changed on disk)")
            entries = read_table(data, name, repo.keys.encrypt)
        except (IntegrityError, UnsupportedVersion) as exc:
            report.problems.append(str(exc))
            # The index still knows what the pack held: test each blob on its own,
            # so the damage report names exactly the blobs that are lost.
            entries = repo.index.blobs_in(name)
            if not entries:
                continue
        try:
            aead = pack_key(repo.keys.encrypt, parse_header(data, name))
        except (IntegrityError, UnsupportedVersion) as exc:
            for e in entries:
                bad[e.id] = str(exc)
            continue
        for e in entries:
            hasher = repo.chunk_hasher if e.type == BLOB_DATA else repo.tree_hasher
            try:
                open_blob(aead, e, data[e.offset : e.offset + e.length], hasher, name)
                report.blobs_checked += 1
                present.add(e.id)
            except IntegrityError as exc:
                bad[e.id] = str(exc).removeprefix("integrity error: ")
                report.problems.append(str(exc))
    return bad, present


def verify(repo: Repository, *, data: bool = False, progress: Callable[[int], None] | None = None) -> VerifyReport:
    report = VerifyReport(data=data)
    for name, reason in sorted(repo.damaged_packs.items()):
        if not data:  # with data every pack is read again below and reported there
            report.problems.append(f"pack {name} is damaged and was left out of the index: {reason}")
    bad, present = _check_packs(repo, report, progress) if data else ({}, set())

    def exists(chunk: bytes) -> bool:
        return chunk in present if data else repo.index.has(chunk)
    # tree id -> problems found below it (paths relative to that tree's directory)
    checked: dict[bytes, list[str]] = {}

    def check_tree(tree_id: bytes, parent: str) -> list[str]:
        if tree_id in checked:
            return [f"{parent}/{p}" if parent else p for p in checked[tree_id]]
        problems: list[str] = []
        report.trees += 1
        try:
            items = repo.read_tree(tree_id, "")
        except IntegrityError as exc:
            problems.append(f"(directory) {str(exc).removeprefix('integrity error: ')}")
            items = []
        for item in items:
            e = item.entry
            if e.kind == KIND_DIR:
                problems.extend(check_tree(item.subtree, e.path))
            elif e.kind == KIND_FILE:
                report.files += 1
                for c in e.chunks:
                    report.chunks_referenced += 1
                    if c in bad:
                        problems.append(f"{e.path}: chunk {c.hex()[:16]} damaged ({bad[c]})")
                    elif not exists(c):
                        problems.append(f"{e.path}: chunk {c.hex()[:16]} missing")
        checked[tree_id] = problems
        return [f"{parent}/{p}" if parent else p for p in problems]

    for name in repo.snapshot_names():
        try:
            snap: Snapshot = repo.load_snapshot(name)
        except (IntegrityError, StorageError) as exc:
            report.problems.append(str(exc))
            continue
        report.snapshots += 1
        label = f"snapshot {snap.short_id} ({snap.source} #{snap.generation})"
        for p in check_tree(snap.tree, ""):
            report.problems.append(f"{label}: {p}")
    return report

"""Key-less verification: what the receiving site can check without the passphrase.

Every pack's SHA-256 equals its name; every ``ids/`` object names an
existing pack and is a whole number of ids; every snapshot's SHA-256 equals
its name and it has a ``refs/`` object whose ids are all in ``ids/`` lists.
What needs the key (signatures, pack tables, chunk content) is listed in
the report as not checked, so nobody mistakes this for ``verify --data``.

Must never: decrypt, or need anything but the storage.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from replicator.errors import ObjectNotFound
from replicator.format import layout as L
from replicator.format.idlist import decode_ids
from replicator.repo.local_sink import open_storage

HASH_PIECE = 1 << 20


@dataclass
class KeylessReport:
    packs: int = 0
    ids_objects: int = 0
    snapshots: int = 0
    refs_checked: int = 0
    problems: list[str] = field(default_factory=list)
    not_checked: tuple[str, ...] = (
        "snapshot signatures and content (need the passphrase)",
        "chunk content and pack tables (need the passphrase)",
        "whether ids/ lists match the encrypted pack tables (need the passphrase)",
    )

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return dict(self.__dict__, ok=self.ok, not_checked=list(self.not_checked))


def _sha256_of(storage, name: str) -> str:
    """SHA-256 of an object, read in pieces (a pack is never held whole)."""
    h = hashlib.sha256()
    size, offset = storage.size(name), 0
    while offset < size:
        piece = storage.get(name, offset, min(HASH_PIECE, size - offset))
        if not piece:
            break
        h.update(piece)
        offset += len(piece)
    return h.hexdigest()


def verify_without_key(path: str) -> KeylessReport:
    """:raises RepositoryNotFound: no repository at ``path``."""
    storage, _cfg = open_storage(path)
    try:
        return _verify(storage)
    finally:
        storage.close()


def _verify(storage) -> KeylessReport:
    report = KeylessReport()
    packs = set()
    for name in sorted(storage.list(L.PACKS)):
        report.packs += 1
        if not L.is_pack(name):
            report.problems.append(f"{name}: not a pack name")
            continue
        packs.add(L.digest_of(name))
        if _sha256_of(storage, name) != L.digest_of(name):
            report.problems.append(f"pack {name}: content does not match its name")
    present: set[bytes] = set()
    for name in sorted(storage.list(L.IDS)):
        report.ids_objects += 1
        if not L.IDS_RE.match(name) or L.digest_of(name) not in packs:
            report.problems.append(f"{name}: no such pack")
            continue
        try:
            present.update(decode_ids(storage.get(name), name))
        except ValueError as exc:
            report.problems.append(str(exc))
    for name in sorted(storage.list(L.SNAPSHOTS)):
        report.snapshots += 1
        digest = L.digest_of(name)
        if _sha256_of(storage, name) != digest:
            report.problems.append(f"snapshot {digest[:16]}: content does not match its name")
        try:
            refs = list(decode_ids(storage.get(L.refs_name(digest)), L.refs_name(digest)))
        except ObjectNotFound:
            report.problems.append(f"snapshot {digest[:16]}: no refs/ object (written by release 0.1.0? "
                                   f"run 'replicator upgrade' where the passphrase is)")
            continue
        except ValueError as exc:
            report.problems.append(str(exc))
            continue
        missing = sum(1 for r in refs if r not in present)
        report.refs_checked += len(refs)
        if missing:
            report.problems.append(f"snapshot {digest[:16]}: references {missing} missing chunks")
    return report

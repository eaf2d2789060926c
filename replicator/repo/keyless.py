"""Key-less verification: what the receiving site can check without the passphrase, and quarantine.

Every pack's SHA-256 equals its name; every ``ids/`` object names an
existing pack and is a whole number of ids; every snapshot's SHA-256 equals
its name and it has a ``refs/`` object whose ids are all held by intact,
unquarantined packs.  A pack whose bytes no longer match its name is
quarantined (``quarantine/<hash>``, when the writer lock can be taken): its
ids stop counting as held, so the next sync sends those chunks again and the
snapshots that named them are whole again.  What needs the key (signatures,
pack tables, chunk content) is listed in the report as not checked, so
nobody mistakes this for ``verify --data``.

Must never: decrypt, need anything but the storage, or delete anything.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from replicator.errors import ObjectNotFound
from replicator.format import layout as L
from replicator.format.idlist import decode_ids
from replicator.repo.local_sink import open_storage, quarantine_damaged

HASH_PIECE = 1 << 20
FOUND_BY = "serve --verify-only"


@dataclass
class KeylessReport:
    packs: int = 0
    ids_objects: int = 0
    snapshots: int = 0
    refs_checked: int = 0
    problems: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)  # packs quarantined by this run
    notes: list[str] = field(default_factory=list)  # what healed, what could not be done now
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


def verify_without_key(path: str, *, quarantine: bool = True) -> KeylessReport:
    """:param quarantine: record damaged packs as quarantined (needs the writer lock; skipped with a
        note while a sync holds it).  :raises RepositoryNotFound: no repository at ``path``."""
    storage, _cfg = open_storage(path)
    try:
        report, damaged = _verify(storage)
    finally:
        storage.close()
    if quarantine:
        report.quarantined, note = quarantine_damaged(path, damaged, FOUND_BY)
        if note:
            report.notes.append(note)
    return report


def _verify(storage) -> tuple[KeylessReport, dict[str, str]]:
    """:returns: the report, and the damaged packs not yet quarantined (digest -> reason)."""
    report = KeylessReport()
    quarantined = {L.digest_of(n) for n in storage.list(L.QUARANTINE) if L.QUARANTINE_RE.match(n)}
    good: set[str] = set()
    damaged: dict[str, str] = {}
    for name in sorted(storage.list(L.PACKS)):
        report.packs += 1
        if not L.is_pack(name):
            report.problems.append(f"{name}: not a pack name")
            continue
        digest = L.digest_of(name)
        if digest in quarantined:
            continue  # known damaged: its chunks count as missing below until a sync sends them again
        if _sha256_of(storage, name) != digest:
            reason = f"pack {name}: content does not match its name"
            report.problems.append(reason)
            damaged[digest] = reason
            continue
        good.add(digest)
    present: set[bytes] = set()
    lists: dict[str, list[bytes]] = {}
    for name in sorted(storage.list(L.IDS)):
        report.ids_objects += 1
        digest = L.digest_of(name)
        if not L.IDS_RE.match(name) or (digest not in good and digest not in damaged and digest not in quarantined):
            report.problems.append(f"{name}: no such pack")
            continue
        try:
            lists[digest] = list(decode_ids(storage.get(name), name))
        except ValueError as exc:
            report.problems.append(str(exc))
            continue
        if digest in good:
            present.update(lists[digest])
    for digest in sorted(quarantined):
        only_there = [i for i in lists.get(digest, []) if i not in present]
        report.notes.append(f"pack {digest[:16]} is quarantined (damaged); "
                            + ("every chunk it held is stored again elsewhere: healed" if not only_there
                               else f"{len(only_there)} of its chunks are held nowhere else yet"))
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
            report.problems.append(f"snapshot {digest[:16]}: references {missing} missing chunks "
                                   f"(a sync from a source that still has them sends them again)")
    return report, damaged

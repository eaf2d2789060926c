"""Key-less verification: what the receiving site can check without the passphrase, and quarantine.

Every pack's SHA-256 equals its name; every ``ids/`` object names an
existing pack and is a whole number of ids with a declaration proof that
verifies with the public key kept in the clear; every snapshot's SHA-256
equals its name and it has a ``refs/`` object with a valid proof whose ids
are all held by intact, unquarantined packs.  Lists written before proofs
existed (0.2) are counted in a note, not as problems: the key holder's next
sync signs the id lists, ``replicator upgrade ssh://...`` the snapshots.  A pack whose bytes no longer match its name is
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
from replicator.format import idlist as I
from replicator.format import layout as L
from replicator.format.keyfile import parse_keyfile
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
    storage, cfg = open_storage(path)
    try:
        verifier = I.Verifier(cfg["id"], bytes.fromhex(parse_keyfile(storage.get(L.KEY))["signing_public_key"]))
        report, damaged = _verify(storage, verifier)
    finally:
        storage.close()
    if quarantine:
        report.quarantined, note = quarantine_damaged(path, damaged, FOUND_BY)
        if note:
            report.notes.append(note)
    return report


def _read_list(storage, name: str, legacy: list[str]) -> I.IdList:
    """:raises ValueError: not a list.  :raises ObjectNotFound:"""
    parsed = I.parse_list(storage.get(name), name)
    if parsed.proof is None:
        legacy.append(name)
    return parsed


def _verify(storage, verifier: I.Verifier) -> tuple[KeylessReport, dict[str, str]]:
    """:returns: the report, and the damaged packs not yet quarantined (digest -> reason)."""
    report = KeylessReport()
    legacy: list[str] = []
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
            parsed = _read_list(storage, name, legacy)
        except ValueError as exc:
            report.problems.append(str(exc))
            continue
        if parsed.proof is not None and not verifier.pack(digest, parsed.ids, parsed.proof):
            report.problems.append(f"{name}: its proof does not verify (a declaration not made by a key holder); "
                                   f"the key holder's next sync replaces it")
            continue
        lists[digest] = list(I.decode_ids(parsed.ids, name))
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
            parsed = _read_list(storage, L.refs_name(digest), legacy)
            if parsed.proof is not None and not verifier.snapshot(digest, parsed.proof):
                report.problems.append(f"snapshot {digest[:16]}: its proof does not verify (not made by a key "
                                       f"holder)")
                continue
            refs = parsed.ids  # one buffer, 32 bytes per id (parse_list checked it is whole ids)
        except ObjectNotFound:
            report.problems.append(f"snapshot {digest[:16]}: no refs/ object (written by release 0.1.0? "
                                   f"run 'replicator upgrade' where the passphrase is)")
            continue
        except ValueError as exc:
            report.problems.append(str(exc))
            continue
        missing = sum(1 for r in I.iter_ids(refs) if r not in present)
        report.refs_checked += I.id_count(refs)
        if missing:
            report.problems.append(f"snapshot {digest[:16]}: references {missing} missing chunks "
                                   f"(a sync from a source that still has them sends them again)")
    if legacy:
        packs = sum(1 for n in legacy if n.startswith(L.IDS))
        report.notes.append(f"{packs} id list(s) and {len(legacy) - packs} snapshot refs carry no proof yet "
                            f"(written before 0.3): the key holder's next sync signs the id lists, "
                            f"'replicator upgrade' from the key holder signs both")
    return report, damaged

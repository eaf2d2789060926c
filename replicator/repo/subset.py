"""Spot checks of what a destination holds, through its sink: ``verify --read-data-subset``.

The primary cannot trust a secondary's word that it stores what it
acknowledged.  This reads a random sample of packs back through the sink (a
local directory, or ``ssh://`` with the protocol's GET), and for each one
checks, with the key: the SHA-256 of its bytes is its name, its table
authenticates, every blob decrypts and matches its keyed id, and the key-less
``ids/`` declaration the destination deduplicates with lists exactly the ids
of that authenticated table.  A secondary that acknowledged packs it never
stored, or claims chunks a pack does not hold, is caught at the cost of the
sample (restic's ``check --read-data-subset`` is the model).

Must never: write anything, or read more than the sample.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from replicator import constants as C
from replicator.errors import IntegrityError, ObjectNotFound, ReplicatorError, UnsupportedVersion
from replicator.format import layout as L
from replicator.format.idlist import decode_ids
from replicator.format.pack import open_blob, pack_key, parse_header, read_table
from replicator.repo.keyring import Keyring
from replicator.repo.sink import Sink


@dataclass
class SubsetReport:
    packs_total: int = 0
    packs_checked: int = 0
    blobs_checked: int = 0
    bytes_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return dict(self.__dict__, ok=self.ok)


def parse_subset(text: str) -> tuple[float | None, int | None]:
    """``"5%"`` -> (0.05, None); ``"20"`` -> (None, 20) packs.  :raises ValueError:"""
    t = text.strip()
    if t.endswith("%"):
        share = float(t[:-1]) / 100
        if not 0 < share <= 1:
            raise ValueError(f"--read-data-subset {text!r}: a share must be above 0% and at most 100%")
        return share, None
    count = int(t)
    if count < 1:
        raise ValueError(f"--read-data-subset {text!r}: a count must be at least 1")
    return None, count


def choose(names: list[str], share: float | None, count: int | None, rng: random.Random) -> list[str]:
    """At least one pack when there is any: a sample of nothing checks nothing."""
    n = count if count is not None else max(1, round(len(names) * (share or 0)))
    return sorted(rng.sample(names, min(n, len(names))))


def verify_subset(keyring: Keyring, sink: Sink, *, share: float | None = None, count: int | None = None,
                  rng: random.Random | None = None) -> SubsetReport:
    report = SubsetReport()
    names = sink.list(L.PACKS)
    report.packs_total = len(names)
    declared = {L.digest_of(n) for n in sink.list(L.IDS)}
    sample = choose(names, share, count, rng or random.SystemRandom())
    for name in sample:
        digest = L.digest_of(name)
        try:
            data = dict(sink.get_many([name]))[name]
        except ObjectNotFound:
            report.problems.append(f"pack {name}: listed but not held")
            continue
        except ReplicatorError as exc:  # a remote session ends on a refused GET: nothing more can be read
            report.problems.append(f"pack {name}: cannot be read ({exc}); check stopped")
            break
        report.packs_checked += 1
        report.bytes_checked += len(data)
        if hashlib.sha256(data).hexdigest() != digest:
            report.problems.append(f"pack {name}: content does not match its name")
            continue
        try:
            entries = read_table(data, name, keyring.keys.encrypt)
            aead = pack_key(keyring.keys.encrypt, parse_header(data, name))
            for e in entries:
                hasher = keyring.chunk_hasher if e.type == C.BLOB_DATA else keyring.tree_hasher
                open_blob(aead, e, data[e.offset : e.offset + e.length], hasher, name)
                report.blobs_checked += 1
        except (IntegrityError, UnsupportedVersion) as exc:
            report.problems.append(str(exc))
            continue
        if digest in declared:
            ids_name = L.ids_name(digest)
            try:
                raw = dict(sink.get_many([ids_name]))[ids_name]
                listed = set(decode_ids(raw, ids_name))
            except (ValueError, ReplicatorError) as exc:
                report.problems.append(f"{ids_name}: {exc}")
                continue
            if keyring.verifier.ids_object(digest, raw) is None:
                report.problems.append(f"{ids_name}: carries no valid proof of a key holder (written before 0.3: "
                                       f"`replicator upgrade` signs it; otherwise forged)")
            actual = {e.id for e in entries}
            if listed != actual:
                extra = len(listed - actual)
                report.problems.append(f"{ids_name}: declares {extra} chunk(s) the pack does not hold"
                                       if extra else f"{ids_name}: omits {len(actual - listed)} chunk(s) the pack holds")
    return report

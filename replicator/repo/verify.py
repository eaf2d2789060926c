"""Verification: structure always, every byte with ``data=True``.

Structural: every snapshot object authenticates and its signature verifies;
every tree of every snapshot decrypts and decodes; every chunk a file names
is in the index (which was brought in line with storage at open).  With
``data``: every pack is read whole, its SHA-256 compared with its name, its
table authenticated, and every blob decrypted, decompressed and re-hashed.
Damage is reported with what it affects: the snapshot and the file paths.
Identical subtrees (same tree id) are checked once across all snapshots, and
trees are walked with an explicit stack (never recursion on depth).

Generations: two snapshots of one source with the same generation, or a
snapshot whose parent is not the snapshot of the generation before it while
that one exists (a fork), are problems; generations missing from 1..highest
are notes (forget removes old ones legitimately), not problems.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from replicator.constants import BLOB_DATA
from replicator.errors import IntegrityError, ObjectNotFound, StorageError, UnsupportedVersion
from replicator.format import layout as L
from replicator.format.entry import KIND_DIR, KIND_FILE
from replicator.format.pack import open_blob, pack_key, parse_header, read_table
from replicator.format.snapshot import Snapshot
from replicator.format.tree import TreeItem
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
    notes: list[str] = field(default_factory=list)  # worth knowing, not damage (e.g. forgotten generations)
    damaged_packs: dict[str, str] = field(default_factory=dict)  # digest -> reason, found by this run (--data)
    quarantined: list[str] = field(default_factory=list)  # of those, quarantined (set by the caller)

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
    quarantined = {n.rsplit("/", 1)[1] for n in repo.storage.list(L.QUARANTINE) if L.QUARANTINE_RE.match(n)}
    names = sorted(repo.storage.list("data/"))
    for name in names:
        if L.digest_of(name) in quarantined:
            # Known damaged: not read as a home of anything; the chunks it held count where they were
            # stored again, and the ones stored nowhere else show up below as missing.
            report.notes.append(f"pack {name} is quarantined (found damaged before); not read")
            continue
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
            report.damaged_packs[L.digest_of(name)] = str(exc)
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
                report.damaged_packs.setdefault(L.digest_of(name), str(exc))
    return bad, present


@dataclass
class _Frame:
    """One tree on the walk's stack: its items still to check and the problems found so far."""

    tree: bytes
    items: Iterator[TreeItem] | None = None
    problems: list[str] = field(default_factory=list)
    waiting: str = ""  # the path of the subdirectory being checked above this frame


def _prefixed(parent: str, problems: list[str]) -> list[str]:
    return [f"{parent}/{p}" if parent else p for p in problems]


def _check_generations(snaps: list[Snapshot], report: VerifyReport) -> None:
    """Repeated generations and forks are problems; missing generations are notes.

    Forget removes old (or any) generations, so a gap is not damage by
    itself.  Two snapshots of one source and generation, or a snapshot whose
    parent is not the snapshot of the generation before it (when that one
    exists), are two lines of history where there must be one.
    """
    by_id = {s.id: s for s in snaps}
    by_source: dict[str, dict[int, list[Snapshot]]] = {}
    for s in snaps:
        by_source.setdefault(s.source, {}).setdefault(s.generation, []).append(s)
    for source in sorted(by_source):
        gens = by_source[source]
        for gen in sorted(gens):
            here = sorted(gens[gen], key=lambda s: s.id)
            if len(here) > 1:
                report.problems.append(f"source {source!r}: generation {gen} is claimed by {len(here)} snapshots "
                                       f"({', '.join(s.short_id for s in here)}): two lines of history")
            before = {s.id for s in gens.get(gen - 1, [])}
            for s in here:
                label = f"snapshot {s.short_id} ({source!r} #{gen})"
                parent = by_id.get(s.parent) if s.parent else None
                if parent is not None and (parent.source != source or parent.generation >= gen):
                    report.problems.append(f"{label}: its parent {parent.short_id} is {parent.source!r} "
                                           f"#{parent.generation}, not an earlier generation of the same source")
                elif before and s.parent not in before:
                    named = f"names {s.parent[:16]}" if s.parent else "has none"
                    report.problems.append(
                        f"{label}: a fork: its parent {named}, not generation {gen - 1} "
                        f"({', '.join(sorted(i[:16] for i in before))}); two writers, or that snapshot was "
                        f"unreadable when this one was committed")
        top = max(gens)
        missing = [g for g in range(1, top) if g not in gens]
        if missing:
            report.notes.append(f"source {source!r}: generations {_ranges(missing)} of 1-{top} not present "
                                f"(forgotten, damaged, or never committed)")


def _ranges(numbers: list[int]) -> str:
    """[1, 3, 4, 5, 9] -> "1, 3-5, 9" (``numbers`` sorted, distinct)."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in numbers[1:] + [0]:
        if n != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = n
        prev = n
    return ", ".join(parts)


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

    def check_tree(root: bytes) -> list[str]:
        """Problems below tree ``root``, depth first with an explicit stack (never recursion on depth)."""
        if root in checked:
            return checked[root]
        stack = [_Frame(root)]
        on_stack = {root}
        while stack:
            frame = stack[-1]
            if frame.items is None:  # first visit
                report.trees += 1
                try:
                    frame.items = iter(repo.read_tree(frame.tree, ""))
                except IntegrityError as exc:
                    frame.problems.append(f"(directory) {str(exc).removeprefix('integrity error: ')}")
                    frame.items = iter(())
            descended = False
            for item in frame.items:
                e = item.entry
                if e.kind == KIND_DIR:
                    if item.subtree in checked:
                        frame.problems.extend(_prefixed(e.path, checked[item.subtree]))
                    elif item.subtree in on_stack:  # only a forged tree id could do this: never loop
                        frame.problems.append(f"{e.path}: (directory) tree {item.subtree.hex()[:16]} contains "
                                              f"itself")
                    else:
                        frame.waiting = e.path
                        stack.append(_Frame(item.subtree))
                        on_stack.add(item.subtree)
                        descended = True
                        break
                elif e.kind == KIND_FILE:
                    report.files += 1
                    for c in e.chunks:
                        report.chunks_referenced += 1
                        if c in bad:
                            frame.problems.append(f"{e.path}: chunk {c.hex()[:16]} damaged ({bad[c]})")
                        elif not exists(c):
                            frame.problems.append(f"{e.path}: chunk {c.hex()[:16]} missing")
            if descended:
                continue
            stack.pop()
            on_stack.discard(frame.tree)
            checked[frame.tree] = frame.problems
            if stack:
                stack[-1].problems.extend(_prefixed(stack[-1].waiting, frame.problems))
        return checked[root]

    listing = repo.read_snapshots()
    for damaged in listing.damaged:
        if damaged.junk:
            report.notes.append(f"{damaged.name} is not a snapshot name (ignored by every command)")
        else:
            report.problems.append(str(damaged.error))
    for snap in listing.snapshots:
        report.snapshots += 1
        label = f"snapshot {snap.short_id} ({snap.source} #{snap.generation})"
        for p in check_tree(snap.tree):
            report.problems.append(f"{label}: {p}")
    _check_generations(listing.snapshots, report)
    return report

"""Repository statistics: what each source holds and what deduplication and compression save.

Owns: the logical size (bytes, files, directories, symlinks) of each snapshot,
computed from its trees with one total kept per tree id, so a subtree shared
by many snapshots (the merkle ids say so) is read and added up once, and
no snapshot's trees are ever held whole: the walk is a stack of directories,
their subdirectories read in pipelined rounds (repo/browse.py).  The stored
side (packs, bytes, unique chunks, their plaintext and stored sizes) comes
from the index, one pack's rows at a time.

Memory: four integers per distinct tree id met, and the directories on the
path being walked.

Must never: print, write, trust the snapshots' own recorded counts (they are
shown by ``snapshots``; these are counted from the trees), or recurse on
tree depth.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from replicator import constants as C
from replicator.format.entry import KIND_DIR, KIND_FILE, KIND_SYMLINK
from replicator.format.snapshot import Snapshot
from replicator.format.tree import TreeItem
from replicator.repo.browse import with_subtrees


@dataclass
class Totals:
    """What a tree holds, everything below it included (a hard link counts as the file it is)."""

    bytes: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0

    def add(self, other: Totals) -> None:
        self.bytes += other.bytes
        self.files += other.files
        self.dirs += other.dirs
        self.symlinks += other.symlinks


class TreeTotals:
    """Totals of trees by id, each tree read once however many snapshots share it.

    :param repo: a Repository (``read_tree``, ``read_blobs``).
    """

    def __init__(self, repo) -> None:
        self.repo = repo
        self._known: dict[bytes, tuple[int, int, int, int]] = {}
        self.trees_read = 0

    def of(self, tree_id: bytes, path: str = "") -> Totals:
        """:returns: the totals of the tree ``tree_id`` (at ``path``, for messages).
        :raises IntegrityError: a tree is missing or damaged."""
        known = self._known.get(tree_id)
        if known is not None:
            return Totals(*known)
        self.trees_read += 1
        # Post-order without recursion: a frame is a directory being added up.
        stack: list[tuple[bytes, Totals, Iterator[tuple[TreeItem, list[TreeItem] | None]]]] = [
            (tree_id, Totals(), self._children(self.repo.read_tree(tree_id, path)))]
        while True:
            tid, acc, children = stack[-1]
            step = next(children, None)
            if step is None:
                stack.pop()
                self._known[tid] = (acc.bytes, acc.files, acc.dirs, acc.symlinks)
                if not stack:
                    return acc
                stack[-1][1].add(acc)
                continue
            item, subtree = step
            entry = item.entry
            if entry.kind == KIND_FILE:
                acc.files += 1
                acc.bytes += entry.size
            elif entry.kind == KIND_SYMLINK:
                acc.symlinks += 1
            elif entry.kind == KIND_DIR:
                acc.dirs += 1
                known = self._known.get(item.subtree)
                if known is not None:  # also a sibling's twin, added up since its round was read
                    acc.add(Totals(*known))
                else:
                    self.trees_read += 1
                    items = subtree if subtree is not None else self.repo.read_tree(item.subtree, entry.path)
                    stack.append((item.subtree, Totals(), self._children(items)))

    def _children(self, items: list[TreeItem]) -> Iterator[tuple[TreeItem, list[TreeItem] | None]]:
        return with_subtrees(self.repo, items, lambda it: it.subtree not in self._known)


@dataclass
class SourceStats:
    source: str
    snapshots: int
    latest: Snapshot
    latest_totals: Totals


@dataclass
class RepositoryStats:
    """The figures ``replicator stats`` shows.  Ratios are None where their denominator is 0."""

    sources: list[SourceStats] = field(default_factory=list)
    snapshots: int = 0
    packs: int = 0
    stored_bytes: int = 0  # the packs' sizes: chunks, trees, headers and tables, sealed
    unique_chunks: int = 0  # data blobs in the index
    chunk_bytes: int = 0  # their plaintext, once each
    chunk_stored_bytes: int = 0  # their sealed (compressed, encrypted) length
    trees: int = 0  # tree blobs in the index
    logical_bytes: int = 0  # the files of every snapshot, added up as if each were restored
    trees_read: int = 0

    @property
    def dedup_ratio(self) -> float | None:
        """Logical bytes of every snapshot over the unique chunks' plaintext."""
        return self.logical_bytes / self.chunk_bytes if self.chunk_bytes else None

    @property
    def compression_ratio(self) -> float | None:
        """The unique chunks' plaintext over what they take sealed in the packs."""
        return self.chunk_bytes / self.chunk_stored_bytes if self.chunk_stored_bytes else None


def repository_stats(repo, snapshots: list[Snapshot]) -> RepositoryStats:
    """Statistics of ``repo`` and of ``snapshots`` (readable ones, in generation order).

    Each snapshot's latest of its source is the highest generation (the last of its source in
    generation order); two snapshots claiming it are counted alike (the first, by id).
    :raises IntegrityError: a tree is missing or damaged.
    """
    out = RepositoryStats(snapshots=len(snapshots))
    totals = TreeTotals(repo)
    by_source: dict[str, list[Snapshot]] = {}
    for snap in snapshots:
        by_source.setdefault(snap.source, []).append(snap)
        out.logical_bytes += totals.of(snap.tree).bytes
    for source in sorted(by_source):
        mine = by_source[source]
        top = min((s for s in mine if s.generation == mine[-1].generation), key=lambda s: s.id)
        out.sources.append(SourceStats(source, len(mine), top, totals.of(top.tree)))
    out.trees_read = totals.trees_read
    packs = repo.index.packs()
    out.packs = len(packs)
    out.stored_bytes = sum(packs.values())
    for pack in sorted(packs):
        for blob in repo.index.blobs_in(pack):
            if blob.type == C.BLOB_DATA:
                out.unique_chunks += 1
                out.chunk_bytes += blob.raw_len
                out.chunk_stored_bytes += blob.length
            elif blob.type == C.BLOB_TREE:
                out.trees += 1
    return out

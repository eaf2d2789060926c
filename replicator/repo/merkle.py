"""Merkle comparison of two snapshots, subtree by subtree.

Equal tree ids mean equal subtrees (the id is a keyed hash of the canonical
encoding, which names its children by their ids), so a comparison descends
only into directories whose ids differ: comparing two snapshots of a large
tree where little changed reads only the changed branches.  Never recursive
(a tree may be any number of levels deep).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from replicator.format.entry import KIND_DIR, Entry
from replicator.format.tree import TreeItem

ADDED, REMOVED, MODIFIED = "+", "-", "M"


@dataclass(frozen=True)
class Change:
    kind: str  # ADDED, REMOVED or MODIFIED
    path: str
    what: str = ""  # for MODIFIED: "content", "metadata", "type"


def _same_content(a: Entry, b: Entry) -> bool:
    return a.kind == b.kind and a.chunks == b.chunks and a.target == b.target and a.size == b.size


def _same_metadata(a: Entry, b: Entry) -> bool:
    return (a.mode, a.uid, a.gid, a.mtime_ns, a.xattrs, a.link_to) == (b.mode, b.uid, b.gid, b.mtime_ns, b.xattrs,
                                                                     b.link_to)


def diff_trees(read_tree: Callable[[bytes, str], list[TreeItem]], old: bytes, new: bytes,
               parent: str = "") -> Iterator[Change]:
    """Changes from tree ``old`` to tree ``new``, in path order.

    Any depth: the subtrees still to compare are a stack of iterators, never
    nested calls or ``yield from`` chains, so 10,000 levels cost 10,000 stack
    entries, not Python frames.  Trees are read lazily, one directory at a time.

    :param read_tree: (tree id, directory path) -> items, e.g. Repository.read_tree.
    """
    stack: list[Iterator[Change | Iterator]] = [_compare(read_tree, old, new, parent)]
    while stack:
        step = next(stack[-1], None)
        if step is None:
            stack.pop()
        elif isinstance(step, Change):
            yield step
        else:
            stack.append(step)  # a subtree: its changes come before the next name of this directory


def _compare(read_tree: Callable[[bytes, str], list[TreeItem]], old: bytes, new: bytes,
             parent: str) -> Iterator[Change | Iterator]:
    """One directory's changes, and an iterator for each subtree to descend (run by diff_trees)."""
    if old == new:
        return
    a = {it.entry.name: it for it in read_tree(old, parent)}
    b = {it.entry.name: it for it in read_tree(new, parent)}
    for name in sorted(a.keys() | b.keys()):
        x, y = a.get(name), b.get(name)
        if y is None:
            assert x is not None  # the name came from one side
            yield _all(read_tree, x, REMOVED)
        elif x is None:
            yield _all(read_tree, y, ADDED)
        elif x.entry.kind != y.entry.kind:
            yield _all(read_tree, x, REMOVED)
            yield _all(read_tree, y, ADDED)
        elif x.entry.kind == KIND_DIR:
            if not _same_metadata(x.entry, y.entry):
                yield Change(MODIFIED, y.entry.path, "metadata")
            yield _compare(read_tree, x.subtree, y.subtree, y.entry.path)
        elif not _same_content(x.entry, y.entry):
            yield Change(MODIFIED, y.entry.path, "content")
        elif not _same_metadata(x.entry, y.entry):
            yield Change(MODIFIED, y.entry.path, "metadata")


def _all(read_tree: Callable[[bytes, str], list[TreeItem]], item: TreeItem, kind: str) -> Iterator[Change | Iterator]:
    """``item`` and everything under it, as ``kind`` (run by diff_trees)."""
    yield Change(kind, item.entry.path)
    if item.entry.kind == KIND_DIR:
        for child in read_tree(item.subtree, item.entry.path):
            yield _all(read_tree, child, kind)

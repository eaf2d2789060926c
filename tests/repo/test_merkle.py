"""Merkle diff equals a naive comparison, and skips identical subtrees."""
from __future__ import annotations

import os
import random

import pytest

from replicator.repo.merkle import diff_trees
from replicator.repo.repository import Repository
from tests.conftest import sync_repo


def _naive(repo, a, b):
    ea = {e.path: e for e in repo.walk_tree(a)}
    eb = {e.path: e for e in repo.walk_tree(b)}
    out = set()
    for p in ea.keys() - eb.keys():
        out.add(("-", p))
    for p in eb.keys() - ea.keys():
        out.add(("+", p))
    for p in ea.keys() & eb.keys():
        x, y = ea[p], eb[p]
        if x.kind != y.kind:
            out |= {("-", p), ("+", p)}
        elif x != y and x.kind != "dir":
            out.add(("M", p))
        elif x.kind == "dir" and (x.mode, x.mtime_ns, x.uid, x.gid, x.xattrs) != (y.mode, y.mtime_ns, y.uid, y.gid, y.xattrs):
            out.add(("M", p))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_diff_matches_naive_comparison(tmp_path, seed):
    rnd = random.Random(seed)
    src = tmp_path / "src"
    for d in range(6):
        (src / f"d{d}" / "sub").mkdir(parents=True)
        for f in range(5):
            (src / f"d{d}" / "sub" / f"f{f}").write_bytes(rnd.randbytes(rnd.randint(0, 3000)))
    with Repository.init(str(tmp_path / "repo"), b"pw", log2n=14) as repo:
        s1 = sync_repo(str(src), repo, "s").snapshot
        (src / "d1" / "sub" / "f2").write_bytes(b"changed")
        os.unlink(src / "d2" / "sub" / "f0")
        (src / "d3" / "new").write_bytes(b"new")
        os.rename(src / "d4", src / "d4-renamed")
        os.chmod(src / "d5" / "sub" / "f1", 0o600)
        s2 = sync_repo(str(src), repo, "s").snapshot
        got = list(diff_trees(repo.read_tree, s1.tree, s2.tree))
        assert {(c.kind, c.path) for c in got} == _naive(repo, s1.tree, s2.tree)
        assert ("M", "d1/sub/f2") in {(c.kind, c.path) for c in got}

        # Identical subtrees are never read: d0 did not change.
        read = []

        def spy(tree_id, parent):
            read.append(parent)
            return repo.read_tree(tree_id, parent)

        list(diff_trees(spy, s1.tree, s2.tree))
        assert "d0" not in read and "d0/sub" not in read
        assert list(diff_trees(repo.read_tree, s2.tree, s2.tree)) == []


# --- any depth ---------------------------------------------------------------------------
def _chain_reader(depth: int):
    """read_tree over two in-memory chains d/d/.../d of ``depth`` levels ("old-N", "new-N"): the same
    entries except the file at the bottom; a third tree, "empty", has nothing."""
    from replicator.format.entry import KIND_DIR, KIND_FILE, Entry
    from replicator.format.tree import TreeItem

    def read_tree(tree_id: bytes, parent: str):
        if tree_id == b"empty":
            return []
        side, level = tree_id.decode().split("-")
        path = f"{parent}/d" if parent else "d"
        if int(level) == depth - 1:
            chunk = (b"o" if side == "old" else b"n") * 32
            fpath = f"{parent}/f" if parent else "f"
            return [TreeItem(Entry(fpath, KIND_FILE, 0o644, 0, 0, 1, size=1, chunks=(chunk,)))]
        sub = f"{side}-{int(level) + 1}".encode()
        return [TreeItem(Entry(path, KIND_DIR, 0o755, 0, 0, 1), sub)]
    return read_tree


def test_diff_of_trees_deeper_than_the_recursion_limit():
    import sys

    depth = sys.getrecursionlimit() * 5
    read_tree = _chain_reader(depth)
    changes = list(diff_trees(read_tree, b"old-0", b"new-0"))
    assert [(c.kind, c.path.count("/"), c.what) for c in changes] == [("M", depth - 1, "content")]
    removed = list(diff_trees(read_tree, b"old-0", b"empty"))
    assert [c.kind for c in removed] == ["-"] * depth
    assert [c.path.count("/") for c in removed] == list(range(depth - 1)) + [depth - 1]  # pre-order, file last
    added = list(diff_trees(read_tree, b"empty", b"new-0"))
    assert len(added) == depth and {c.kind for c in added} == {"+"}

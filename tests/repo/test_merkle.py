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

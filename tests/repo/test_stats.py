"""Repository statistics (repo/stats.py): counted from the trees, each distinct tree read once."""
from __future__ import annotations

import os
import random

import pytest

from replicator.errors import IntegrityError
from replicator.format.entry import KIND_DIR, KIND_FILE, Entry
from replicator.format.tree import TreeItem
from replicator.repo.repository import Repository
from replicator.repo.stats import TreeTotals, repository_stats
from tests.conftest import sync_repo
from tests.repo.memtrees import MemTrees


def _src(tmp_path):
    rnd = random.Random(11)
    src = tmp_path / "src"
    for d in range(4):
        (src / f"ward{d}" / "scans").mkdir(parents=True)
        for f in range(3):
            (src / f"ward{d}" / "scans" / f"{f}.dcm").write_bytes(rnd.randbytes(rnd.randint(100, 40_000)))
    (src / "empty1").mkdir()
    (src / "empty2").mkdir()  # the same tree id as empty1
    (src / "notes.txt").write_text("a compressible line of text\n" * 5000)
    os.link(src / "notes.txt", src / "notes-link.txt")
    os.symlink("notes.txt", src / "sym")
    return src


def _distinct_trees(repo, snaps) -> int:
    ids = {s.tree for s in snaps}
    stack = list(ids)
    while stack:
        for it in repo.read_tree(stack.pop(), ""):
            if it.entry.kind == KIND_DIR and it.subtree not in ids:
                ids.add(it.subtree)
                stack.append(it.subtree)
    return len(ids)


def test_figures_match_the_trees_and_the_recorded_counts(tmp_path):
    src = _src(tmp_path)
    with Repository.init(str(tmp_path / "repo"), b"pw", log2n=14) as repo:
        s1 = sync_repo(str(src), repo, "hospital").snapshot
        (src / "ward0" / "scans" / "0.dcm").write_bytes(b"changed")
        s2 = sync_repo(str(src), repo, "hospital").snapshot
        s3 = sync_repo(str(src / "ward1"), repo, "lab").snapshot
        snaps = repo.snapshots()
        st = repository_stats(repo, snaps)

        entries = {s.id: list(repo.walk_tree(s.tree)) for s in snaps}
        logical = {s.id: sum(e.size for e in entries[s.id] if e.kind == KIND_FILE) for s in snaps}
        assert st.logical_bytes == sum(logical.values())
        assert [(x.source, x.snapshots, x.latest.id) for x in st.sources] == [("hospital", 2, s2.id), ("lab", 1, s3.id)]
        for x in st.sources:
            assert x.latest_totals.bytes == logical[x.latest.id] == x.latest.stats["bytes"]
            assert x.latest_totals.files == x.latest.stats["files"]
            assert x.latest_totals.dirs == x.latest.stats["dirs"]
            assert x.latest_totals.symlinks == x.latest.stats["symlinks"]
        chunks = {c for es in entries.values() for e in es for c in e.chunks}
        assert st.unique_chunks == len(chunks)
        assert st.chunk_bytes == sum(repo.index.lookup(c)[1].raw_len for c in chunks)
        assert st.packs == len(repo.index.packs()) and st.stored_bytes == sum(repo.index.packs().values())
        assert st.trees == _distinct_trees(repo, snaps)
        assert st.trees_read == _distinct_trees(repo, snaps)  # each distinct tree read once, shared or not
        assert st.dedup_ratio is not None and st.dedup_ratio > 1.5  # s1 and s2 share nearly everything
        assert st.compression_ratio is not None and st.compression_ratio > 1  # notes.txt compresses
        assert s1.id not in {x.latest.id for x in st.sources}


def test_an_empty_repository(tmp_path):
    with Repository.init(str(tmp_path / "repo"), b"pw", log2n=14) as repo:
        st = repository_stats(repo, [])
    assert (st.snapshots, st.packs, st.unique_chunks, st.logical_bytes) == (0, 0, 0, 0)
    assert st.dedup_ratio is None and st.compression_ratio is None and st.sources == []


def test_a_missing_tree_is_an_integrity_error(tmp_path, monkeypatch):
    src = _src(tmp_path)
    with Repository.init(str(tmp_path / "repo"), b"pw", log2n=14) as repo:
        snap = sync_repo(str(src), repo, "s").snapshot
        ward = next(it for it in repo.read_tree(snap.tree, "") if it.entry.name == "ward2")
        real = repo.index.lookup
        monkeypatch.setattr(repo.index, "lookup", lambda b: None if b == ward.subtree else real(b))
        real_many = repo.index.lookup_many  # what rounds of blobs are located with
        monkeypatch.setattr(repo.index, "lookup_many",
                            lambda ids: {k: v for k, v in real_many(ids).items() if k != ward.subtree})
        with pytest.raises(IntegrityError, match="missing"):
            repository_stats(repo, [snap])




def test_totals_at_any_depth():
    depth = 3000  # the recursion limit is 1000
    mem = MemTrees()
    tree = mem.put([TreeItem(Entry("leaf", KIND_FILE, 0o644, 0, 0, 0, size=7))])
    for i in range(depth):
        tree = mem.put([TreeItem(Entry("d", KIND_DIR, 0o755, 0, 0, 0), tree),
                        TreeItem(Entry(f"f{i}", KIND_FILE, 0o644, 0, 0, 0, size=1))])
    t = TreeTotals(mem).of(tree)
    assert (t.bytes, t.files, t.dirs, t.symlinks) == (7 + depth, depth + 1, depth, 0)

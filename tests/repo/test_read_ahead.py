"""Reading a snapshot in few rounds: walk_tree reads trees ahead breadth first, read_blobs reads the
blobs that lie next to each other in a pack as one range.

Before, walk_tree read one tree per round (over ssh:// one round trip per directory: 2,974 for the
benchmark corpus) and read_blobs one range per blob; a remote restore of the 256 MiB corpus took 8.6x
a local one.  Checked here by counting rounds and ranges on a local repository; the entries and bytes
must be exactly those of the plain one-tree-at-a-time walk.
"""
from __future__ import annotations

import random

import pytest

from replicator.format.entry import KIND_DIR, KIND_FILE
from replicator.repo.repository import SPAN_GAP, Repository
from tests.conftest import PASSPHRASE, run_cli


def _repo(tmp_path, dirs=60, depth=3):
    src = tmp_path / "src"
    rnd = random.Random(5)
    for d in range(dirs):
        path = src.joinpath(*[f"l{level}-{d % (3 + level)}" for level in range(depth)], f"ward-{d}")
        path.mkdir(parents=True, exist_ok=True)
        for f in range(3):
            (path / f"note-{f}.txt").write_bytes(rnd.randbytes(rnd.randrange(100, 5000)))
    (src / "scan.dcm").write_bytes(rnd.randbytes(3_000_000))
    repo = tmp_path / "repo"
    assert run_cli("init", str(repo), "--kdf-work", "14", "--chunk-sizes", "16384,65536,262144", "-q").returncode == 0
    assert run_cli("sync", str(src), str(repo), "--name", "s", "-q").returncode == 0
    return Repository.open(str(repo), PASSPHRASE.encode())


def _count_pack_reads(repo) -> list[int]:
    """The lengths of the ranges read from packs from now on (the pack headers, read once, not counted)."""
    reads: list[int] = []
    get = repo.storage.get

    def counting(name, offset=0, length=None):
        if name.startswith("data/") and length is not None and offset > 0:
            reads.append(length)
        return get(name, offset, length)

    repo.storage.get = counting
    return reads


def _count_rounds(repo) -> list[int]:
    """Rounds of pack reads from now on, as a storage over ssh:// sees them: one per ``get_ranges`` call
    (each pipelined: one round trip), one per single read of a pack range."""
    rounds: list[int] = []
    storage = repo.storage
    get = storage.get

    def single(name, offset=0, length=None):
        if name.startswith("data/") and length is not None and offset > 0:
            rounds.append(1)
        return get(name, offset, length)

    def pipelined(wanted):
        rounds.append(len(wanted))
        return [(storage.size(n), get(n, o, ln)) for n, o, ln in wanted]

    storage.get = single
    storage.get_ranges = pipelined
    return rounds


def _plain_walk(repo, tree_id, parent=""):
    for item in repo.read_tree(tree_id, parent):
        yield item.entry
        if item.entry.kind == KIND_DIR:
            yield from _plain_walk(repo, item.subtree, item.entry.path)


def test_walk_tree_reads_trees_ahead_in_few_rounds(tmp_path):
    with _repo(tmp_path) as repo:
        snap = repo.snapshots()[-1]
        expected = list(_plain_walk(repo, snap.tree))
        dirs = sum(1 for e in expected if e.kind == KIND_DIR)
        rounds = _count_rounds(repo)
        assert list(repo.walk_tree(snap.tree)) == expected
        assert dirs > 100
        assert len(rounds) <= dirs // 5, (dirs, rounds)  # one tree at a time was one round per directory


def test_neighbouring_blobs_are_one_range(tmp_path):
    with _repo(tmp_path) as repo:
        snap = repo.snapshots()[-1]
        scan = next(e for e in repo.walk_tree(snap.tree) if e.kind == KIND_FILE and e.path == "scan.dcm")
        assert len(scan.chunks) >= 10
        reads = _count_pack_reads(repo)
        data = b"".join(repo.read_blobs(scan.chunks))
        assert data == (tmp_path / "src" / "scan.dcm").read_bytes()
        assert len(reads) <= len(scan.chunks) // 8, (len(scan.chunks), reads)  # was one read per chunk


def test_a_damaged_tree_read_ahead_fails_the_walk_only_where_it_is(tmp_path):
    """The walk yields everything before the damaged directory, then fails naming that tree (as the
    one-tree-at-a-time walk did), although the tree was read in an earlier round."""
    from replicator.errors import IntegrityError

    with _repo(tmp_path) as repo:
        snap = repo.snapshots()[-1]
        expected = list(_plain_walk(repo, snap.tree))
        subtrees = {}
        stack = [(snap.tree, "")]
        while stack:  # every directory's tree id, by path
            tid, path = stack.pop()
            for item in repo.read_tree(tid, path):
                if item.entry.kind == KIND_DIR:
                    subtrees[item.entry.path] = item.subtree
                    stack.append((item.subtree, item.entry.path))
        victim_path = [e.path for e in expected if e.kind == KIND_DIR][-1]  # the last directory walked
        victim = subtrees[victim_path]
        real_open = repo._open

        def damaged(pack, entry, sealed):
            if entry.id == victim:
                raise IntegrityError(f"blob {victim.hex()[:16]} is damaged")
            return real_open(pack, entry, sealed)

        repo._open = damaged
        got = []
        with pytest.raises(IntegrityError, match=victim.hex()[:16]):
            for e in repo.walk_tree(snap.tree):
                got.append(e)
        assert got == expected[: expected.index(next(e for e in expected if e.path == victim_path)) + 1]


def test_small_files_of_many_directories_are_read_in_few_ranges(tmp_path):
    """The small files of a directory are written just before its tree blob; reading the files of many
    directories in walk order (a restore's prefetch, gap=SPAN_GAP) reads over those small tree blobs
    instead of starting a new range at each one.  With no gap allowed it was one range per directory."""
    with _repo(tmp_path) as repo:
        snap = repo.snapshots()[-1]
        files = [e for e in repo.walk_tree(snap.tree) if e.kind == KIND_FILE and e.size < 10_000]
        assert len(files) == 180
        ids = [c for f in files for c in f.chunks]
        rounds = _count_rounds(repo)
        data = list(repo.read_blobs(ids, len(ids), SPAN_GAP))
        assert b"".join(data) == b"".join((tmp_path / "src" / f.path).read_bytes() for f in files)
        assert sum(rounds) <= 60 // 6, rounds


def test_a_walk_then_its_files_read_no_pack_byte_twice(tmp_path):
    """A failback (restore/seeds.py) and browse read the trees of a walk, then the chunks they lack, each
    with read_blobs' default gap of 0: each range holds wanted blobs only.  Reading over the gap there
    read the trees again with the chunks and the chunks again with the trees: the failback benchmark
    fetched 2.4x the day's delta (16.0 MB for 6.6 MB) instead of 1.2x."""
    with _repo(tmp_path) as repo:
        snap = repo.snapshots()[-1]
        wanted = set(_all_tree_ids(repo, snap.tree))  # the trees, read before counting starts
        reads = _count_pack_reads(repo)
        files = [e for e in repo.walk_tree(snap.tree) if e.kind == KIND_FILE]
        ids = [c for f in files for c in f.chunks]
        assert len(set(ids)) == len(ids)
        assert b"".join(repo.read_blobs(ids)) == b"".join((tmp_path / "src" / f.path).read_bytes() for f in files)
        wanted.update(ids)
        stored = repo.index.lookup_many(list(wanted))
        assert len(stored) == len(wanted)
        assert sum(reads) == sum(entry.length for _pack, entry in stored.values()), (len(reads), sum(reads))


def _all_tree_ids(repo, tree_id, parent=""):
    out = [tree_id]
    for item in repo.read_tree(tree_id, parent):
        if item.entry.kind == KIND_DIR:
            out += _all_tree_ids(repo, item.subtree, item.entry.path)
    return out


def test_a_missing_tree_fails_the_walk_naming_its_directory(tmp_path):
    """A tree gone from the repository (its index row and pack lost): the walk fails when it reaches that
    directory, and the message names the directory, not only the blob (a restore prints it as is)."""
    from replicator.errors import IntegrityError

    with _repo(tmp_path) as repo:
        snap = repo.snapshots()[-1]
        dirs = [(i.subtree, i.entry.path) for i in repo.read_tree(snap.tree, "") if i.entry.kind == KIND_DIR]
        victim, where = dirs[-1]
        lookup_many, lookup = repo.index.lookup_many, repo.index.lookup
        repo.index.lookup_many = lambda ids: {k: v for k, v in lookup_many(ids).items() if k != victim}
        repo.index.lookup = lambda i: None if i == victim else lookup(i)
        with pytest.raises(IntegrityError, match=rf"{victim.hex()[:16]} is missing.*the tree of '{where}'"):
            list(repo.walk_tree(snap.tree))

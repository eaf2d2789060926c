"""verify(): clean repositories pass; damage is reported with the snapshot and the file it hits."""
from __future__ import annotations

import os
import random

import pytest

from replicator import constants as C
from replicator.core.params import ChunkerParams
from replicator.repo.repository import Repository
from replicator.repo.verify import verify
from tests.conftest import sync_repo

PW = b"pw"
PARAMS = ChunkerParams(min_size=4096, avg_size=16384, max_size=65536)
BIG = "sub/big.bin"


def make_source(root) -> None:
    rng = random.Random(7)
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "notes.txt").write_bytes(b"ward 7 handover notes\n" * 500)
    (root / BIG).write_bytes(rng.randbytes(1_300_000))
    (root / "sub" / "deeper" / "small.txt").write_bytes(b"x" * 100)
    (root / "empty").write_bytes(b"")


@pytest.fixture
def built(tmp_path, monkeypatch):
    """A repository with one snapshot of a small tree, in several packs. :returns: (repo path, source dir)"""
    monkeypatch.setattr(C, "PACK_TARGET_SIZE", 128 * 1024)  # several packs from a small tree
    src = tmp_path / "src"
    make_source(src)
    path = str(tmp_path / "repo")
    with Repository.init(path, PW, log2n=C.SCRYPT_LOG2N_MIN, params=PARAMS) as repo:
        report = sync_repo(str(src), repo, "ward7")
        assert report.snapshot is not None and not report.warnings
    return path, src


def big_chunks(repo: Repository) -> tuple[bytes, ...]:
    (snap,) = repo.snapshots()[:1]
    (entry,) = [e for e in repo.walk_tree(snap.tree) if e.path == BIG]
    return entry.chunks


def flip_in_blob(repo: Repository, blob_id: bytes) -> str:
    pack, entry = repo.index.lookup(blob_id)
    path = os.path.join(repo.storage.root, *pack.split("/"))
    data = bytearray(open(path, "rb").read())
    data[entry.offset + entry.length // 2] ^= 0x01
    open(path, "wb").write(data)
    return pack


def test_fixture_spans_chunks_and_packs(built):
    with Repository.open(built[0], PW) as repo:
        assert len(big_chunks(repo)) >= 8
        assert len(repo.index.packs()) >= 3


@pytest.mark.parametrize("data", [False, True])
def test_clean_repository(built, data):
    with Repository.open(built[0], PW) as repo:
        report = verify(repo, data=data)
        assert report.ok, report.problems
        assert report.snapshots == 1
        assert report.trees == 3
        assert report.files == 4
        assert report.chunks_referenced >= len(big_chunks(repo)) + 2
        if data:
            assert report.packs_checked == len(repo.index.packs())
            assert report.blobs_checked == repo.index.count()
            assert report.bytes_checked == sum(repo.index.packs().values())
        else:
            assert report.packs_checked == report.blobs_checked == 0
        assert report.as_dict()["ok"] is True


def test_progress_callback(built):
    seen = []
    with Repository.open(built[0], PW) as repo:
        verify(repo, data=True, progress=seen.append)
        assert sum(seen) == sum(repo.index.packs().values())


def test_flipped_byte_names_snapshot_and_file(built):
    with Repository.open(built[0], PW) as repo:
        chunk = big_chunks(repo)[3]
        pack = flip_in_blob(repo, chunk)
        (snap,) = repo.snapshots()
        report = verify(repo, data=True)
    assert not report.ok
    hits = [p for p in report.problems if snap.short_id in p and BIG in p]
    assert len(hits) == 1, report.problems
    assert chunk.hex()[:16] in hits[0] and "damaged" in hits[0]
    assert any(pack in p for p in report.problems)  # the pack itself is named too
    # no other file is blamed
    assert not any(name in p for p in report.problems for name in ("notes.txt", "small.txt", "empty"))


def test_missing_pack_names_files(built):
    path, _ = built
    with Repository.open(path, PW) as repo:
        chunks = big_chunks(repo)
        victim = None
        for name in repo.index.packs():
            blobs = repo.index.blobs_in(name)
            if all(b.type == C.BLOB_DATA for b in blobs) and any(b.id in chunks for b in blobs):
                victim = name
                lost = {b.id for b in blobs}
                break
        assert victim is not None
        (snap,) = repo.snapshots()
        expected = sorted(f"snapshot {snap.short_id} (ward7 #1): {e.path}: chunk {c.hex()[:16]} missing"
                          for e in repo.walk_tree(snap.tree) for c in e.chunks if c in lost)
    assert any(BIG in p for p in expected)
    os.unlink(os.path.join(path, *victim.split("/")))
    with Repository.open(path, PW) as repo:
        report = verify(repo, data=False)
    assert sorted(report.problems) == expected


def test_two_snapshots_sharing_trees(built):
    path, src = built
    with Repository.open(path, PW, exclusive=True) as repo:
        sync_repo(str(src), repo, "ward7-copy")  # same content: same trees, no new chunks
        snaps = repo.snapshots()
        assert len(snaps) == 2 and snaps[0].tree == snaps[1].tree
        chunk = big_chunks(repo)[0]
        flip_in_blob(repo, chunk)
        report = verify(repo, data=True)
    assert report.snapshots == 2
    assert report.trees == 3  # shared trees are read once
    file_problems = [p for p in report.problems if BIG in p]
    assert len(file_problems) == 2
    for snap in snaps:
        assert sum(snap.short_id in p for p in file_problems) == 1
    blob_problems = [p for p in report.problems if p not in file_problems]
    assert len(blob_problems) == 2  # the pack's hash, and the blob itself: once each, not per snapshot


def test_damaged_tree_reported(built):
    path, _ = built
    with Repository.open(path, PW) as repo:
        (snap,) = repo.snapshots()
        flip_in_blob(repo, snap.tree)
        report = verify(repo, data=False)
    assert not report.ok
    assert any(snap.short_id in p and "(directory)" in p for p in report.problems)


def test_damaged_snapshot_reported(built):
    path, _ = built
    with Repository.open(path, PW) as repo:
        (name,) = repo.snapshot_names()
    file = os.path.join(path, *name.split("/"))
    data = bytearray(open(file, "rb").read())
    data[60] ^= 1
    open(file, "wb").write(data)
    with Repository.open(path, PW) as repo:
        report = verify(repo)
    assert report.snapshots == 0
    assert len(report.problems) == 1 and name.rsplit("/", 1)[-1][:16] in report.problems[0]


def test_damaged_pack_version_is_reported_not_raised(built):
    path, _ = built
    with Repository.open(path, PW) as repo:
        chunk = big_chunks(repo)[0]
        pack, _entry = repo.index.lookup(chunk)
        file = os.path.join(path, *pack.split("/"))
        data = bytearray(open(file, "rb").read())
        data[8] ^= 0x02  # the version u16
        open(file, "wb").write(data)
        report = verify(repo, data=True)
    assert any(BIG in p for p in report.problems)




def test_forged_index_row_cannot_hide_a_missing_chunk(built):
    """The index is a cache in the repository directory, writable by anyone who can write
    there.  A forged row claiming a chunk that no pack holds must not make sync skip it:
    the writer deduplicates against the sink's id lists, never the index (release 0.1.0
    skipped the chunk and only verify --data noticed).  Rows of the pack the writer then
    stores replace the forged ones, so restore reads the real chunk."""
    path, src = built
    new = random.Random(99).randbytes(200_000)
    (src / "new.bin").write_bytes(new)
    with Repository.open(path, PW, exclusive=True) as repo:
        ids = [repo.chunk_hasher(c) for c in repo.chunker().chunks_of(new)]
        pack, entry = repo.index.lookup(big_chunks(repo)[0])
        db = repo.index._db()
        with db:
            for cid in ids:
                db.execute("INSERT INTO blobs VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (cid, entry.type, pack, entry.offset, entry.length, entry.raw_len, entry.seq))
        report = sync_repo(str(src), repo, "ward7")
        assert report.chunks_new == len(set(ids))  # the forgery did not work: every new chunk was stored
    with Repository.open(path, PW) as repo:
        assert verify(repo).ok and verify(repo, data=True).ok
        (f,) = [e for e in repo.walk_tree(repo.find_snapshot(source="ward7").tree) if e.path == "new.bin"]
        assert b"".join(repo.read_blob(c) for c in f.chunks) == new


# --- generations: repeated, forked, missing ------------------------------------------------------

def _move_aside(path: str, snap_id: str, where) -> None:
    for kind in ("snapshots", "refs"):
        os.replace(os.path.join(path, kind, snap_id), where / f"{kind}-{snap_id}")


def _move_back(path: str, snap_id: str, where) -> None:
    for kind in ("snapshots", "refs"):
        os.replace(where / f"{kind}-{snap_id}", os.path.join(path, kind, snap_id))


def test_repeated_generation_is_a_problem(built, tmp_path):
    """Two snapshots of one source with one generation (e.g. a copy of the repository merged back)."""
    path, src = built
    with Repository.open(path, PW, exclusive=True) as repo:
        first = repo.find_snapshot(source="ward7")
        (src / "notes.txt").write_bytes(b"v2")
        old2 = sync_repo(str(src), repo, "ward7").snapshot
        _move_aside(path, old2.id, tmp_path)
        (src / "notes.txt").write_bytes(b"v2 elsewhere")
        new2 = sync_repo(str(src), repo, "ward7").snapshot
        _move_back(path, old2.id, tmp_path)
        assert old2.generation == new2.generation == 2 and old2.parent == new2.parent == first.id
        report = verify(repo)
    assert not report.ok
    (problem,) = report.problems
    assert "ward7" in problem and "generation 2" in problem
    assert old2.short_id in problem and new2.short_id in problem


def test_fork_parent_is_not_the_previous_generation(built, tmp_path):
    """Generation 3 whose parent is generation 1 while generation 2 exists: two lines of history.
    Made the way the writer makes it: generation 2 was unreadable when 3 was committed (so 3 was
    numbered above it and chained to 1), and was repaired afterwards."""
    path, src = built
    with Repository.open(path, PW, exclusive=True) as repo:
        first = repo.find_snapshot(source="ward7")
        (src / "notes.txt").write_bytes(b"v2")
        second = sync_repo(str(src), repo, "ward7").snapshot
        file = os.path.join(path, "snapshots", second.id)
        good = open(file, "rb").read()
        os.chmod(file, 0o600)
        open(file, "wb").write(good[:-1] + bytes([good[-1] ^ 1]))
        (src / "notes.txt").write_bytes(b"v3")
        third = sync_repo(str(src), repo, "ward7").snapshot
        open(file, "wb").write(good)
        assert third.generation == 3 and third.parent == first.id
        report = verify(repo)
    assert not report.ok
    (problem,) = report.problems
    assert third.short_id in problem and second.short_id in problem and "fork" in problem


def test_missing_generations_are_notes_not_problems(built):
    from replicator.repo.prune import delete_snapshots

    path, src = built
    with Repository.open(path, PW, exclusive=True) as repo:
        snaps = [repo.find_snapshot(source="ward7")]
        for i in range(2, 7):
            (src / "notes.txt").write_bytes(b"v%d" % i)
            snaps.append(sync_repo(str(src), repo, "ward7").snapshot)
        delete_snapshots(repo, [snaps[0].id, snaps[2].id, snaps[3].id])  # forget took 1, 3 and 4
        report = verify(repo)
    assert report.ok, report.problems
    assert report.notes == ["source 'ward7': generations 1, 3-4 of 1-6 not present (forgotten, "
                            "damaged, or never committed)"]
    assert report.as_dict()["notes"] == report.notes


def _remove_deep(top: str, depth: int) -> None:
    """Remove a chain of ``depth`` directories named "d" (the last holding files), deepest first."""
    fds = [os.open(top, os.O_RDONLY | os.O_DIRECTORY)]
    for _ in range(depth - 1):
        fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
    for name in os.listdir(fds[-1]):
        os.unlink(name, dir_fd=fds[-1])
    while len(fds) > 1:
        os.close(fds.pop())
        os.rmdir("d", dir_fd=fds[-1])
    os.close(fds[0])
    os.rmdir(top)


def make_deep(src, depth: int, leaf: str = "leaf.txt") -> None:
    """``src``/d/d/.../d (``depth`` directories) holding the file ``leaf`` ("leaf"); remove it with
    ``_remove_deep(src/d, depth)``."""
    src.mkdir()
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):  # os.makedirs recurses on depth itself
        os.mkdir("d", dir_fd=fd)
        fd, old = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(old)
    out = os.open(leaf, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(out, b"leaf")
    os.close(out)
    os.close(fd)


def test_deep_tree_is_checked_without_recursion(tmp_path):
    """check_tree walks with an explicit stack: a tree deeper than Python's recursion limit verifies."""
    import sys

    depth = sys.getrecursionlimit() + 50
    src = tmp_path / "src"
    make_deep(src, depth)
    path = str(tmp_path / "repo")
    with Repository.init(path, PW, log2n=C.SCRYPT_LOG2N_MIN, params=PARAMS) as repo:
        sync_repo(str(src), repo, "deep")
        _remove_deep(os.path.join(src, "d"), depth)  # shutil.rmtree (pytest's cleanup) recurses on depth
        report = verify(repo)
        assert report.ok, report.problems[:3]
        assert report.trees == depth + 1 and report.files == 1
        # and a damaged chunk deep down is still reported with its whole path
        (leaf,) = [e for e in repo.walk_tree(repo.find_snapshot().tree) if e.path.endswith("leaf.txt")]
        flip_in_blob(repo, leaf.chunks[0])
        report = verify(repo, data=True)
    (problem,) = [p for p in report.problems if "leaf.txt" in p]
    assert f": {'d/' * depth}leaf.txt: chunk {leaf.chunks[0].hex()[:16]} damaged" in problem, problem[-200:]

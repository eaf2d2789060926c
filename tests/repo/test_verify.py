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

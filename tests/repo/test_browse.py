"""Browsing a snapshot without restoring it (repo/browse.py): lookup, walk, file reads, find."""
from __future__ import annotations

import os
import random
from dataclasses import replace

import pytest

from replicator.core.params import ChunkerParams
from replicator.errors import IntegrityError, UsageError
from replicator.format.entry import KIND_DIR, KIND_FILE
from replicator.format.pack import BlobEntry
from replicator.repo import browse
from replicator.repo.browse import Browser, ChunkCache, FileReader, file_chunks, find, normalize
from replicator.repo.repository import Repository
from tests.conftest import sync_repo

SMALL = ChunkerParams(1024, 4096, 16384)  # many chunks in a few hundred KiB


def _tree(src):
    rnd = random.Random(3)
    (src / "scans" / "2024").mkdir(parents=True)
    (src / "lab").mkdir()
    (src / "empty").mkdir()
    (src / "scans" / "2024" / "ct.dcm").write_bytes(rnd.randbytes(300_000))
    (src / "scans" / "mri.dcm").write_bytes(rnd.randbytes(5000))
    (src / "lab" / "results.csv").write_text("patient;glucose\n1;5.4\n")
    (src / "zero").write_bytes(b"")
    os.symlink("lab/results.csv", src / "link")


@pytest.fixture
def repo(tmp_path):
    src = tmp_path / "src"
    _tree(src)
    with Repository.init(str(tmp_path / "repo"), b"pw", log2n=14, params=SMALL) as r:
        snap = sync_repo(str(src), r, "s").snapshot
        r.src, r.snap = src, snap  # type: ignore[attr-defined]
        yield r


def test_normalize():
    assert normalize("/a//b/./c/") == "a/b/c"
    assert normalize("/") == normalize("") == normalize(".") == ""
    assert normalize("a/../b") == "a/../b"  # '..' is kept, and never found


def test_lookup(repo):
    b = Browser(repo, repo.snap)
    assert b.lookup("") is b.root and b.lookup("/") is b.root and b.root.entry.kind == KIND_DIR
    item = b.lookup("/scans/2024/ct.dcm")
    assert item is not None and item.entry.kind == KIND_FILE and item.entry.size == 300_000
    assert b.lookup("scans/2024/").entry.kind == KIND_DIR
    assert b.lookup("link").entry.target == "lab/results.csv"
    for missing in ("nope", "scans/nope", "scans/mri.dcm/x", "link/x", "scans/../lab", "lab/results.csv/"):
        if missing == "lab/results.csv/":
            assert b.lookup(missing) is not None  # a trailing slash is dropped, like the rest
            continue
        assert b.lookup(missing) is None, missing
    with pytest.raises(UsageError, match="has no path 'scans/nope'"):
        b.find("/scans/nope/")


def test_listdir_and_walk_equal_the_repositorys_walk(repo, monkeypatch):
    monkeypatch.setattr(browse, "READ_WINDOW", 2)  # several pipelined rounds per directory
    b = Browser(repo, repo.snap)
    assert [it.entry.name for it in b.listdir(b.root)] == ["empty", "lab", "link", "scans", "zero"]
    assert [it.entry for it in b.walk(b.root)] == list(repo.walk_tree(repo.snap.tree))
    scans = b.lookup("scans")
    assert [it.entry.path for it in b.walk(scans)] == ["scans/2024", "scans/2024/ct.dcm", "scans/mri.dcm"]
    assert list(b.walk(b.lookup("empty"))) == []
    with pytest.raises(ValueError):
        b.listdir(b.lookup("zero"))


def test_walk_reads_trees_ahead_in_rounds_not_one_per_directory(tmp_path, monkeypatch):
    """Browser.walk (ls -R) reads trees breadth first, many per round (Repository.walk_items): before, it
    was one round per directory holding directories (41 here), and ls -R over ssh:// took 6x a local one."""
    src = tmp_path / "src"
    for ward in range(40):
        for sub in ("lab", "notes", "scans"):
            (src / f"ward-{ward:02d}" / sub).mkdir(parents=True)
            (src / f"ward-{ward:02d}" / sub / "a.txt").write_text(f"{ward} {sub}\n")
    with Repository.init(str(tmp_path / "repo"), b"pw", log2n=14) as r:
        snap = sync_repo(str(src), r, "s").snapshot
        rounds = []
        real = r._read_batch

        def spy(get_ranges, ids, gap=0):
            rounds.append(len(ids))
            return real(get_ranges, ids, gap)

        monkeypatch.setattr(r, "_read_batch", spy)
        b = Browser(r, snap)
        paths = [it.entry.path for it in b.walk(b.root)]
    assert len(paths) == 40 * 7
    assert paths[:3] == ["ward-00", "ward-00/lab", "ward-00/lab/a.txt"]  # pre-order, names in byte order
    assert len(rounds) <= 3, rounds  # the root; its 40 directories; their 120


def test_file_chunks_streams_the_file(repo):
    entry = Browser(repo, repo.snap).lookup("scans/2024/ct.dcm").entry
    assert len(entry.chunks) > 10
    parts = list(file_chunks(repo, entry))
    assert len(parts) == len(entry.chunks)
    assert b"".join(parts) == (repo.src / "scans" / "2024" / "ct.dcm").read_bytes()
    assert list(file_chunks(repo, Browser(repo, repo.snap).lookup("zero").entry)) == []


def test_file_chunks_refuses_a_size_the_chunks_do_not_hold(repo):
    entry = Browser(repo, repo.snap).lookup("scans/mri.dcm").entry
    with pytest.raises(IntegrityError, match="its chunks hold 5000 bytes, its entry says 5001"):
        list(file_chunks(repo, replace(entry, size=5001)))


def test_random_reads_equal_slices_of_the_file(repo):
    entry = Browser(repo, repo.snap).lookup("scans/2024/ct.dcm").entry
    data = (repo.src / "scans" / "2024" / "ct.dcm").read_bytes()
    reader = FileReader(repo, entry)
    rnd = random.Random(5)
    cases = [(0, 1), (0, len(data)), (len(data) - 1, 10), (len(data), 10), (len(data) + 5, 10), (123, 0)]
    cases += [(rnd.randrange(len(data)), rnd.randrange(1, 70_000)) for _ in range(60)]
    for offset, size in cases:
        assert reader.read(offset, size) == data[offset : offset + size], (offset, size)
    assert FileReader(repo, Browser(repo, repo.snap).lookup("zero").entry).read(0, 100) == b""


def test_a_read_fetches_only_the_chunks_it_overlaps(repo, monkeypatch):
    entry = Browser(repo, repo.snap).lookup("scans/2024/ct.dcm").entry
    fetched: list[bytes] = []
    real = repo.read_blobs

    def spy(ids):
        ids = list(ids)
        fetched.extend(ids)
        return real(ids)

    monkeypatch.setattr(repo, "read_blobs", spy)
    reader = FileReader(repo, entry)
    reader.read(150_000, 100)
    assert 1 <= len(fetched) <= 2 and set(fetched) <= set(entry.chunks)
    before = len(fetched)
    reader.read(150_000, 100)  # the LRU: nothing read again
    assert len(fetched) == before


def test_the_index_lying_about_a_chunk_length_is_an_integrity_error(repo, monkeypatch):
    entry = Browser(repo, repo.snap).lookup("scans/2024/ct.dcm").entry
    real = repo.index.lookup

    def lying(blob_id):
        pack, e = real(blob_id)
        return pack, BlobEntry(e.type, e.id, e.offset, e.length, e.raw_len + 1, e.seq) if blob_id == entry.chunks[0] \
            else e

    monkeypatch.setattr(repo.index, "lookup", lying)
    with pytest.raises(IntegrityError):
        FileReader(repo, entry).read(0, 10)


def test_a_missing_chunk_or_a_wrong_size_is_an_integrity_error(repo):
    entry = Browser(repo, repo.snap).lookup("scans/mri.dcm").entry
    with pytest.raises(IntegrityError, match="is missing"):
        FileReader(repo, replace(entry, chunks=(b"\x01" * 32,))).read(0, 10)
    with pytest.raises(IntegrityError, match="its entry says 4999"):
        FileReader(repo, replace(entry, size=4999)).read(0, 10)


def test_chunk_cache_stays_under_its_limit():
    cache = ChunkCache(limit=10)
    cache.put(b"a", b"12345")
    cache.put(b"b", b"12345")
    assert cache.get(b"a") == b"12345"  # a is now the most recent
    cache.put(b"c", b"123")
    assert cache.held <= 10 and cache.get(b"b") is None and cache.get(b"a") is not None
    cache.put(b"huge", b"x" * 11)
    assert cache.get(b"huge") is None


# --- a tree deeper than the interpreter's recursion limit -------------------------------------------

def test_walk_and_lookup_at_any_depth(tmp_path):
    """A tree deeper than the interpreter's recursion limit: walked and looked up without recursion."""
    import sys

    from tests.repo.test_verify import _remove_deep, make_deep

    depth = sys.getrecursionlimit() + 50
    src = tmp_path / "src"
    make_deep(src, depth, "leaf")
    with Repository.init(str(tmp_path / "repo"), b"pw", log2n=14) as r:
        snap = sync_repo(str(src), r, "deep").snapshot
        _remove_deep(os.path.join(src, "d"), depth)  # shutil.rmtree (pytest's cleanup) recurses on depth
        b = Browser(r, snap)
        items = list(b.walk(b.root))
        assert len(items) == depth + 1 and items[-1].entry.name == "leaf"
        assert b.lookup("/".join(["d"] * depth) + "/leaf") is not None


# --- find ------------------------------------------------------------------------------------------

def _history(tmp_path):
    src = tmp_path / "src"
    for d in ("a", "b"):
        (src / d / "deep").mkdir(parents=True)
        (src / d / "deep" / "x.dcm").write_bytes(d.encode() * 100)
    (src / "top.dcm").write_bytes(b"v1")
    r = Repository.init(str(tmp_path / "repo"), b"pw", log2n=14)
    s1 = sync_repo(str(src), r, "s").snapshot
    (src / "top.dcm").write_bytes(b"version 2")  # the root changes; a/ and b/ do not
    os.utime(src / "top.dcm", ns=(10**18, 10**18))
    s2 = sync_repo(str(src), r, "s").snapshot
    return r, src, s1, s2


def test_find_by_name_and_by_path(tmp_path):
    r, _src, s1, s2 = _history(tmp_path)
    with r:
        got = [(m.snapshot.id, m.entry.path) for m in find(r, [s2, s1], "*.dcm")]
        # newest first; the unchanged files once (under s2), top.dcm in both of its versions
        assert got == [(s2.id, "a/deep/x.dcm"), (s2.id, "b/deep/x.dcm"), (s2.id, "top.dcm"), (s1.id, "top.dcm")]
        assert [m.entry.path for m in find(r, [s2], "a/*")] == ["a/deep", "a/deep/x.dcm"]
        assert [m.entry.path for m in find(r, [s2], "/b/deep/x.dcm")] == ["b/deep/x.dcm"]
        assert [m.entry.path for m in find(r, [s2], "deep")] == ["a/deep", "b/deep"]
        assert list(find(r, [s2], "*.DCM")) == []  # case-sensitive
        with pytest.raises(UsageError, match="empty"):
            list(find(r, [s2], "/"))


def test_find_skips_subtrees_it_has_searched(tmp_path, monkeypatch):
    r, _src, s1, s2 = _history(tmp_path)
    with r:
        read: list[str] = []
        real_tree, real_blobs = r.read_tree, r.read_blobs
        monkeypatch.setattr(r, "read_tree", lambda t, p: read.append(p or "/") or real_tree(t, p))

        def blobs(ids):
            ids = list(ids)
            read.extend(["?"] * len(ids))
            return real_blobs(ids)

        monkeypatch.setattr(r, "read_blobs", blobs)
        list(find(r, [s2, s1], "*.dcm"))
        # s2: the root plus a, b, a/deep, b/deep; s1: only its root (a/ and b/ have the same ids)
        assert read.count("/") == 2 and len(read) == 2 + 4


def test_find_searches_a_moved_directory_at_its_new_path(tmp_path):
    r, src, _s1, s2 = _history(tmp_path)
    with r:
        os.rename(src / "b", src / "c")
        s3 = sync_repo(str(src), r, "s").snapshot
        got = [(m.snapshot.id, m.entry.path) for m in find(r, [s3, s2], "x.dcm")]
        assert got == [(s3.id, "a/deep/x.dcm"), (s3.id, "c/deep/x.dcm"), (s2.id, "b/deep/x.dcm")]

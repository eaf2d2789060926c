"""Sparse files stay sparse: holes are not read by sync and are not written by restore.

The big case: a 1 GiB file holding 20 KiB of data, made with truncate and a
few writes at offsets.  Sync must not read its holes (measured with the
process's read counter, /proc/self/io ``rchar``), and restore (the writer,
the CLI, the live mirror) must give back a file of 1 GiB that takes about
20 KiB of disk (``st_blocks * 512``).  Zero runs inside a chunk become holes
too, at page granularity.
"""
from __future__ import annotations

import os
import random

import pytest

from replicator.cli import main
from replicator.format.entry import KIND_FILE, Entry
from replicator.repo.repository import Repository
from replicator.restore import mirror as M
from replicator.restore.writer import restore
from replicator.sync.sparse import SparseReader
from tests.conftest import PASSPHRASE, sync_repo

pytestmark = pytest.mark.usefixtures("restore_writers")

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
PAGE = 4096
rnd = random.Random(7)
# 20 KiB of data in a 1 GiB file: at the start, unaligned in the middle, and at the very end.
PIECES = [(0, rnd.randbytes(4 * KiB)), (300 * MiB + 123, rnd.randbytes(8 * KiB)), (GiB - 8 * KiB, rnd.randbytes(8 * KiB))]
BIG = GiB
# What a file of 20 KiB in three places may occupy: its pages, plus room for a file system's
# extent granularity; a file written densely would take 1 GiB.
ALLOWED = 256 * KiB


def allocated(path) -> int:
    return os.stat(path).st_blocks * 512


def make_sparse(path, size: int, pieces) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in pieces:
            f.seek(off)
            f.write(data)
    if allocated(path) > size // 2 and size >= 64 * KiB:
        pytest.skip(f"the file system under {path} does not keep holes (st_blocks after truncate + writes)")


def data_regions(path) -> list[tuple[int, int]]:
    """(start, end) of every data region by SEEK_DATA / SEEK_HOLE."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break  # ENXIO: only a hole up to the end
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, end))
            pos = end
    finally:
        os.close(fd)
    return out


def assert_content(path, size: int, pieces) -> None:
    """The file equals zeros with ``pieces`` written in, without reading its holes."""
    assert os.path.getsize(path) == size
    with open(path, "rb") as f:
        for off, data in pieces:
            f.seek(off)
            assert f.read(len(data)) == data
        for start, end in data_regions(path):  # all the rest of the data regions is zero
            f.seek(start)
            region = bytearray(f.read(end - start))
            for off, data in pieces:
                lo, hi = max(off, start), min(off + len(data), end)
                if lo < hi:
                    region[lo - start:hi - start] = bytes(hi - lo)
            assert not any(region), f"non-zero bytes outside the pieces in [{start}, {end})"


@pytest.fixture(scope="module")
def sparse_src(tmp_path_factory):
    src = tmp_path_factory.mktemp("sparse") / "src"
    src.mkdir()
    make_sparse(src / "disk.img", BIG, PIECES)
    (src / "small.txt").write_bytes(b"not sparse\n" * 100)
    return src


def _rchar() -> int:
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    pytest.skip("no /proc/self/io: cannot count the bytes a sync reads")


@pytest.fixture(scope="module")
def synced(sparse_src, tmp_path_factory):
    """The sparse tree synced once; :returns: (repo path, snapshot, bytes the sync read)."""
    repo_path = tmp_path_factory.mktemp("repo") / "repo"
    with Repository.init(str(repo_path), PASSPHRASE.encode(), log2n=14) as repo:
        before = _rchar()
        report = sync_repo(str(sparse_src), repo, "s")
        read = _rchar() - before
    return repo_path, report.snapshot, read


# --- the read side -----------------------------------------------------------------------
def test_sync_does_not_read_holes(synced, sparse_src):
    repo_path, snap, read = synced
    assert read < 32 * MiB, f"sync read {read} bytes for 20 KiB of data in a 1 GiB sparse file"
    with Repository.open(str(repo_path), PASSPHRASE.encode()) as repo:
        entry = next(e for e in repo.walk_tree(snap.tree) if e.path == "disk.img")
        assert entry.size == BIG


def _read_all(f, sizes) -> bytes:
    out = bytearray()
    i = 0
    while True:
        buf = bytearray(sizes[i % len(sizes)])
        i += 1
        n = f.readinto(memoryview(buf))
        if n == 0:
            return bytes(out)
        out += buf[:n]


@pytest.mark.parametrize("layout", ["holes-and-data", "dense", "only-a-hole", "empty", "data-at-end-only"])
def test_sparse_reader_reads_what_a_plain_read_reads(tmp_path, layout):
    path = tmp_path / "f"
    r = random.Random(layout)
    size = 5 * MiB + 777
    if layout == "holes-and-data":
        pieces = [(0, r.randbytes(100)), (PAGE * 3 + 5, r.randbytes(PAGE * 2)), (2 * MiB + 1, r.randbytes(70_000)),
                  (size - 10, r.randbytes(10))]
    elif layout == "dense":
        pieces = [(0, r.randbytes(size))]
    elif layout == "only-a-hole":
        pieces = []
    elif layout == "empty":
        size, pieces = 0, []
    else:
        pieces = [(size - 3000, r.randbytes(3000))]
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in pieces:
            f.seek(off)
            f.write(data)
    expected = path.read_bytes()
    for sizes in ([MiB], [1, 4095, 4096, 65_537, 3 * MiB], [8 * MiB]):
        fd = os.open(path, os.O_RDONLY)
        with SparseReader(fd) as f:
            assert f.fileno() == fd
            assert _read_all(f, sizes) == expected
        with pytest.raises(OSError):
            os.fstat(fd)  # the reader closed its descriptor


def test_a_file_with_as_many_blocks_as_bytes_is_read_without_lseek(tmp_path, monkeypatch):
    """Two lseek calls per file were most of what a sync of 200,000 small files spent finding holes in
    files that have none; a sparse file is still read without its holes."""
    dense, sparse = tmp_path / "note.hl7", tmp_path / "disk.img"
    dense.write_bytes(random.Random(1).randbytes(10_000))
    make_sparse(sparse, 4 * MiB, [(MiB, b"x" * PAGE)])
    seeks = []
    real = os.lseek
    monkeypatch.setattr(os, "lseek", lambda fd, pos, how: seeks.append(how) or real(fd, pos, how))
    for path in (dense, sparse):
        seeks.clear()
        fd = os.open(path, os.O_RDONLY)
        with SparseReader(fd) as f:
            f.without_holes(os.fstat(fd))
            assert _read_all(f, [MiB]) == path.read_bytes()
        assert (seeks == []) == (path == dense), (path.name, seeks)


def test_sparse_reader_follows_a_file_that_grows(tmp_path):
    path = tmp_path / "f"
    with open(path, "wb") as f:
        f.truncate(MiB)
        f.write(b"head")
    fd = os.open(path, os.O_RDONLY)
    with SparseReader(fd) as reader:
        got = _read_all(reader, [MiB])  # to the end: 0 returned
        with open(path, "ab") as f:
            f.write(b"tail")
        rest = _read_all(reader, [MiB])  # as a plain read: what was appended since
    assert got == b"head" + bytes(MiB - 4) and rest == b"tail"


# --- the write side ----------------------------------------------------------------------
def _chunks_from(repo):
    def read_file(entry: Entry):
        for c in entry.chunks:
            yield repo.read_blob(c)
    return read_file


def test_restore_writes_holes_as_holes(synced, tmp_path):
    repo_path, snap, _ = synced
    dst = tmp_path / "dst"
    with Repository.open(str(repo_path), PASSPHRASE.encode()) as repo:
        report = restore(str(dst), list(repo.walk_tree(snap.tree)), _chunks_from(repo))
    assert report.ok, report
    assert report.bytes == BIG + 1100
    assert allocated(dst / "disk.img") <= ALLOWED, allocated(dst / "disk.img")
    assert_content(dst / "disk.img", BIG, PIECES)


def test_cli_restore_and_live_mirror_keep_holes(synced, tmp_path, capsys, monkeypatch):
    repo_path, snap, _ = synced
    monkeypatch.setenv("REPLICATOR_PASSPHRASE", PASSPHRASE)
    assert main(["restore", str(repo_path), str(tmp_path / "cli")]) == 0, capsys.readouterr()
    assert allocated(tmp_path / "cli" / "disk.img") <= ALLOWED
    assert_content(tmp_path / "cli" / "disk.img", BIG, PIECES)
    with Repository.open(str(repo_path), PASSPHRASE.encode()) as repo:
        report = M.mirror_snapshot(repo, snap, str(tmp_path / "mirror"))
    assert report.ok, report
    assert allocated(tmp_path / "mirror" / "disk.img") <= ALLOWED
    assert_content(tmp_path / "mirror" / "disk.img", BIG, PIECES)


def _restore_one(tmp_path, data: bytes, chunk_sizes: list[int] | None = None):
    """Restore one file with ``data``, handed over as chunks of the given sizes (default: one chunk)."""
    sizes = chunk_sizes or [len(data)]

    def read_file(entry):
        pos, i = 0, 0
        while pos < len(data):
            n = sizes[i % len(sizes)]
            i += 1
            yield data[pos:pos + n]
            pos += n

    e = Entry("f", KIND_FILE, 0o644, 0, 0, 1_000_000_000, size=len(data))
    dst = tmp_path / "dst"
    report = restore(str(dst), [e], read_file)
    assert report.ok, report
    path = dst / "f"
    with open(path, "rb") as f:
        assert f.read() == data
    return path


def test_zero_run_inside_one_chunk_becomes_a_hole(tmp_path):
    r = random.Random(3)
    data = r.randbytes(512 * KiB) + bytes(MiB) + r.randbytes(512 * KiB)
    path = _restore_one(tmp_path, data)
    make_sparse(tmp_path / "probe", 4 * MiB, [(0, b"x")])  # skips where holes are not kept
    assert data_regions(path) == [(0, 512 * KiB), (512 * KiB + MiB, 2 * MiB)]


def test_unaligned_zero_run_becomes_a_hole_of_the_whole_pages_inside_it(tmp_path):
    r = random.Random(4)
    data = r.randbytes(100_000) + bytes(300_000) + r.randbytes(100_001)
    path = _restore_one(tmp_path, data, [65_536, 12_345, 200_000])
    make_sparse(tmp_path / "probe", 4 * MiB, [(0, b"x")])
    regions = data_regions(path)
    assert len(regions) == 2, regions
    (a0, a1), (b0, b1) = regions
    # The hole starts at the first page boundary in the run and ends at the last one.
    assert a0 == 0 and a1 == -(-100_000 // PAGE) * PAGE and b0 == 400_000 // PAGE * PAGE and b1 == len(data)
    assert allocated(path) <= len(data) - 290_000 + PAGE


def test_trailing_zeros_and_all_zero_files(tmp_path):
    r = random.Random(5)
    data = r.randbytes(5000) + bytes(3 * MiB)
    path = _restore_one(tmp_path, data, [MiB])
    make_sparse(tmp_path / "probe", 4 * MiB, [(0, b"x")])
    assert os.path.getsize(path) == len(data) and allocated(path) <= 64 * KiB
    os.unlink(path)
    zeros = _restore_one(tmp_path, bytes(8 * MiB), [MiB])
    assert os.path.getsize(zeros) == 8 * MiB and allocated(zeros) == 0


def test_sparse_reader_on_a_file_system_without_seek_data(tmp_path, monkeypatch):
    from replicator.sync import sparse as sparse_mod

    path = tmp_path / "f"
    make_sparse(path, 3 * MiB, [(MiB + 5, b"data")])

    real_lseek = os.lseek

    def no_seek_data(fd, pos, how):
        if how in (os.SEEK_DATA, os.SEEK_HOLE):
            raise OSError(22, "Invalid argument")
        return real_lseek(fd, pos, how)

    monkeypatch.setattr(sparse_mod.os, "lseek", no_seek_data)
    with SparseReader(os.open(path, os.O_RDONLY)) as f:
        assert _read_all(f, [MiB]) == path.read_bytes()


def test_chunks_that_are_not_bytes_restore_the_same(tmp_path):
    data = b"head" + bytes(3 * PAGE) + b"tail"
    e = Entry("f", KIND_FILE, 0o644, 0, 0, 1_000_000_000, size=len(data))
    report = restore(str(tmp_path / "dst"), [e], lambda entry: iter([bytearray(data[:5000]), memoryview(data[5000:])]))
    assert report.ok, report
    assert (tmp_path / "dst" / "f").read_bytes() == data

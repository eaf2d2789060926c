"""LocalStorage beyond the conformance suite: temporaries, layout on disk, disk full, cached descriptors."""
from __future__ import annotations

import errno
import os

import pytest

from replicator.errors import DiskFull, ObjectNotFound
from replicator.store import local as local_mod
from replicator.store.local import OPEN_HANDLES, TMP_PREFIX, LocalStorage


def test_local_list_hides_temporaries(tmp_path):
    s = LocalStorage(str(tmp_path))
    s.put("data/00/0011", b"x")
    (tmp_path / "data" / "00" / f"{TMP_PREFIX}123-abcdef").write_bytes(b"partial")
    (tmp_path / f"{TMP_PREFIX}999-root").write_bytes(b"partial")
    assert list(s.list("data/")) == ["data/00/0011"]
    assert TMP_PREFIX not in "".join(s.list(""))


def test_local_clean_temporaries(tmp_path):
    s = LocalStorage(str(tmp_path))
    s.put("data/00/0011", b"x")
    (tmp_path / "data" / "00" / f"{TMP_PREFIX}1-a").write_bytes(b"p")
    (tmp_path / f"{TMP_PREFIX}2-b").write_bytes(b"p")
    assert s.clean_temporaries() == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["0011"]
    assert s.clean_temporaries() == 0
    assert s.get("data/00/0011") == b"x"


def test_clean_temporaries_leaves_lock_objects_being_written(tmp_path):
    """A process taking a lock writes its lock object through a temporary in locks/ before it holds
    anything; a writer opening the repository meanwhile cleaned it away, and the taker failed with a
    storage error (tests/repo/test_prune.py::test_sync_and_prune_running_at_the_same_time, now and then)."""
    s = LocalStorage(str(tmp_path))
    (tmp_path / "locks").mkdir()
    (tmp_path / "locks" / f"{TMP_PREFIX}3-c").write_bytes(b"a lock being taken")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / f"{TMP_PREFIX}4-d").write_bytes(b"a crashed put")
    assert s.clean_temporaries() == 1
    assert (tmp_path / "locks" / f"{TMP_PREFIX}3-c").exists()


def test_local_put_leaves_no_temporary(tmp_path):
    s = LocalStorage(str(tmp_path))
    s.put("config", b"a")
    s.put("config", b"b", overwrite=True)
    with pytest.raises(FileExistsError):
        s.put("config", b"c")
    assert [p.name for p in tmp_path.iterdir()] == ["config"]


def test_local_objects_live_under_root(tmp_path):
    s = LocalStorage(str(tmp_path))
    s.put("data/ab/abcd", b"payload")
    assert (tmp_path / "data" / "ab" / "abcd").read_bytes() == b"payload"


def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("overwrite", [False, True])
def test_local_disk_full(tmp_path, monkeypatch, overwrite):
    s = LocalStorage(str(tmp_path))
    s.put("keep", b"kept")
    monkeypatch.setattr(local_mod.os, "write", _no_space)
    with pytest.raises(DiskFull) as info:
        s.put("data/00/0011", b"x" * 100_000, overwrite=overwrite)
    monkeypatch.undo()
    assert "data/00/0011" in str(info.value)
    assert not s.exists("data/00/0011")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["keep"]
    assert list(s.list("")) == ["keep"]


def test_local_disk_full_on_fsync_leaves_nothing(tmp_path, monkeypatch):
    s = LocalStorage(str(tmp_path))
    monkeypatch.setattr(local_mod.os, "fsync", _no_space)
    with pytest.raises(DiskFull):
        s.put("snapshots/aa", b"x")
    monkeypatch.undo()
    assert not s.exists("snapshots/aa")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_ranged_reads_reuse_a_bounded_set_of_descriptors(tmp_path):
    """Restore reads many chunks of one pack: the pack is opened once, and at most OPEN_HANDLES stay open."""
    s = LocalStorage(str(tmp_path))
    for i in range(OPEN_HANDLES + 4):
        s.put(f"data/00/{i:04d}", bytes([i]) * 100)
    opened = []
    real_open = local_mod.os.open

    def counting_open(path, *a, **kw):
        opened.append(path)
        return real_open(path, *a, **kw)

    local_mod.os.open = counting_open
    try:
        for _ in range(3):
            assert s.get("data/00/0001", 10, 5) == bytes([1]) * 5
        assert len(opened) == 1
        for i in range(OPEN_HANDLES + 4):
            assert s.get(f"data/00/{i:04d}", 0, 1) == bytes([i])
        assert len(s._handles) == OPEN_HANDLES
    finally:
        local_mod.os.open = real_open
    s.delete("data/00/0003")
    with pytest.raises(ObjectNotFound):
        s.get("data/00/0003", 0, 1)
    s.close()
    assert s._handles == {} and s.get("data/00/0002", 0, 1) == b"\x02"

"""Storage conformance: one suite, run against every implementation (restic backend/test/suite.go)."""
from __future__ import annotations

import pytest

from replicator.errors import ObjectNotFound
from replicator.store.local import LocalStorage
from replicator.store.memory import MemoryStorage

INVALID_NAMES = ["../x", "/abs", "A", "a//b", "", "a/../b", "a/", ".hidden", "a b", "data/\x00"]


@pytest.fixture(params=["local", "memory", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        yield LocalStorage(str(tmp_path / "store"))
    elif request.param == "s3":  # a real SeaweedFS server on loopback (tests/seaweed.py), one bucket per test
        from replicator.store.s3 import S3Storage

        store = S3Storage(request.getfixturevalue("s3_settings"))
        yield store
        store.close()
    else:
        yield MemoryStorage()


def test_put_get(storage):
    storage.put("config", b"hello")
    storage.put("data/ab/abcdef", b"\x00\x01" * 1000)
    assert storage.get("config") == b"hello"
    assert storage.get("data/ab/abcdef") == b"\x00\x01" * 1000
    assert storage.size("config") == 5
    assert storage.size("data/ab/abcdef") == 2000
    assert storage.exists("config") and storage.exists("data/ab/abcdef")
    assert not storage.exists("data/ab/other")


def test_put_empty_object(storage):
    storage.put("keys/empty", b"")
    assert storage.get("keys/empty") == b""
    assert storage.size("keys/empty") == 0


def test_put_accepts_bytearray_and_memoryview(storage):
    storage.put("a1", bytearray(b"abc"))
    storage.put("a2", memoryview(b"def"))
    assert storage.get("a1") == b"abc" and storage.get("a2") == b"def"


@pytest.mark.parametrize("offset,length", [(0, 10), (5, 3), (0, None), (7, None), (9, 1), (10, 0), (8, 100)])
def test_range_get(storage, offset, length):
    data = b"0123456789"
    storage.put("obj", data)
    expected = data[offset:] if length is None else data[offset : offset + length]
    assert storage.get("obj", offset, length) == expected


def test_put_existing_raises_unless_overwrite(storage):
    storage.put("config", b"one")
    with pytest.raises(FileExistsError):
        storage.put("config", b"two")
    assert storage.get("config") == b"one"
    storage.put("config", b"three", overwrite=True)
    assert storage.get("config") == b"three"


def test_overwrite_of_missing_creates(storage):
    storage.put("keys/default", b"k", overwrite=True)
    assert storage.get("keys/default") == b"k"


def test_list(storage):
    names = {"data/00/0011", "data/00/0022", "data/ff/ffee", "snapshots/aa", "snapshots/bb", "config"}
    for n in names:
        storage.put(n, n.encode())
    assert set(storage.list("data/")) == {n for n in names if n.startswith("data/")}
    assert set(storage.list("snapshots/")) == {"snapshots/aa", "snapshots/bb"}
    assert set(storage.list("keys/")) == set()
    listed = list(storage.list("data/"))
    assert len(listed) == len(set(listed))  # no duplicates


def test_list_after_delete(storage):
    storage.put("snapshots/aa", b"1")
    storage.put("snapshots/bb", b"2")
    storage.delete("snapshots/aa")
    assert set(storage.list("snapshots/")) == {"snapshots/bb"}


def test_get_missing(storage):
    with pytest.raises(ObjectNotFound):
        storage.get("data/00/missing")
    with pytest.raises(ObjectNotFound):
        storage.size("data/00/missing")


def test_delete(storage):
    storage.put("snapshots/aa", b"x")
    storage.delete("snapshots/aa")
    assert not storage.exists("snapshots/aa")
    with pytest.raises(ObjectNotFound):
        storage.get("snapshots/aa")
    storage.put("snapshots/aa", b"y")  # a deleted name can be put again
    assert storage.get("snapshots/aa") == b"y"


def test_delete_missing_is_ok(storage):
    storage.delete("snapshots/never")
    storage.delete("never/there/at/all")


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_put_rejects_invalid_names(storage, name):
    with pytest.raises(ValueError):
        storage.put(name, b"x")
    assert list(storage.list("")) == []


@pytest.mark.parametrize("op", ["get", "size", "exists", "delete"])
def test_other_operations_reject_invalid_names(storage, op):
    with pytest.raises(ValueError):
        getattr(storage, op)("../x")

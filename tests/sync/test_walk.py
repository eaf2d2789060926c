"""Tests for replicator.sync.walk: order, symlinks, hard links, xattrs, names, excludes, errors."""
from __future__ import annotations

import errno
import os
import shutil
import socket
import stat

import pytest

from replicator.format.entry import KIND_DIR, KIND_FILE, KIND_SYMLINK
from replicator.sync import walk as walk_mod
from replicator.sync.walk import WalkItem, stat_key, walk


def _walk(src, **kw):
    errors: list[tuple[str, str]] = []
    items = list(walk(str(src), on_error=lambda p, r: errors.append((p, r)), **kw))
    return items, errors


def _paths(items: list[WalkItem]) -> list[str]:
    return [i.entry.path for i in items]


def xattrs_supported(path) -> bool:
    probe = os.path.join(str(path), ".xattr-probe")
    with open(probe, "wb"):
        pass
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return False
        raise
    finally:
        os.unlink(probe)


def test_preorder_sorted_by_name_bytes_and_deterministic(tmp_path):
    src = tmp_path / "src"
    for d in ("a/z", "a-b", "B", "c/d/e"):
        (src / d).mkdir(parents=True)
    for f in ("a/z/f", "a/1", "a-b/x", "top", "c/d/e/deep", "B/y"):
        (src / f).write_bytes(f.encode())
    items, errors = _walk(src)
    assert errors == []
    # Per-directory byte order ('B' < 'a' < 'a-b'), a directory before its
    # contents; note 'a/..' comes before 'a-b' although '-' < '/' in bytes.
    assert _paths(items) == [
        "B", "B/y",
        "a", "a/1", "a/z", "a/z/f",
        "a-b", "a-b/x",
        "c", "c/d", "c/d/e", "c/d/e/deep",
        "top",
    ]
    again, _ = _walk(src)
    assert again == items


def test_metadata_recorded(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    f = src / "f"
    f.write_bytes(b"hello")
    os.chmod(f, 0o4751)
    os.utime(f, ns=(1_000_000_123, 1_600_000_000_123_456_789))
    (item,), _ = _walk(src)
    st = os.lstat(f)
    e = item.entry
    assert (e.kind, e.size, e.mode, e.mtime_ns) == (KIND_FILE, 5, 0o4751, 1_600_000_000_123_456_789)
    assert (e.uid, e.gid) == (st.st_uid, st.st_gid)
    assert (item.dev, item.ino) == (st.st_dev, st.st_ino)
    assert e.chunks == () and e.link_to == ""


def test_symlinks_recorded_not_followed(tmp_path):
    src = tmp_path / "src"
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "secret").write_bytes(b"s")
    src.mkdir()
    os.symlink(str(outside), src / "to_dir")
    os.symlink("../nowhere", src / "dangling")
    items, errors = _walk(src)
    assert errors == []
    assert _paths(items) == ["dangling", "to_dir"]
    by = {i.entry.path: i.entry for i in items}
    assert by["to_dir"].kind == KIND_SYMLINK and by["to_dir"].target == str(outside)
    assert by["dangling"].target == "../nowhere"
    assert by["to_dir"].size == 0 and by["to_dir"].xattrs == ()


def test_empty_dirs_yielded(tmp_path):
    src = tmp_path / "src"
    (src / "empty").mkdir(parents=True)
    (src / "outer" / "inner").mkdir(parents=True)
    items, errors = _walk(src)
    assert errors == []
    assert [(i.entry.path, i.entry.kind) for i in items] == [
        ("empty", KIND_DIR), ("outer", KIND_DIR), ("outer/inner", KIND_DIR),
    ]


def test_empty_source(tmp_path):
    assert _walk(tmp_path) == ([], [])


def test_hard_links_point_to_first_occurrence(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "b").write_bytes(b"data")
    os.link(src / "b", src / "a")
    os.link(src / "b", src / "d" / "c")
    (src / "single").write_bytes(b"x")
    items, _ = _walk(src)
    by = {i.entry.path: i for i in items}
    assert by["a"].entry.link_to == ""  # first in walk order
    assert by["b"].entry.link_to == "a"
    assert by["d/c"].entry.link_to == "a"
    assert by["b"].entry.size == 4
    assert by["single"].entry.link_to == ""
    assert by["a"].ino == by["b"].ino == by["d/c"].ino


def test_hard_link_first_occurrence_excluded(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.tmp").write_bytes(b"data")
    os.link(src / "a.tmp", src / "b")
    os.link(src / "a.tmp", src / "c")
    items, _ = _walk(src, excludes=["*.tmp"])
    assert [(i.entry.path, i.entry.link_to) for i in items] == [("b", ""), ("c", "b")]


def test_xattrs_sorted(tmp_path):
    if not xattrs_supported(tmp_path):
        pytest.skip("user.* xattrs are not supported on the tmp_path file system")
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    f = src / "d" / "f"
    f.write_bytes(b"")
    os.setxattr(f, "user.zeta", b"\x00\xffbin")
    os.setxattr(f, "user.alpha", b"1")
    os.setxattr(src / "d", "user.dir", b"dv")
    os.symlink("f", src / "d" / "link")
    items, _ = _walk(src)
    by = {i.entry.path: i.entry for i in items}
    assert by["d/f"].xattrs == (("user.alpha", b"1"), ("user.zeta", b"\x00\xffbin"))
    assert ("user.dir", b"dv") in by["d"].xattrs
    assert by["d/link"].xattrs == ()


def test_xattrs_unsupported_is_silent(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"")

    def nosup(*a, **k):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(walk_mod.os, "listxattr", nosup)
    items, errors = _walk(src)
    assert errors == [] and items[0].entry.xattrs == ()


def test_non_utf8_name_round_trips(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    raw = os.fsencode(str(src)) + b"/caf\xe9-\xff\xfe"
    with open(raw, "wb") as fh:
        fh.write(b"x")
    (item,), errors = _walk(src)
    assert errors == []
    assert os.fsencode(item.entry.path) == b"caf\xe9-\xff\xfe"
    assert os.path.exists(os.path.join(str(src), item.entry.path))


def test_excludes_basename_and_relpath(tmp_path):
    src = tmp_path / "src"
    for d in ("keep", "cache/deep", "a/cache", "a/b"):
        (src / d).mkdir(parents=True)
    for f in ("keep/x.tmp", "keep/x.dat", "cache/deep/f", "a/b/f", "a/cache/g"):
        (src / f).write_bytes(b"")
    items, errors = _walk(src, excludes=["*.tmp", "cache", "a/b"])
    assert errors == []
    # 'cache' matches the basename at any depth; 'a/b' matches the relpath and
    # is not descended.
    assert _paths(items) == ["a", "keep", "keep/x.dat"]


def test_special_files_skipped(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "fifo")
    sock_path = os.path.join(str(src), "sock")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(sock_path)
    except OSError as exc:  # pragma: no cover - path too long for AF_UNIX
        pytest.skip(f"cannot bind a unix socket here: {exc}")
    try:
        (src / "file").write_bytes(b"")
        items, errors = _walk(src)
    finally:
        s.close()
    assert _paths(items) == ["file"]
    assert errors == [
        ("fifo", "skipped: fifo is not a regular file, directory or symlink"),
        ("sock", "skipped: socket is not a regular file, directory or symlink"),
    ]


def test_unreadable_dir_reported_and_skipped(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "locked").mkdir(parents=True)
    (src / "locked" / "f").write_bytes(b"")
    (src / "open").mkdir()
    (src / "open" / "g").write_bytes(b"")
    real = os.open

    def open_(path, flags, *a, **kw):
        # The walk opens each directory relative to its parent's descriptor; as root
        # chmod 000 does not block us: simulate EACCES.
        if path == "locked" and flags & os.O_DIRECTORY:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real(path, flags, *a, **kw)

    monkeypatch.setattr(walk_mod.os, "open", open_)
    items, errors = _walk(src)
    assert _paths(items) == ["open", "open/g"]
    assert errors == [("locked", "cannot list directory: Permission denied")]


def test_vanished_during_walk(tmp_path):
    src = tmp_path / "src"
    (src / "a" / "gone_dir").mkdir(parents=True)
    (src / "a" / "gone_file").write_bytes(b"")
    (src / "a" / "stays").write_bytes(b"")
    errors: list[tuple[str, str]] = []
    seen = []
    for item in walk(str(src), on_error=lambda p, r: errors.append((p, r))):
        seen.append(item.entry.path)
        if item.entry.path == "a":  # 'a' is listed already: remove children before they are visited
            shutil.rmtree(src / "a" / "gone_dir")
            os.unlink(src / "a" / "gone_file")
    assert seen == ["a", "a/stays"]
    assert errors == [
        ("a/gone_dir", "cannot read: vanished during the walk"),
        ("a/gone_file", "cannot read: vanished during the walk"),
    ]


def test_missing_source_reported(tmp_path):
    items, errors = _walk(tmp_path / "nope")
    assert items == []
    assert errors == [(".", "cannot list source directory: No such file or directory")]


def test_stat_key_detects_change(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"one")
    before = stat_key(os.lstat(f))
    st = os.lstat(f)
    assert before == (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    assert stat_key(os.lstat(f)) == before
    with open(f, "ab") as fh:
        fh.write(b"more")
    assert stat_key(os.lstat(f)) != before


def test_root_not_yielded_and_modes_are_permission_bits(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    os.chmod(src / "d", 0o1777)
    (item,), _ = _walk(src)
    assert item.entry.path == "d" and item.entry.mode == 0o1777
    assert not stat.S_IFMT(item.entry.mode)


# --- any depth, few descriptors ------------------------------------------------------------
def _tree_with_siblings(src, depth: int) -> list[str]:
    """src/0/0/.../0 with a file before and a directory and a file after each level's subdirectory."""
    expected = []
    path, rel = src, ""
    for level in range(depth):
        (path / "0").mkdir(parents=True)
        (path / "z").mkdir()
        (path / "z" / "in-z").write_bytes(b"z")
        (path / "y").write_bytes(str(level).encode())
        expected += [f"{rel}0", f"{rel}y", f"{rel}z", f"{rel}z/in-z"]
        path, rel = path / "0", f"{rel}0/"
    return expected


def _walk_order(expected: list[str]) -> list[str]:
    """Pre-order by name bytes: '0' < 'y' < 'z', a directory's contents right after it."""
    return sorted(expected, key=lambda p: [os.fsencode(c) for c in p.split("/")])


@pytest.mark.parametrize("max_open", [1, 2, 5])
def test_walk_keeps_at_most_max_open_dirs_and_comes_back_up(tmp_path, monkeypatch, max_open):
    src = tmp_path / "src"
    expected = _walk_order(_tree_with_siblings(src, 12))
    monkeypatch.setattr(walk_mod, "MAX_OPEN_DIRS", max_open)
    before = len(os.listdir("/proc/self/fd"))
    peak = 0
    seen = []
    errors: list = []
    for item in walk(str(src), on_error=lambda p, r: errors.append((p, r))):
        seen.append(item.entry.path)
        peak = max(peak, len(os.listdir("/proc/self/fd")) - before)
    assert errors == [] and seen == expected
    assert peak <= max_open + 1  # +1: listdir's own descriptor
    assert len(os.listdir("/proc/self/fd")) == before


def test_walk_reopens_by_name_when_the_directory_it_left_was_moved(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "a" / "b" / "c").mkdir(parents=True)
    (src / "a" / "b" / "c" / "x").write_bytes(b"x")
    (src / "a" / "b" / "z").write_bytes(b"z")
    (src / "a" / "y").write_bytes(b"y")
    monkeypatch.setattr(walk_mod, "MAX_OPEN_DIRS", 1)
    seen, errors = [], []
    for item in walk(str(src), on_error=lambda p, r: errors.append((p, r))):
        seen.append(item.entry.path)
        if item.entry.path == "a/b/c/x":  # ".." of c is now src, not b: b is found again by name
            os.rename(src / "a" / "b" / "c", src / "moved-c")
    assert seen == ["a", "a/b", "a/b/c", "a/b/c/x", "a/b/z", "a/y"] and errors == []


def test_walk_leaves_out_the_rest_of_a_directory_replaced_under_it(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "a" / "b" / "c").mkdir(parents=True)
    (src / "a" / "b" / "c" / "x").write_bytes(b"x")
    (src / "a" / "b" / "z").write_bytes(b"z")
    (src / "a" / "y").write_bytes(b"y")
    monkeypatch.setattr(walk_mod, "MAX_OPEN_DIRS", 1)
    seen, errors = [], []
    for item in walk(str(src), on_error=lambda p, r: errors.append((p, r))):
        seen.append(item.entry.path)
        if item.entry.path == "a/b/c/x":  # b is not b any more: neither by ".." nor by name
            os.rename(src / "a" / "b" / "c", src / "moved-c")
            os.rename(src / "a" / "b", src / "old-b")
            (src / "a" / "b").mkdir()
            (src / "a" / "b" / "planted").write_bytes(b"not listed with b")
    assert seen == ["a", "a/b", "a/b/c", "a/b/c/x", "a/y"]
    assert errors == [("a/b", "moved or replaced during the walk: the rest of it is left out")]


def test_items_past_path_max_open_relative_to_their_directory(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    names = [f"{i:02d}" + "n" * 240 for i in range(20)]  # 4,860 bytes below src
    for name in names:
        os.mkdir(name, dir_fd=fd)
        nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    with os.fdopen(os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o640, dir_fd=fd), "wb") as f:
        f.write(b"at the bottom")
    supported = xattrs_supported(tmp_path)
    if supported:
        os.setxattr(f"/proc/self/fd/{fd}/deep.txt", "user.k", b"v")
    os.close(fd)
    errors: list = []
    during = {}
    for item in walk(str(src), on_error=lambda p, r: errors.append((p, r))):
        if item.entry.kind == KIND_FILE:
            with os.fdopen(item.open(), "rb") as f:  # while the walk is in its directory
                during[item.entry.path] = (f.read(), item.entry.xattrs)
    assert errors == []
    (path, (data, xattrs)), = during.items()
    assert len(os.fsencode(os.path.join(str(src), path))) > 4096
    assert data == b"at the bottom" and xattrs == ((("user.k", b"v"),) if supported else ())
    # After the walk: opened again component by component from the root.
    (item,) = [i for i in _walk(src)[0] if i.entry.kind == KIND_FILE]
    with os.fdopen(item.open(), "rb") as f:
        assert f.read() == b"at the bottom"
    # A symlink planted at its name is not followed.
    bottom = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    for name in names:
        nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=bottom)
        os.close(bottom)
        bottom = nfd
    os.unlink("deep.txt", dir_fd=bottom)
    os.symlink("/etc/passwd", "deep.txt", dir_fd=bottom)
    os.close(bottom)
    with pytest.raises(OSError):
        os.close(item.open())

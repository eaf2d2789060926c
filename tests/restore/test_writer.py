"""Tests for replicator.restore.writer: round trip from walk, hostile paths, planted symlinks, failures."""
from __future__ import annotations

import os
import stat

import pytest

from replicator.format.entry import KIND_DIR, KIND_FILE, KIND_SYMLINK, Entry
from replicator.restore import writer as restore_mod
from replicator.restore.writer import TMP_PREFIX, RestoreReport, restore, validate_relpath
from replicator.sync.walk import walk
from tests.sync.test_walk import xattrs_supported

pytestmark = pytest.mark.usefixtures("restore_writers")

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root to chown to arbitrary uid/gid")


def F(path: str, data: bytes = b"x", **kw) -> Entry:
    return Entry(path=path, kind=KIND_FILE, mode=kw.pop("mode", 0o644), uid=0, gid=0,
                 mtime_ns=kw.pop("mtime_ns", 1_500_000_000_000_000_000), size=kw.pop("size", len(data)), **kw)


def D(path: str, **kw) -> Entry:
    return Entry(path=path, kind=KIND_DIR, mode=kw.pop("mode", 0o755), uid=0, gid=0,
                 mtime_ns=1_500_000_000_000_000_000, **kw)


def L(path: str, target: str) -> Entry:
    return Entry(path=path, kind=KIND_SYMLINK, mode=0o777, uid=0, gid=0,
                 mtime_ns=1_500_000_000_000_000_000, target=target)


def reader(contents: dict[str, bytes], chunk: int = 7):
    def read_file(entry: Entry):
        data = contents[entry.path]
        for i in range(0, len(data), chunk):
            yield data[i:i + chunk]
    return read_file


def run(target, entries, contents=None, **kw) -> RestoreReport:
    if contents is None:
        contents = {e.path: b"x" * e.size for e in entries if e.kind == KIND_FILE}
    return restore(str(target), entries, reader(contents), **kw)


def listing(root) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, n), root))
    return sorted(out)


def no_temp_files(root) -> bool:
    return not any(os.path.basename(p).startswith(TMP_PREFIX) for p in listing(root))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- round trip ----------------------------------------------------------------

def build_tree(src, with_xattrs: bool) -> None:
    os.makedirs(src / "docs")
    os.makedirs(src / "deep" / "er" / "est")
    os.makedirs(src / "empty")
    os.makedirs(src / "ro")
    os.makedirs(src / "hl")
    (src / "docs" / "a.txt").write_bytes(os.urandom(100_000))
    (src / "docs" / "zero.bin").write_bytes(b"")
    (src / "deep" / "er" / "est" / "leaf").write_bytes(b"leaf\n")
    (src / "ro" / "file").write_bytes(b"read only")
    (src / "setuid").write_bytes(b"#!/bin/sh\n")
    (src / "back\\slash").write_bytes(b"\\")
    with open(os.fsencode(str(src)) + b"/caf\xe9", "wb") as fh:
        fh.write(b"latin-1 name")
    os.link(src / "docs" / "a.txt", src / "hl" / "b")
    os.link(src / "docs" / "a.txt", src / "zz")
    os.symlink("a.txt", src / "docs" / "rel")
    os.symlink("/etc/passwd", src / "abs")
    os.symlink("nope/x", src / "dangling")
    if with_xattrs:
        os.setxattr(src / "docs" / "a.txt", "user.checksum", b"\x00\x01")
        os.setxattr(src / "docs" / "a.txt", "user.a", b"first")
        os.setxattr(src / "docs", "user.dirattr", b"d")
    os.chown(src / "docs" / "zero.bin", 1234, 5678)
    os.chown(src / "docs", 4321, 8765)
    os.lchown(src / "abs", 1111, 2222)
    os.chmod(src / "setuid", 0o4755)  # after chown: chown clears setuid
    os.chmod(src / "docs" / "zero.bin", 0o600)
    os.chmod(src / "ro" / "file", 0o444)
    os.chmod(src / "empty", 0o700)
    os.chmod(src / "docs", 0o750)
    t = 1_400_000_000_000_000_000
    paths = sorted((os.path.join(dp, n) for dp, dns, fns in os.walk(os.fsencode(str(src)))
                    for n in dns + fns), key=len, reverse=True)  # children before parents
    for i, p in enumerate(paths):
        os.utime(p, ns=(t + i * 1_000_000_007, t + i * 1_000_000_007), follow_symlinks=False)
    os.chmod(src / "ro", 0o555)  # read-only dir: restore must defer its mode


def snapshot(src) -> tuple[list[Entry], dict[str, bytes]]:
    errors: list = []
    entries = [i.entry for i in walk(str(src), on_error=lambda p, r: errors.append((p, r)))]
    assert errors == []
    contents = {}
    for e in entries:
        if e.kind == KIND_FILE and not e.link_to:
            with open(os.fsencode(os.path.join(str(src), e.path)), "rb") as fh:
                contents[e.path] = fh.read()
    return entries, contents


@needs_root
def test_round_trip_from_walk(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    with_xattrs = xattrs_supported(tmp_path)
    build_tree(src, with_xattrs)
    entries, contents = snapshot(src)
    progress: list[int] = []
    fds = open_fds()
    # restore_privileges: a full-fidelity round trip (the setuid file keeps its bit; tests/restore/test_privileges.py)
    report = restore(str(dst), entries, reader(contents), on_progress=progress.append, restore_privileges=True)
    assert report.ok, report
    assert report.warnings == []
    assert open_fds() == fds
    assert report.files == 7 and report.hardlinks == 2 and report.symlinks == 3 and report.dirs == 7
    assert report.bytes == sum(len(v) for v in contents.values()) == sum(progress)

    restored, restored_contents = snapshot(dst)
    assert restored == entries  # content aside: every path, kind, mode, owner, mtime, xattr, link
    assert restored_contents == contents
    assert no_temp_files(dst)
    assert os.stat(dst / "zz").st_ino == os.stat(dst / "docs" / "a.txt").st_ino == os.stat(dst / "hl" / "b").st_ino
    assert os.stat(dst / "setuid").st_mode & stat.S_ISUID
    if with_xattrs:
        assert os.getxattr(dst / "docs" / "a.txt", "user.checksum") == b"\x00\x01"

    # Restoring again over the existing tree (read-only dir included) is a no-op in effect.
    again = restore(str(dst), entries, reader(contents), restore_privileges=True)
    assert again.ok, again
    assert snapshot(dst) == (entries, contents)
    assert no_temp_files(dst)


def test_target_created_and_restore_owner_false(tmp_path):
    dst = tmp_path / "new" / "target"
    e = Entry("f", KIND_FILE, 0o640, 1234, 5678, 1_000, size=3)
    report = run(dst, [e], {"f": b"abc"}, restore_owner=False)
    assert report.ok, report
    st = os.stat(dst / "f")
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o640, 1_000)


def test_target_is_a_file(tmp_path):
    (tmp_path / "t").write_bytes(b"")
    report = run(tmp_path / "t", [F("f")])
    assert not report.ok
    assert report.errors[0][0] == str(tmp_path / "t")


def test_chown_eperm_is_a_warning(tmp_path, monkeypatch):
    def deny(*a, **k):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(restore_mod.os, "fchown", deny)
    report = run(tmp_path / "t", [D("d"), F("d/f")], restore_owner=True)
    assert report.ok, report
    assert [p for p, _ in report.warnings] == ["d/f", "d"]
    assert "cannot set owner 0:0: Operation not permitted" in report.warnings[0][1]
    assert (tmp_path / "t" / "d" / "f").read_bytes() == b"x"


def test_setxattr_eperm_is_a_warning(tmp_path, monkeypatch):
    def deny(*a, **k):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(restore_mod.os, "setxattr", deny)
    report = run(tmp_path / "t", [F("f", xattrs=(("trusted.x", b"1"),))])
    assert report.ok and report.files == 1
    assert report.warnings == [("f", "cannot set xattr 'trusted.x': Operation not permitted")]


# -- path validation -----------------------------------------------------------

HOSTILE = [
    ("/etc/passwd", "absolute path"),
    ("../x", "'..' component in path"),
    ("a/../../x", "'..' component in path"),
    ("a\x00b", "NUL byte in path"),
    ("", "empty path"),
    ("a//b", "empty path component"),
    ("a/", "empty path component"),
    (".", "'.' component in path"),
    ("./a", "'.' component in path"),
    ("a/..", "'..' component in path"),
]


@pytest.mark.parametrize("path, why", HOSTILE)
def test_validate_relpath_rejects(path, why):
    reason = validate_relpath(path)
    assert reason is not None and why in reason


@pytest.mark.parametrize("path", ["a", "a/b/c", "back\\slash", "..a", "a..", ".hidden", "caf\udce9", " "])
def test_validate_relpath_accepts(path):
    assert validate_relpath(path) is None


def test_validate_relpath_unencodable():
    assert validate_relpath("bad\ud800") == "path cannot be encoded for the file system"


@pytest.mark.parametrize("kind", [KIND_FILE, KIND_DIR, KIND_SYMLINK])
@pytest.mark.parametrize("path, why", HOSTILE)
def test_hostile_paths_refused_nothing_written_outside(tmp_path, path, why, kind):
    target = tmp_path / "deep" / "target"
    target.mkdir(parents=True)
    before = listing(tmp_path)
    passwd = open("/etc/passwd", "rb").read()
    entry = {KIND_FILE: F(path, b"pwned"), KIND_DIR: D(path), KIND_SYMLINK: L(path, "/")}[kind]
    report = run(target, [entry, F("ok")])
    assert len(report.refused) == 1
    assert report.refused[0][0] == path and why in report.refused[0][1]
    assert report.errors == [] and not report.ok
    assert listing(tmp_path) == sorted(before + ["deep/target/ok"])
    assert open("/etc/passwd", "rb").read() == passwd


@pytest.mark.parametrize("link_to, why", HOSTILE[:4] + HOSTILE[5:])
def test_hostile_hard_link_target_refused(tmp_path, link_to, why):
    (tmp_path / "outside").write_bytes(b"secret")
    target = tmp_path / "t"
    report = run(target, [F("h", b"xxx", link_to=link_to)])
    assert len(report.refused) == 1 and report.refused[0][0] == "h"
    assert "invalid hard link target" in report.refused[0][1] and why in report.refused[0][1]
    assert listing(target) == []


def test_backslash_is_a_legal_name(tmp_path):
    report = run(tmp_path / "t", [F("a\\b", b"ok")], {"a\\b": b"ok"})
    assert report.ok
    assert (tmp_path / "t" / "a\\b").read_bytes() == b"ok"


def test_unknown_kind_refused(tmp_path):
    e = Entry("dev", "chardev", 0o600, 0, 0, 0)
    report = run(tmp_path / "t", [e])
    assert report.refused == [("dev", "unknown entry kind 'chardev'")]


# -- planted symlinks and things in the way -----------------------------------

def test_planted_symlink_dir_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "t"
    target.mkdir()
    os.symlink(str(outside), target / "evil")
    report = run(target, [F("evil/file", b"pwned"), D("evil"), F("evil/file2", b"pwned")])
    assert [p for p, _ in report.refused] == ["evil/file", "evil", "evil/file2"]
    assert all("'evil' is a symlink" in r for _, r in report.refused)
    assert os.listdir(outside) == []
    assert os.path.islink(target / "evil")


def test_planted_symlink_deeper_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "t"
    (target / "a").mkdir(parents=True)
    os.symlink(str(outside), target / "a" / "b")
    report = run(target, [D("a"), D("a/b"), D("a/b/c"), F("a/b/c/f")])
    assert [p for p, _ in report.refused] == ["a/b", "a/b/c", "a/b/c/f"]
    assert "'a/b' is a symlink" in report.refused[-1][1]
    assert os.listdir(outside) == []


def test_planted_symlink_hard_link_source_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    target = tmp_path / "t"
    (target).mkdir()
    os.symlink(str(outside), target / "d")
    report = run(target, [F("h", b"secret", link_to="d/secret")])
    assert report.refused == [("h", "'d' is a symlink in the target; refusing to write through it")]
    assert os.stat(outside / "secret").st_nlink == 1


@pytest.mark.parametrize("kind", ["file", "symlink", "hardlink"])
def test_planted_symlink_at_own_name_is_replaced_not_followed(tmp_path, kind):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"keep")
    target = tmp_path / "t"
    target.mkdir()
    os.symlink(str(outside / "secret"), target / "f")
    entries = {
        "file": [F("f", b"new")],
        "symlink": [L("f", "elsewhere")],
        "hardlink": [F("src", b"new"), F("f", b"new", link_to="src")],
    }[kind]
    report = run(target, entries, {"src": b"new", "f": b"new"})
    assert report.ok, report
    assert (outside / "secret").read_bytes() == b"keep"
    if kind == "symlink":
        assert os.readlink(target / "f") == "elsewhere"
    else:
        assert not os.path.islink(target / "f")
        assert (target / "f").read_bytes() == b"new"
    assert no_temp_files(target)


def test_non_directory_in_the_way_refused(tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    (target / "x").write_bytes(b"file")
    report = run(target, [D("x"), F("x/y")])
    assert [p for p, _ in report.refused] == ["x", "x/y"]
    assert "'x' exists in the target and is not a directory" in report.refused[1][1]
    assert (target / "x").read_bytes() == b"file"


def test_destination_is_a_directory(tmp_path):
    target = tmp_path / "t"
    (target / "f" / "inner").mkdir(parents=True)
    report = run(target, [F("f"), L("f", "x"), F("g"), F("f", link_to="g")])
    assert report.errors == [("f", "destination exists as a directory")] * 3
    assert (target / "f" / "inner").is_dir()
    assert no_temp_files(target)


def test_missing_parent_is_an_error(tmp_path):
    report = run(tmp_path / "t", [F("a/b")])
    assert report.errors == [("a/b", "parent directory 'a' does not exist (not restored)")]


def test_missing_hard_link_target_is_an_error(tmp_path):
    report = run(tmp_path / "t", [F("h", link_to="gone")])
    assert report.errors == [("h", "hard link target 'gone' does not exist (not restored)")]


# -- failures while writing ----------------------------------------------------

@pytest.mark.parametrize("existing", [None, b"old contents"])
def test_read_file_raising_mid_file_leaves_nothing(tmp_path, existing):
    target = tmp_path / "t"
    target.mkdir()
    if existing is not None:
        (target / "f").write_bytes(existing)
    closed = []

    def read_file(entry):
        try:
            yield b"abc"
            raise RuntimeError("chunk 1 failed authentication")
        finally:
            closed.append(True)

    fds = open_fds()
    report = restore(str(target), [F("f", size=6), F("g", b"ok")],
                     lambda e: read_file(e) if e.path == "f" else iter([b"ok"]))
    assert report.errors == [("f", "chunk 1 failed authentication")]
    assert report.files == 1 and closed == [True]
    assert open_fds() == fds
    assert no_temp_files(target)
    assert sorted(os.listdir(target)) == (["f", "g"] if existing else ["g"])
    if existing:
        assert (target / "f").read_bytes() == existing


def test_read_file_raising_before_first_chunk(tmp_path):
    def read_file(entry):
        raise KeyError("chunk missing from index")

    report = restore(str(tmp_path / "t"), [F("f")], read_file)
    assert report.errors == [("f", "'chunk missing from index'")]
    assert os.listdir(tmp_path / "t") == []


@pytest.mark.parametrize("data, size, msg", [
    (b"ab", 3, "size mismatch: expected 3 bytes, got 2"),
    (b"abcdefghijklmnop", 3, "size mismatch: expected 3 bytes, got at least 7"),
    (b"", 1, "size mismatch: expected 1 bytes, got 0"),
])
def test_size_mismatch(tmp_path, data, size, msg):
    target = tmp_path / "t"
    report = run(target, [F("f", size=size)], {"f": data})
    assert report.errors == [("f", msg)]
    assert os.listdir(target) == []


def test_write_error_is_reported(tmp_path, monkeypatch):
    def enospc(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(restore_mod.os, "write", enospc)
    monkeypatch.setattr(restore_mod.os, "pwrite", enospc)  # data is written at offsets (holes are skipped)
    target = tmp_path / "t"
    report = run(target, [F("f", b"abc")])
    assert report.errors == [("f", "No space left on device")]
    assert os.listdir(target) == []


def test_directory_metadata_applied_after_contents(tmp_path):
    target = tmp_path / "t"
    entries = [D("ro", mode=0o500), D("ro/sub", mode=0o500), F("ro/sub/f", b"data", mode=0o400), F("after")]
    report = run(target, entries)
    assert report.ok, report
    for p in ("ro", "ro/sub"):
        st = os.stat(target / p)
        assert stat.S_IMODE(st.st_mode) == 0o500
        assert st.st_mtime_ns == 1_500_000_000_000_000_000
    assert (target / "ro" / "sub" / "f").read_bytes() == b"x" * 4
    os.chmod(target / "ro" / "sub", 0o700)  # let tmp_path cleanup work for non-root runs
    os.chmod(target / "ro", 0o700)


# -- any depth, few descriptors -------------------------------------------------

def _deep_entries(depth: int) -> list[Entry]:
    """0/0/.../0 with, at each level, a file before and a directory with a file after the subdirectory."""
    out, rel = [], ""
    for level in range(depth):
        out += [D(f"{rel}0", mode=0o750), F(f"{rel}y", str(level).encode())]
        rel = f"{rel}0/"
    # The siblings after each subdirectory come once its whole subtree is done: the restore comes back up.
    for level in range(depth - 1, -1, -1):
        prefix = "0/" * level
        out += [D(f"{prefix}z", mode=0o700), F(f"{prefix}z/in-z", b"z")]
    return sorted(out, key=lambda e: [os.fsencode(c) for c in e.path.split("/")])


@pytest.mark.parametrize("max_open", [1, 3])
def test_deep_tree_with_at_most_max_open_dirs(tmp_path, monkeypatch, max_open, restore_writers):
    entries = _deep_entries(15)
    contents = {e.path: str(e.path.count("/")).encode() if e.name == "y" else b"z"
                for e in entries if e.kind == KIND_FILE}
    monkeypatch.setattr(restore_mod, "MAX_OPEN_DIRS", max_open)
    fds = open_fds()
    peak = [0]

    def read_file(entry):
        peak[0] = max(peak[0], open_fds() - fds)
        yield contents[entry.path]

    report = restore(str(tmp_path / "t"), entries, read_file)
    assert report.ok, report
    assert open_fds() == fds
    # root + the deepest max_open + the temp file + listdir's own descriptor; with writer threads, each file
    # in flight holds a descriptor of its directory, and a directory left before they are placed keeps its own
    in_flight = restore_writers * restore_mod.IN_FLIGHT_PER_WRITER if restore_writers > 1 else 0
    assert peak[0] <= max_open + 3 + 2 * in_flight, peak[0]
    restored, restored_contents = snapshot(tmp_path / "t")
    assert [(e.path, e.kind, e.mode) for e in restored] == [(e.path, e.kind, e.mode) for e in entries]
    assert restored_contents == contents


def test_directory_moved_during_restore_is_found_again_by_name(tmp_path, monkeypatch):
    target = tmp_path / "t"
    entries = [D("a"), D("a/b"), D("a/b/c"), F("a/b/c/x"), F("a/b/z"), F("a/y")]
    monkeypatch.setattr(restore_mod, "MAX_OPEN_DIRS", 1)

    def read_file(entry):
        if entry.path == "a/b/c/x":  # ".." of c becomes the target root, not b
            os.rename(target / "a" / "b" / "c", target / "moved-c")
        yield b"x"

    report = restore(str(target), entries, read_file)
    assert report.ok, report
    assert sorted(listing(target)) == ["a", "a/b", "a/b/z", "a/y", "moved-c", "moved-c/x"]


def test_directory_replaced_during_restore_is_an_error_and_never_written_through(tmp_path, monkeypatch):
    target = tmp_path / "t"
    outside = tmp_path / "outside"
    outside.mkdir()
    entries = [D("a"), D("a/b", mode=0o711), D("a/b/c"), F("a/b/c/x"), F("a/b/z"), F("a/y")]
    monkeypatch.setattr(restore_mod, "MAX_OPEN_DIRS", 1)

    def read_file(entry):
        if entry.path == "a/b/c/x":  # b replaced by a symlink out of the target
            os.rename(target / "a" / "b" / "c", target / "moved-c")
            os.rename(target / "a" / "b", target / "old-b")
            os.symlink(outside, target / "a" / "b")
        yield b"x"

    report = restore(str(target), entries, read_file)
    assert ("a/b", "directory moved or replaced during the restore; its metadata was not applied") in report.errors
    assert [p for p, _m in report.refused] == ["a/b/z"]  # the symlink in the way is refused
    assert os.listdir(outside) == []
    assert (target / "a" / "y").read_bytes() == b"x"
    assert stat.S_IMODE(os.stat(target / "old-b").st_mode) == 0o700  # b's recorded mode was not applied


def test_leaving_a_directory_does_not_wait_for_its_files_being_placed(tmp_path, monkeypatch):
    """With writer threads, the restorer reads the next directory's files while the last directory's are still
    being placed (a tree of small directories keeps the writers busy); each directory's metadata is applied
    once its files are in place."""
    import threading

    target = tmp_path / "t"
    read_b = threading.Event()
    place = restore_mod._Restorer._place_file

    def place_after_b_is_read(self, pfd, name, entry, *rest):
        if entry.path == "a/f":
            read_b.wait(10)  # bounded: a restorer that waits for a/f before reading b/g never sets it
            if not read_b.is_set():
                raise RuntimeError("b/g was not read while a/f was being placed")
        return place(self, pfd, name, entry, *rest)

    monkeypatch.setattr(restore_mod._Restorer, "_place_file", place_after_b_is_read)
    contents = {"a/f": b"one", "b/g": b"two"}

    def read_file(entry):
        if entry.path == "b/g":
            read_b.set()
        yield contents[entry.path]

    entries = [D("a", mode=0o750), F("a/f", b"one"), D("b"), F("b/g", b"two")]
    report = restore(str(target), entries, read_file, writers=4)
    assert report.ok, report
    assert (target / "a" / "f").read_bytes() == b"one" and (target / "b" / "g").read_bytes() == b"two"
    st = os.stat(target / "a")
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_mtime_ns == 1_500_000_000_000_000_000

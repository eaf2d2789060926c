"""Trees of any depth: 10,000 levels, and paths far longer than PATH_MAX (4096 bytes).

A source 10,000 directories deep (its deepest path is 20,000 bytes) is
synced twice, verified with ``--data``, compared (``diff``), restored and
mirrored; a tree of long names at moderate depth goes the same way.  No
part may recurse per level (Python's limit is 1,000 frames) or name a path
below the root in one system call (ENAMETOOLONG); the syncs and the restore
run with RLIMIT_NOFILE at 200, so nothing keeps one descriptor per level.
"""
from __future__ import annotations

import json
import os
import resource
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from replicator.cli import main
from replicator.format.entry import KIND_FILE
from replicator.repo.merkle import MODIFIED, diff_trees
from replicator.repo.repository import Repository
from replicator.restore import mirror as M
from tests.conftest import PASSPHRASE
from tests.deeptree import differences, manifest, open_at_depth, proc_path, remove_tree, write_at

DEPTH = 10_000
BRANCH = 3_000  # the level with a sibling directory after the deep chain: the walk and restore come back up to it
HARDLINK_FROM = 5_000
T0 = 1_600_000_000_000_000_000
FD_LIMIT = 200  # RLIMIT_NOFILE for the syncs and the restore: 50 times fewer descriptors than levels


def _file_data(level: int) -> bytes:
    return f"level {level}\n".encode() * (1 + level % 7)


def build_deep(src) -> None:
    """src/d/d/.../d (DEPTH levels): a file at some levels, a sibling at BRANCH, at the bottom a file with a
    user xattr, a symlink and a hard link to the file at HARDLINK_FROM; every directory's mtime set."""
    os.makedirs(src)
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    keep = -1
    for level in range(DEPTH):
        if level % 1000 == 0 or level in (BRANCH, DEPTH - 1):
            write_at(fd, "f", _file_data(level))
            os.utime("f", ns=(T0, T0 + level), dir_fd=fd)
        if level == BRANCH:
            os.mkdir("e", 0o750, dir_fd=fd)
            efd = os.open("e", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            write_at(efd, "after-the-chain", b"sibling\n")
            os.close(efd)
        if level == HARDLINK_FROM:
            keep = os.dup(fd)
        if level == DEPTH - 1:
            break
        os.mkdir("d", 0o755, dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.setxattr(proc_path(fd, "f"), "user.depth", str(DEPTH).encode(), follow_symlinks=False)
    os.symlink("f", "ln", dir_fd=fd)
    os.link("f", "h", src_dir_fd=keep, dst_dir_fd=fd)
    os.close(keep)
    # Back up through "..", setting each directory's mtime after its contents are complete.
    for level in range(DEPTH - 1, -1, -1):
        os.utime(fd, ns=(T0, T0 + 1_000_000 * level))
        nfd = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)


def _scratch(tmp_path_factory) -> str:
    """Where the deep trees go: /dev/shm (tmpfs) when there is one, else the test's tmp directory.

    Speed only: on this machine's ext4 every mkdir or rmdir costs about 0.35 ms, so each copy of the
    tree would take 7 s to make and remove; the code under test does not depend on the file system.
    """
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return tempfile.mkdtemp(prefix="replicator-test-depth-", dir="/dev/shm")
    return str(tmp_path_factory.mktemp("deep"))


@contextmanager
def few_descriptors(limit: int = FD_LIMIT):
    """RLIMIT_NOFILE lowered to ``limit`` (far fewer than the levels): nothing may keep one open per level."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, limit), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """The deep source and an empty repository beside it; everything removed at the end."""
    root = Path(_scratch(tmp_path_factory))
    try:
        src = root / "src"
        build_deep(src)
        env = {"src": src, "root": root, "repo": str(root / "repo"), "m1": manifest(src)}
        with Repository.init(env["repo"], PASSPHRASE.encode(), log2n=14):
            pass
        yield env
    finally:
        for name in os.listdir(root):
            remove_tree(root / name)
        os.rmdir(root)


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def synced(deep):
    """Generation 1, mirrored; the bottom file changed; generation 2.  The syncs go through the CLI (in this
    process) with few descriptors allowed."""
    mp = pytest.MonkeyPatch()
    mp.setenv("REPLICATOR_PASSPHRASE", PASSPHRASE)
    try:
        with few_descriptors():
            assert main(["sync", str(deep["src"]), deep["repo"], "--name", "deep", "-q"]) == 0
        with Repository.open(deep["repo"], PASSPHRASE.encode()) as repo:
            s1 = repo.find_snapshot()
            try:  # the first (full) mirror update, of generation 1: checked by test_live_mirror_reproduces_it
                deep["mirror1"] = M.mirror_snapshot(repo, s1, str(deep["root"] / "mirror"))
            except Exception as exc:  # noqa: BLE001 - reported by that test, not by every test of the module
                deep["mirror1"] = exc
        bottom = open_at_depth(deep["src"], ["d"] * (DEPTH - 1))
        try:
            write_at(bottom, "f", b"changed at the bottom\n")
            os.utime("f", ns=(T0, T0 + 7), dir_fd=bottom)
        finally:
            os.close(bottom)
        deep["m2"] = manifest(deep["src"])
        with few_descriptors():
            assert main(["sync", str(deep["src"]), deep["repo"], "--name", "deep", "-q"]) == 0
        with Repository.open(deep["repo"], PASSPHRASE.encode()) as repo:
            s2 = repo.find_snapshot()
        assert s2.generation == s1.generation + 1
    finally:
        mp.undo()
    deep["s1"], deep["s2"] = s1, s2
    return deep


def test_sync_records_every_level(synced):
    with Repository.open(synced["repo"], PASSPHRASE.encode()) as repo:
        entries = list(repo.walk_tree(synced["s2"].tree))
    assert len(entries) == len(synced["m2"])
    deepest = max(entries, key=lambda e: e.path.count("/"))
    levels, length = deepest.path.count("/"), len(os.fsencode(deepest.path))
    assert (levels, length > 4 * 4096) == (DEPTH - 1, True)
    files = {e.name: e for e in entries if e.kind == KIND_FILE and e.path.count("/") == DEPTH - 1}
    assert files["f"].xattrs == (("user.depth", str(DEPTH).encode()),)
    # Pre-order, "d" before "f": the bottom "h" comes first, the file at HARDLINK_FROM links to it.
    assert files["h"].link_to == ""
    linked = next(e for e in entries if e.name == "f" and e.path.count("/") == HARDLINK_FROM)
    assert linked.link_to == files["h"].path


def test_verify_data(synced, capsys, monkeypatch):
    monkeypatch.setenv("REPLICATOR_PASSPHRASE", PASSPHRASE)
    rc, out, err = _cli(capsys, "verify", synced["repo"], "--data")
    assert rc == 0, err[-2000:]
    assert "no problems found" in out


def test_diff_names_only_the_change_at_the_bottom(synced, capsys, monkeypatch):
    monkeypatch.setenv("REPLICATOR_PASSPHRASE", PASSPHRASE)
    rc, out, err = _cli(capsys, "diff", synced["repo"], synced["s1"].id, synced["s2"].id, "--json")
    assert rc == 0, err[-2000:]
    changes = json.loads(out)["changes"]
    assert [(c["kind"], c["path"].count("/"), c["path"].rsplit("/", 1)[-1], c["what"]) for c in changes] == [
        (MODIFIED, DEPTH - 1, "f", "content")]
    assert changes[0]["path"] == "d/" * (DEPTH - 1) + "f"


def test_restore_reproduces_it_exactly(synced, capsys, monkeypatch):
    monkeypatch.setenv("REPLICATOR_PASSPHRASE", PASSPHRASE)
    target = synced["root"] / "restored"
    with few_descriptors():
        rc, out, err = _cli(capsys, "restore", synced["repo"], str(target), "--restore-privileges")
    assert rc == 0, err[-2000:]
    assert differences(synced["m2"], manifest(target)) == []


def test_live_mirror_reproduces_it(synced):
    first = synced["mirror1"]
    assert not isinstance(first, Exception), f"{type(first).__name__}: {str(first)[:500]}"
    assert first.ok and first.mode == "full", (first.errors[:3], first.mode)
    assert differences(synced["m1"], manifest(synced["root"] / "mirror")) == []
    with Repository.open(synced["repo"], PASSPHRASE.encode()) as repo:
        second = M.mirror_snapshot(repo, synced["s2"], str(synced["root"] / "mirror"))
    assert second.ok and second.mode == "diff" and second.files == 1, (second.errors[:3], second.mode)
    assert differences(synced["m2"], manifest(synced["root"] / "mirror")) == []


# --- long names at moderate depth ------------------------------------------------------
LONG = 40  # levels of 200-byte names: paths of about 8 KiB


def _long_name(level: int) -> str:
    return f"{level:03d}-" + "n" * 196


def test_paths_longer_than_path_max(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REPLICATOR_PASSPHRASE", PASSPHRASE)
    src = tmp_path / "src"
    os.makedirs(src)
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(LONG):
            write_at(fd, "x" * 250, _file_data(level), mode=0o640)
            os.symlink("x" * 250, "l" * 250, dir_fd=fd)
            os.mkdir(_long_name(level), dir_fd=fd)
            nfd = os.open(_long_name(level), os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        write_at(fd, "bottom", b"the bottom\n")
        os.setxattr(proc_path(fd, "bottom"), "user.long", b"yes", follow_symlinks=False)
    finally:
        os.close(fd)
    try:
        before = manifest(src)
        repo = str(tmp_path / "repo")
        assert _cli(capsys, "init", repo, "--kdf-work", "14")[0] == 0
        rc, out, err = _cli(capsys, "sync", str(src), repo, "--name", "long")
        assert rc == 0, (out, err)
        bottom = open_at_depth(src, [_long_name(i) for i in range(LONG)])
        try:
            write_at(bottom, "bottom", b"changed\n")
        finally:
            os.close(bottom)
        after = manifest(src)
        rc, out, err = _cli(capsys, "sync", str(src), repo, "--name", "long")
        assert rc == 0, (out, err)
        rc, out, err = _cli(capsys, "verify", repo, "--data")
        assert rc == 0 and "no problems found" in out, (out, err)
        with Repository.open(repo, PASSPHRASE.encode()) as r:
            s1, s2 = r.snapshots()
            changes = list(diff_trees(r.read_tree, s1.tree, s2.tree))
            assert [(c.kind, c.path.rsplit("/", 1)[-1]) for c in changes] == [(MODIFIED, "bottom")]
            assert len(os.fsencode(changes[0].path)) > 4096
            report = M.mirror_snapshot(r, s1, str(tmp_path / "mirror"))
            assert report.ok, report.errors[:3]
            assert differences(before, manifest(tmp_path / "mirror")) == []
            report = M.mirror_snapshot(r, s2, str(tmp_path / "mirror"))
            assert report.ok, report.errors[:3]
            assert differences(after, manifest(tmp_path / "mirror")) == []
        rc, out, err = _cli(capsys, "restore", repo, str(tmp_path / "restored"))
        assert rc == 0, err
        assert differences(after, manifest(tmp_path / "restored")) == []
    finally:
        for name in ("src", "restored", "mirror"):
            remove_tree(tmp_path / name)

"""The read-only FUSE view (restore/fusefs.py): its operations in process, then a real mount.

The real mounts skip, saying which, when /dev/fuse or libfuse is missing or mounting is not
permitted here (a container without CAP_SYS_ADMIN and no setuid fusermount).
"""
from __future__ import annotations

import ctypes.util
import errno
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from replicator.core.params import ChunkerParams
from replicator.repo.repository import Repository
from replicator.restore.fusefs import LATEST, SnapshotFS, escape_source, snapshot_dirname
from tests.conftest import PASSPHRASE, ROOT, run_cli, sync_repo
from tests.transport.conftest import site  # noqa: F401 - the fixture of a real serve

SMALL = ChunkerParams(1024, 4096, 16384)


def _src(root: Path) -> Path:
    rnd = random.Random(21)
    (root / "scans" / "2024").mkdir(parents=True)
    (root / "lab").mkdir()
    (root / "scans" / "2024" / "ct.dcm").write_bytes(rnd.randbytes(400_000))
    (root / "lab" / "results.csv").write_text("patient;glucose\n1;5.4\n")
    (root / "empty.txt").write_bytes(b"")
    os.symlink("lab/results.csv", root / "link")
    os.setxattr(root / "lab" / "results.csv", "user.origin", b"ward 3")
    os.chmod(root / "lab" / "results.csv", 0o640)
    return root


@pytest.fixture
def fs(tmp_path):
    src = _src(tmp_path / "src")
    with Repository.init(str(tmp_path / "repo"), b"pw", log2n=14, params=SMALL) as repo:
        s1 = sync_repo(str(src), repo, "host:/data/src").snapshot
        (src / "lab" / "results.csv").write_text("patient;glucose\n1;5.4\n2;6.1\n")
        s2 = sync_repo(str(src), repo, "host:/data/src").snapshot
        view = SnapshotFS(repo, repo.snapshots(), cache_bytes=64 * 1024)
        view.src, view.s1, view.s2 = src, s1, s2  # type: ignore[attr-defined]
        yield view


def _oserror(call, *args) -> int:
    with pytest.raises(OSError) as exc:
        call(*args)
    return exc.value.errno


@pytest.mark.parametrize("name,shown", [
    ("hospital", "hospital"),
    ("host:/data/src", "host:%2Fdata%2Fsrc"),
    ("100%", "100%25"),
    ("a%2Fb", "a%252Fb"),  # the escape itself is escaped: names never collide
    (".hidden", "%2Ehidden"),
    ("..", "%2E."),
    (".", "%2E"),
])
def test_escape_source(name, shown):
    assert escape_source(name) == shown


def test_layout(fs):
    src_dir = "/" + escape_source("host:/data/src")
    assert fs.readdir("/", 0) == [".", "..", escape_source("host:/data/src")]
    names = fs.readdir(src_dir, 0)[2:]
    assert names == [snapshot_dirname(fs.s1), snapshot_dirname(fs.s2), LATEST]
    assert names[0].startswith("000001_") and names[0].endswith("_" + fs.s1.short_id)
    assert fs.readlink(f"{src_dir}/latest") == snapshot_dirname(fs.s2)
    assert stat.S_ISLNK(fs.getattr(f"{src_dir}/latest")["st_mode"])
    assert stat.S_ISDIR(fs.getattr(src_dir)["st_mode"]) and stat.S_ISDIR(fs.getattr("/")["st_mode"])
    snap = f"{src_dir}/{snapshot_dirname(fs.s2)}"
    assert fs.readdir(snap, 0) == [".", "..", "empty.txt", "lab", "link", "scans"]
    assert _oserror(fs.getattr, "/nosuch") == errno.ENOENT
    assert _oserror(fs.getattr, f"{src_dir}/000009_x") == errno.ENOENT
    assert _oserror(fs.getattr, f"{snap}/lab/nosuch") == errno.ENOENT
    assert _oserror(fs.readdir, f"{snap}/empty.txt", 0) == errno.ENOTDIR


def test_attributes_links_and_xattrs(fs):
    snap = f"/{escape_source('host:/data/src')}/{snapshot_dirname(fs.s2)}"
    st = fs.getattr(f"{snap}/lab/results.csv")
    real = os.stat(fs.src / "lab" / "results.csv")
    assert st["st_mode"] == real.st_mode and st["st_size"] == real.st_size and st["st_mtime"] == real.st_mtime_ns
    assert (st["st_uid"], st["st_gid"]) == (real.st_uid, real.st_gid)
    assert fs.readlink(f"{snap}/link") == "lab/results.csv"
    assert fs.getattr(f"{snap}/link")["st_size"] == len("lab/results.csv")
    assert fs.listxattr(f"{snap}/lab/results.csv") == ["user.origin"]
    assert fs.getxattr(f"{snap}/lab/results.csv", "user.origin") == b"ward 3"
    assert _oserror(fs.getxattr, f"{snap}/lab/results.csv", "user.nope") == errno.ENODATA
    assert _oserror(fs.readlink, f"{snap}/lab/results.csv") == errno.EINVAL


def test_reads_at_any_offset(fs):
    snap = f"/{escape_source('host:/data/src')}/{snapshot_dirname(fs.s1)}"
    data = (fs.src / "scans" / "2024" / "ct.dcm").read_bytes()
    fh = fs.open(f"{snap}/scans/2024/ct.dcm", os.O_RDONLY)
    rnd = random.Random(2)
    for _ in range(50):
        offset, size = rnd.randrange(len(data) + 10), rnd.choice((1, 4096, 65536, 131072))
        assert fs.read("", size, offset, fh) == data[offset : offset + size]
    fs.release("", fh)
    assert _oserror(fs.read, "", 10, 0, fh) == errno.EBADF
    # s1 holds the first version of results.csv, s2 the second
    fh = fs.open(f"{snap}/lab/results.csv", os.O_RDONLY)
    assert fs.read("", 100, 0, fh) == b"patient;glucose\n1;5.4\n"


def test_writes_and_non_files_are_refused(fs):
    snap = f"/{escape_source('host:/data/src')}/{snapshot_dirname(fs.s2)}"
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND):
        assert _oserror(fs.open, f"{snap}/lab/results.csv", flags) == errno.EROFS
    assert _oserror(fs.open, f"{snap}/lab", os.O_RDONLY) == errno.EISDIR
    assert _oserror(fs.open, "/", os.O_RDONLY) == errno.EISDIR


def test_a_damaged_chunk_is_eio_and_remembered(fs, monkeypatch):
    snap = f"/{escape_source('host:/data/src')}/{snapshot_dirname(fs.s2)}"
    fh = fs.open(f"{snap}/scans/2024/ct.dcm", os.O_RDONLY)
    reader = fs._open[fh]
    reader.entry = replace(reader.entry, chunks=(b"\x02" * 32, *reader.entry.chunks[1:]))
    assert _oserror(fs.read, "", 10, 0, fh) == errno.EIO
    assert fs.problems and "missing" in fs.problems[0]


def test_two_snapshots_claiming_the_latest_generation_make_no_latest_link(fs):
    twin = replace(fs.s2, id="ff" * 32)
    view = SnapshotFS(fs.repo, [fs.s1, fs.s2, twin])
    names = view.readdir("/" + escape_source("host:/data/src"), 0)
    assert LATEST not in names and len(names) == 2 + 3


# --- the command, mounted for real ---------------------------------------------------------------

def _fuse_missing() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if not (ctypes.util.find_library("fuse") or ctypes.util.find_library("fuse3")):
        return "libfuse (libfuse2 or libfuse3) is not installed"
    return None


def _mount(args: list[str], mnt: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``replicator mount`` and wait until the kernel shows the mount (skip if not permitted)."""
    missing = _fuse_missing()
    if missing:
        pytest.skip(f"FUSE: {missing}")
    full_env = {**os.environ, "REPLICATOR_PASSPHRASE": PASSPHRASE, **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "replicator", "mount", *args, str(mnt)], cwd=ROOT, env=full_env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not os.path.ismount(mnt):
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            if any(s in err for s in ("Operation not permitted", "Permission denied", "fuse: device not found")):
                pytest.skip(f"FUSE: mounting is not permitted here: {err.strip()}")
            raise AssertionError(f"mount exited with {proc.returncode}: {err}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the mount did not appear within 60 s")
        time.sleep(0.05)
    return proc


def _unmount(proc: subprocess.Popen, mnt: Path, sig: int) -> tuple[int, str, str]:
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        raise
    return proc.returncode, out, err


def _compare_tree(src: Path, view: Path) -> int:
    n = 0
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        there = view / rel
        assert sorted(os.listdir(there)) == sorted(dirnames + filenames), rel
        for name in filenames:
            a, b = Path(dirpath) / name, there / name
            if a.is_symlink():
                assert os.readlink(b) == os.readlink(a)
                continue
            assert b.read_bytes() == a.read_bytes(), rel + "/" + name
            assert os.stat(b).st_mtime_ns == os.stat(a).st_mtime_ns
            n += 1
    return n


@pytest.fixture
def local_repo(tmp_path):
    src = _src(tmp_path / "src")
    repo = tmp_path / "repo"
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    r = run_cli("sync", str(src), str(repo), "--name", "hospital", "--json")
    assert r.returncode == 0, r.stderr
    return src, repo, json.loads(r.stdout)["snapshot"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_mount_reads_lists_refuses_writes_and_unmounts(local_repo, tmp_path, sig):
    src, repo, snap_id = local_repo
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = _mount([str(repo)], mnt)
    try:
        assert os.listdir(mnt) == ["hospital"]
        latest = mnt / "hospital" / "latest"
        assert os.readlink(latest).endswith("_" + snap_id[:16])
        assert _compare_tree(src, latest) == 3
        with open(latest / "scans" / "2024" / "ct.dcm", "rb") as f:  # random access through the kernel
            f.seek(300_001)
            assert f.read(1000) == (src / "scans" / "2024" / "ct.dcm").read_bytes()[300_001:301_001]
        assert os.getxattr(latest / "lab" / "results.csv", "user.origin") == b"ward 3"
        for attempt in (lambda: open(latest / "new.txt", "w"), lambda: open(latest / "lab" / "results.csv", "a"),
                        lambda: os.mkdir(latest / "d"), lambda: os.unlink(latest / "empty.txt"),
                        lambda: os.chmod(latest / "empty.txt", 0o777), lambda: os.rename(latest / "lab", latest / "x")):
            with pytest.raises(OSError) as exc:
                attempt()
            assert exc.value.errno == errno.EROFS
    except BaseException:
        _unmount(proc, mnt, signal.SIGTERM)
        raise
    rc, out, err = _unmount(proc, mnt, sig)
    assert rc == 0, err
    assert not os.path.ismount(mnt) and os.listdir(mnt) == []
    assert out.splitlines()[0].startswith(f"mounted {repo} at {mnt}: 1 snapshots of 1 sources")
    assert out.splitlines()[-1] == f"unmounted {mnt}" and err == ""


def test_mount_over_ssh(site, tmp_path):  # noqa: F811 - the fixture
    src = _src(tmp_path / "src")
    site.pin()
    assert run_cli(*site.sync_args(src)).returncode == 0
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = _mount([site.url(), "--identity", str(site.keys["reader"]), "--known-hosts", str(site.known_hosts)], mnt)
    try:
        assert _compare_tree(src, mnt / "s" / "latest") == 3
    finally:
        rc, _out, err = _unmount(proc, mnt, signal.SIGTERM)
    assert rc == 0, err
    assert not os.path.ismount(mnt)


def test_mount_refuses_a_bad_mountpoint_with_one_line(local_repo, tmp_path):
    _src_dir, repo, _snap = local_repo
    for where, message in ((tmp_path / "nosuch", "is not an existing directory"),
                           (tmp_path / "src" / "empty.txt", "is not an existing directory"),
                           (tmp_path / "src", "is not empty")):  # the mount would hide what it holds
        r = run_cli("mount", str(repo), str(where))
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_mount_without_the_binding_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['mfusepy'] = None\n"
            "from replicator.cli import main\n"
            f"raise SystemExit(main(['mount', {str(tmp_path)!r}, {str(tmp_path)!r}]))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == ["replicator: error: mount needs the FUSE binding mfusepy: "
                                             "pip install 'replicator[mount]'"]


def test_mount_without_libfuse_says_what_is_missing(tmp_path):
    r = run_cli("mount", str(tmp_path), str(tmp_path), env={"FUSE_LIBRARY_PATH": str(tmp_path / "libfuse.so.404")})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "mount needs libfuse" in lines[0] and "apt-get install fuse3" in lines[0]

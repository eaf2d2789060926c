"""Live mirror (restore/mirror.py): the directory equals the snapshot after every update, byte for byte
and metadata; updates are incremental; an interrupted update leaves every file old or new and is
repaired by the next one."""
from __future__ import annotations

import json
import os
import random
import threading

import pytest

from replicator import constants as C
from replicator.core.params import ChunkerParams
from replicator.repo.repository import Repository
from replicator.restore import mirror as M
from replicator.restore.writer import TMP_PREFIX
from tests.conftest import sync_repo
from tests.treecompare import diff, manifest

PW = b"pw"
PARAMS = ChunkerParams(min_size=4096, avg_size=16384, max_size=65536)


class Crash(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way catches it."""


@pytest.fixture
def env(tmp_path):
    src = tmp_path / "src"
    rng = random.Random(1)
    (src / "ward" / "scans").mkdir(parents=True)
    (src / "admin").mkdir()
    (src / "ward" / "scans" / "big.dcm").write_bytes(rng.randbytes(300_000))
    for i in range(6):
        (src / "ward" / f"note{i}.txt").write_bytes(f"note {i}\n".encode() * 50)
    (src / "admin" / "list.csv").write_bytes(b"a,b\n" * 100)
    os.symlink("ward/note1.txt", src / "latest")
    os.link(src / "admin" / "list.csv", src / "admin" / "list-link.csv")
    os.chmod(src / "admin", 0o750)
    repo = Repository.init(str(tmp_path / "repo"), PW, log2n=C.SCRYPT_LOG2N_MIN, params=PARAMS)
    yield repo, src, tmp_path / "mirror"
    repo.close()


def _snap(repo, src):
    return sync_repo(str(src), repo, "ward").snapshot


def _same(src, mirror):
    assert diff(manifest(str(src)), manifest(str(mirror))) == []
    a = os.stat(mirror / "admin" / "list.csv")
    b = os.stat(mirror / "admin" / "list-link.csv")
    assert (a.st_ino, a.st_nlink) == (b.st_ino, 2)


def test_initial_then_changes_deletes_renames_and_metadata(env):
    repo, src, mirror = env
    r = M.mirror_snapshot(repo, _snap(repo, src), str(mirror))
    assert r.ok and r.mode == "full" and r.files >= 9
    _same(src, mirror)
    state = M.load_state(str(mirror))
    assert state["snapshot"] == repo.snapshots()[-1].id and not state["dirty"]
    assert not any(n.startswith(".") for n in os.listdir(mirror))  # the state lives beside, not inside

    (src / "ward" / "note0.txt").write_bytes(b"changed\n")  # content
    (src / "ward" / "note2.txt").unlink()  # deleted file
    os.rename(src / "ward" / "scans", src / "ward" / "imaging")  # renamed directory
    os.chmod(src / "ward" / "note3.txt", 0o600)  # metadata only
    os.utime(src / "ward" / "note4.txt", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    os.setxattr(src / "ward" / "note5.txt", "user.ward", b"7")
    os.unlink(src / "latest")
    os.symlink("admin/list.csv", src / "latest")  # symlink target changed
    (src / "admin" / "list-link.csv").unlink()
    (src / "admin" / "list-link.csv").mkdir()  # file -> directory
    (src / "admin" / "list-link.csv" / "inside").write_bytes(b"x")
    os.link(src / "admin" / "list.csv", src / "admin" / "second-link")
    r = M.mirror_snapshot(repo, _snap(repo, src), str(mirror))
    assert r.ok and r.mode == "diff", r.errors
    assert r.files < 12  # only what changed (the 300 kB scan moved: rewritten once)
    assert diff(manifest(str(src)), manifest(str(mirror))) == []
    assert os.getxattr(mirror / "ward" / "note5.txt", "user.ward") == b"7"
    assert os.stat(mirror / "admin" / "second-link").st_ino == os.stat(mirror / "admin" / "list.csv").st_ino

    # directory -> file, whole subtree deleted
    import shutil
    shutil.rmtree(src / "admin" / "list-link.csv")
    (src / "admin" / "list-link.csv").write_bytes(b"back to a file")
    shutil.rmtree(src / "ward" / "imaging")
    r = M.mirror_snapshot(repo, _snap(repo, src), str(mirror))
    assert r.ok and r.mode == "diff" and r.removed >= 1
    assert diff(manifest(str(src)), manifest(str(mirror))) == []

    again = M.mirror_snapshot(repo, repo.snapshots()[-1], str(mirror))
    assert again.mode == "unchanged"


def test_full_walk_without_state_removes_strays_and_keeps_matching_files(env):
    repo, src, mirror = env
    snap = _snap(repo, src)
    assert M.mirror_snapshot(repo, snap, str(mirror)).ok
    os.unlink(M.state_path(str(mirror)))
    (mirror / "stray.txt").write_bytes(b"not in the snapshot")
    (mirror / "ward" / "junk").mkdir()
    (mirror / "ward" / "junk" / "x").write_bytes(b"x")
    os.unlink(mirror / "ward" / "note1.txt")
    # Without its state the directory is no longer known as the mirror's: it must be adopted.
    r = M.mirror_snapshot(repo, snap, str(mirror), adopt=True)
    assert r.ok and r.mode == "full"
    assert r.files <= 3  # note1, the hard-link pair; the rest passes the quick check
    _same(src, mirror)


def test_base_snapshot_gone_falls_back_to_a_full_walk(env):
    repo, src, mirror = env
    assert M.mirror_snapshot(repo, _snap(repo, src), str(mirror)).ok
    state = json.loads(open(M.state_path(str(mirror))).read())
    state["tree"] = "00" * 32  # as if pruned
    open(M.state_path(str(mirror)), "w").write(json.dumps(state))
    (src / "ward" / "note0.txt").write_bytes(b"new\n")
    r = M.mirror_snapshot(repo, _snap(repo, src), str(mirror))
    assert r.ok and r.mode == "full"
    _same(src, mirror)


def _contents(root) -> dict[str, bytes]:
    out = {}
    for dirpath, _d, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


@pytest.mark.parametrize("after", [1, 3, 5])
def test_interrupted_update_leaves_every_file_old_or_new_and_is_repaired(env, after, monkeypatch):
    repo, src, mirror = env
    assert M.mirror_snapshot(repo, _snap(repo, src), str(mirror)).ok
    old = _contents(src)
    for i in range(6):
        (src / "ward" / f"note{i}.txt").write_bytes(f"version 2 of {i}\n".encode() * 40)
    snap2 = _snap(repo, src)
    new = _contents(src)
    real = repo.read_blob
    calls = {"n": 0}

    def crashing(blob_id):
        if repo.index.lookup(blob_id)[1].type == C.BLOB_DATA:
            calls["n"] += 1  # each note is one chunk: one call per file (trees are read too: not counted)
        if calls["n"] > after:
            raise Crash()
        return real(blob_id)

    monkeypatch.setattr(repo, "read_blob", crashing)
    with pytest.raises(Crash):
        M.mirror_snapshot(repo, snap2, str(mirror))
    monkeypatch.setattr(repo, "read_blob", real)
    now = _contents(mirror)
    assert set(now) == set(new)
    assert all(now[p] in (old[p], new[p]) for p in now)  # every file whole: old or new
    assert sum(now[p] == new[p] != old[p] for p in now) == after
    assert not [f for _d, _s, fs in os.walk(mirror) for f in fs if f.startswith(TMP_PREFIX)]
    assert M.load_state(str(mirror))["dirty"]

    # A crash may leave a temporary file: the next update removes it.  Snapshot 3 reverts note0 to
    # its snapshot-1 content, which a diff from snapshot 2 alone would miss.
    (mirror / "ward" / (TMP_PREFIX + "deadbeef")).write_bytes(b"half")
    (src / "ward" / "note0.txt").write_bytes(old["ward/note0.txt"])
    os.utime(src / "ward" / "note0.txt", ns=(os.stat(mirror / "ward" / "note0.txt").st_mtime_ns,) * 2)
    r = M.mirror_snapshot(repo, _snap(repo, src), str(mirror))
    assert r.ok and r.mode == "diff", r.errors
    _same(src, mirror)
    assert not M.load_state(str(mirror))["dirty"]


def test_failed_read_is_reported_and_retried(env, monkeypatch):
    repo, src, mirror = env
    assert M.mirror_snapshot(repo, _snap(repo, src), str(mirror)).ok
    (src / "ward" / "note0.txt").write_bytes(b"v2\n")
    snap2 = _snap(repo, src)
    real = repo.read_blob

    def failing(blob_id):
        if repo.index.lookup(blob_id)[1].type == C.BLOB_DATA:
            raise OSError(5, "Input/output error")
        return real(blob_id)

    monkeypatch.setattr(repo, "read_blob", failing)
    r = M.mirror_snapshot(repo, snap2, str(mirror))
    assert not r.ok and r.errors[0][0] == "ward/note0.txt"
    assert (mirror / "ward" / "note0.txt").read_bytes() != b"v2\n"  # the old version, whole
    monkeypatch.setattr(repo, "read_blob", real)
    r = M.mirror_snapshot(repo, snap2, str(mirror))
    assert r.ok
    _same(src, mirror)


def test_worker_follows_the_latest_snapshot_and_coalesces(env):
    repo, src, mirror = env
    _snap(repo, src)
    results = []
    done = threading.Event()

    def on_done(report, error):
        results.append((report, error))
        done.set()

    worker = M.MirrorWorker(repo, str(mirror), on_done=on_done)
    try:
        worker.request()
        assert done.wait(30)
        assert results[0][1] is None and results[0][0].ok
        _same(src, mirror)
        (src / "ward" / "note0.txt").write_bytes(b"v2\n")
        _snap(repo, src)
        done.clear()
        for _ in range(5):
            worker.request()
        assert done.wait(30)
    finally:
        worker.close()
    assert worker.updates <= 3 and all(e is None for _r, e in results)
    _same(src, mirror)


def test_worker_without_snapshot_and_with_an_error(env, monkeypatch):
    repo, _src, mirror = env
    results = []
    worker = M.MirrorWorker(repo, str(mirror), on_done=lambda r, e: results.append((r, e)))
    worker.update()  # nothing yet: no error
    monkeypatch.setattr(M, "latest_snapshot", lambda *a: 1 / 0)
    worker.request()
    worker.close()
    assert isinstance(results[-1][1], ZeroDivisionError)

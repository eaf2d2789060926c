"""Live mirror safety (restore/mirror.py): a directory that is not the mirror's is refused unless adopted;
an update stops within 2 s when asked, leaving every file whole, and the next update finishes it; files
changed or created in the mirror by someone else are never overwritten or removed, only named, until the
operator discards them."""
from __future__ import annotations

import os
import random
import threading
import time

import pytest

from replicator import constants as C
from replicator.core.params import ChunkerParams
from replicator.errors import UsageError
from replicator.repo.repository import Repository
from replicator.restore import mirror as M
from replicator.restore.writer import TMP_PREFIX
from tests.conftest import sync_repo
from tests.transport.conftest import site  # noqa: F401 - the fixture of the one end-to-end test
from tests.transport.test_mirror_serve import _start_with_mirror
from tests.treecompare import diff, manifest

PW = b"pw"
PARAMS = ChunkerParams(min_size=4096, avg_size=16384, max_size=65536)


@pytest.fixture
def env(tmp_path):
    src = tmp_path / "src"
    (src / "ward").mkdir(parents=True)
    (src / "admin").mkdir()
    for i in range(4):
        (src / "ward" / f"note{i}.txt").write_bytes(f"note {i}\n".encode() * 50)
    (src / "admin" / "list.csv").write_bytes(b"a,b\n" * 100)
    repo = Repository.init(str(tmp_path / "repo"), PW, log2n=C.SCRYPT_LOG2N_MIN, params=PARAMS)
    yield repo, src, tmp_path / "mirror"
    repo.close()


def _snap(repo, src):
    return sync_repo(str(src), repo, "ward").snapshot


def _contents(root) -> dict[str, bytes]:
    out = {}
    for dirpath, _d, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


# --- adopt or refuse ---------------------------------------------------------------------
def test_a_foreign_non_empty_directory_is_refused_unless_adopted(env):
    repo, src, mirror = env
    snap = _snap(repo, src)
    mirror.mkdir()
    (mirror / "host.key").write_bytes(b"secret key")
    with pytest.raises(UsageError, match="not empty"):
        M.mirror_snapshot(repo, snap, str(mirror))
    assert (mirror / "host.key").read_bytes() == b"secret key" and M.load_state(str(mirror)) is None

    calls = []
    worker = M.MirrorWorker(repo, str(mirror), on_done=lambda r, e: calls.append((r, e)))
    try:
        assert worker.refused and "not empty" in worker.refused and "\n" not in worker.refused
        worker.request()  # does nothing
    finally:
        worker.close()
    assert calls == [] and os.listdir(mirror) == ["host.key"]

    r = M.mirror_snapshot(repo, snap, str(mirror), adopt=True)
    assert r.ok and not (mirror / "host.key").exists()
    assert diff(manifest(str(src)), manifest(str(mirror))) == []
    # From now on it is the mirror's (its state file): no adopt needed.
    assert M.MirrorWorker(repo, str(mirror)).refused is None


def test_a_missing_or_empty_directory_is_the_mirrors(env):
    repo, src, mirror = env
    snap = _snap(repo, src)
    assert M.mirror_snapshot(repo, snap, str(mirror / "new")).ok
    (mirror / "empty").mkdir()
    assert M.check_target(str(mirror / "empty"), adopt=False) is None
    assert M.mirror_snapshot(repo, snap, str(mirror / "empty")).ok


# --- stop within 2 s ---------------------------------------------------------------------
def test_stop_ends_an_update_within_2_seconds_with_every_file_whole(env, monkeypatch):
    repo, src, mirror = env
    rng = random.Random(3)
    (src / "many").mkdir()
    for i in range(40):
        (src / "many" / f"f{i:02d}").write_bytes(rng.randbytes(2000))
    assert M.mirror_snapshot(repo, _snap(repo, src), str(mirror)).ok
    old = _contents(mirror)
    for i in range(40):
        (src / "many" / f"f{i:02d}").write_bytes(rng.randbytes(2000))
    (src / "big.bin").write_bytes(rng.randbytes(600_000))  # many chunks: stopped between pieces
    snap2 = _snap(repo, src)
    new = _contents(src)
    real = repo.read_blob

    def slow(blob_id):
        if repo.index.lookup(blob_id)[1].type == C.BLOB_DATA:
            time.sleep(0.05)  # 40 files + about 35 chunks: about 4 s for the whole update
        return real(blob_id)

    monkeypatch.setattr(repo, "read_blob", slow)
    stop = threading.Event()
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", M.mirror_snapshot(repo, snap2, str(mirror), stop=stop)))
    t.start()
    time.sleep(0.3)
    asked = time.monotonic()
    stop.set()
    t.join(5)
    assert time.monotonic() - asked < 2 and not t.is_alive()
    r = out["r"]
    assert r.stopped and not r.ok and r.errors == []
    now = _contents(mirror)
    assert not [p for p in now if TMP_PREFIX in p]
    assert all(now[p] in (old.get(p), new[p]) for p in now)  # every file whole: old or new
    assert sum(now[p] == new[p] != old.get(p) for p in now) < len(new)
    assert "big.bin" not in now  # stopped between two of its chunks (it comes first): not there, not half there
    assert M.load_state(str(mirror))["dirty"]

    monkeypatch.setattr(repo, "read_blob", real)
    r = M.mirror_snapshot(repo, snap2, str(mirror))
    assert r.ok and r.kept_local_changes == [], r.kept_local_changes  # its own partial work is not "local"
    assert diff(manifest(str(src)), manifest(str(mirror))) == []


def test_worker_close_stops_the_running_update(env, monkeypatch):
    repo, src, mirror = env
    for i in range(80):
        (src / "ward" / f"n{i:02d}").write_bytes(b"x%d" % i)
    _snap(repo, src)
    real = repo.read_blob
    started = threading.Event()

    def slow(blob_id):
        started.set()
        time.sleep(0.05)
        return real(blob_id)

    monkeypatch.setattr(repo, "read_blob", slow)
    results = []
    worker = M.MirrorWorker(repo, str(mirror), on_done=lambda r, e: results.append((r, e)))
    worker.request()
    assert started.wait(10)
    time.sleep(0.3)
    asked = time.monotonic()
    worker.close()
    assert time.monotonic() - asked < 2
    assert results and results[0][1] is None and results[0][0].stopped


# --- local changes are never destroyed ---------------------------------------------------
def test_local_changes_are_kept_named_and_discarded_only_when_asked(env):
    repo, src, mirror = env
    assert M.mirror_snapshot(repo, _snap(repo, src), str(mirror)).ok
    # During the failover an application at the secondary writes into the mirror.
    (mirror / "ward" / "note0.txt").write_bytes(b"edited at the secondary\n")
    (mirror / "ward" / "admission.txt").write_bytes(b"patient 42, bed 12\n")
    # The next snapshot changes note0 and note1 and deletes nothing.
    (src / "ward" / "note0.txt").write_bytes(b"primary's version\n")
    (src / "ward" / "note1.txt").write_bytes(b"primary's note1\n")
    snap2 = _snap(repo, src)
    r = M.mirror_snapshot(repo, snap2, str(mirror))
    assert r.ok and r.mode == "diff", r.errors
    assert sorted(r.kept_local_changes) == ["ward/admission.txt", "ward/note0.txt"]
    assert (mirror / "ward" / "note0.txt").read_bytes() == b"edited at the secondary\n"
    assert (mirror / "ward" / "admission.txt").read_bytes() == b"patient 42, bed 12\n"
    assert (mirror / "ward" / "note1.txt").read_bytes() == b"primary's note1\n"  # unchanged files are updated

    # An update that touches none of them names them again (they are still there).
    (src / "admin" / "list.csv").write_bytes(b"c,d\n")
    r = M.mirror_snapshot(repo, _snap(repo, src), str(mirror))
    assert r.ok and sorted(r.kept_local_changes) == ["ward/admission.txt", "ward/note0.txt"]
    assert (mirror / "admin" / "list.csv").read_bytes() == b"c,d\n"

    # The operator discards them explicitly: the mirror equals the snapshot again.
    r = M.mirror_snapshot(repo, repo.snapshots()[-1], str(mirror), discard_local=True)
    assert r.ok and r.kept_local_changes == []
    assert diff(manifest(str(src)), manifest(str(mirror))) == []
    r = M.mirror_snapshot(repo, _snap(repo, src), str(mirror))
    assert r.kept_local_changes == []


def test_a_removed_directory_keeps_the_local_files_it_holds(env):
    repo, src, mirror = env
    assert M.mirror_snapshot(repo, _snap(repo, src), str(mirror)).ok
    (mirror / "admin" / "late-entry.csv").write_bytes(b"written during the failover\n")
    import shutil

    shutil.rmtree(src / "admin")
    (src / "ward" / "note2.txt").unlink()
    r = M.mirror_snapshot(repo, _snap(repo, src), str(mirror))
    assert r.ok and r.kept_local_changes == ["admin/late-entry.csv"]
    assert sorted(os.listdir(mirror / "admin")) == ["late-entry.csv"]  # the mirror's own file went
    assert not (mirror / "ward" / "note2.txt").exists()


def test_a_committed_local_change_is_taken_over(env):
    """The local file comes back in a snapshot (synced from the secondary): it is the mirror's again."""
    repo, src, mirror = env
    assert M.mirror_snapshot(repo, _snap(repo, src), str(mirror)).ok
    (mirror / "ward" / "admission.txt").write_bytes(b"patient 42\n")
    (src / "ward" / "note3.txt").write_bytes(b"v2\n")
    assert M.mirror_snapshot(repo, _snap(repo, src), str(mirror)).kept_local_changes == ["ward/admission.txt"]
    st = os.stat(mirror / "ward" / "admission.txt")
    (src / "ward" / "admission.txt").write_bytes(b"patient 42\n")
    os.utime(src / "ward" / "admission.txt", ns=(st.st_mtime_ns, st.st_mtime_ns))
    os.chmod(src / "ward" / "admission.txt", st.st_mode & 0o7777)
    r = M.mirror_snapshot(repo, _snap(repo, src), str(mirror))
    assert r.ok and r.kept_local_changes == []
    (src / "ward" / "admission.txt").write_bytes(b"patient 42, discharged\n")
    r = M.mirror_snapshot(repo, _snap(repo, src), str(mirror))
    assert r.ok and r.kept_local_changes == []
    assert (mirror / "ward" / "admission.txt").read_bytes() == b"patient 42, discharged\n"


# --- end to end: serve refuses, keeps serving, stops on SIGTERM --------------------------
def test_serve_refuses_a_foreign_directory_and_keeps_serving(site, tmp_path):  # noqa: F811
    mirror = tmp_path / "etc-by-mistake"
    mirror.mkdir()
    (mirror / "ssh_host_key").write_bytes(b"keep me")
    _start_with_mirror(site, mirror)
    site.pin()
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    from tests.conftest import run_cli

    r = run_cli(*site.sync_args(src))
    assert r.returncode == 0, r.stderr
    assert site.proc.poll() is None
    asked = time.monotonic()
    site.proc.terminate()
    site.proc.wait(10)
    assert time.monotonic() - asked < 2
    log = site.server_log()
    lines = [ln for ln in log.splitlines() if "refused" in ln]
    assert len(lines) == 1 and "--mirror-adopt amiens" in lines[0], log
    assert "Traceback" not in log
    assert os.listdir(mirror) == ["ssh_host_key"] and (mirror / "ssh_host_key").read_bytes() == b"keep me"

"""Lock objects (store/lock.py ObjectLock, docs/FORMAT.md 2.4) over a local directory and over memory."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from replicator.store.local import LocalStorage
from replicator.store.lock import EXCLUSIVE, LOCKS, SHARED, Locked, ObjectLock, process_start
from replicator.store.memory import MemoryStorage


@pytest.fixture(params=["local", "memory"])
def storage(request, tmp_path):
    return LocalStorage(str(tmp_path)) if request.param == "local" else MemoryStorage()


def _locks(storage) -> list[str]:
    return sorted(storage.list(LOCKS + "/"))


def _plant(storage, name: str, **fields) -> str:
    doc = {"v": 1, "kind": EXCLUSIVE, "host": "other-host", "pid": 4242, "start": 1, "boot": "b",
           "role": "prune", "taken": time.time(), "refreshed": time.time()}
    doc.update(fields)
    storage.put(f"{LOCKS}/{name}", json.dumps(doc).encode())
    return f"{LOCKS}/{name}"


def test_shared_locks_coexist_and_exclusive_is_refused_naming_the_holder(storage):
    a = ObjectLock(storage, SHARED, "sync").acquire()
    b = ObjectLock(storage, SHARED, "sync").acquire()
    assert len(_locks(storage)) == 2
    with pytest.raises(Locked) as err:
        ObjectLock(storage, EXCLUSIVE, "prune").acquire()
    msg = str(err.value)
    assert f"pid {os.getpid()} on {socket.gethostname()} (sync)" in msg and "\n" not in msg
    assert len(_locks(storage)) == 2  # the refused taker left nothing behind
    a.release()
    b.release()
    assert _locks(storage) == []
    with ObjectLock(storage, EXCLUSIVE, "prune") as c:
        assert c.held


def test_exclusive_excludes_writers_and_other_exclusives(storage):
    with ObjectLock(storage, EXCLUSIVE, "forget"):
        for kind in (SHARED, EXCLUSIVE):
            with pytest.raises(Locked, match=r"exclusive lock locks/[0-9a-f]{32}: .*\(forget\)"):
                ObjectLock(storage, kind, "sync").acquire()
        assert len(_locks(storage)) == 1
    assert _locks(storage) == []


def test_lock_expired_on_another_host_is_taken_over_with_a_warning(storage, caplog):
    old = _plant(storage, "a" * 32, refreshed=time.time() - 100)
    with ObjectLock(storage, EXCLUSIVE, "prune", stale_after=60) as lock:
        assert old not in _locks(storage)
        assert len(lock.warnings) == 1 and old in lock.warnings[0] and "not refreshed" in lock.warnings[0]
    assert old in caplog.text


def test_fresh_lock_on_another_host_is_refused(storage):
    _plant(storage, "b" * 32, kind=SHARED, role="sync")
    with pytest.raises(Locked, match="pid 4242 on other-host"):
        ObjectLock(storage, EXCLUSIVE, "prune", stale_after=60).acquire()
    with ObjectLock(storage, SHARED, "sync"):  # shared with shared: fine
        pass


def test_dead_process_on_this_host_is_stale_at_once(storage):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = _plant(storage, "c" * 32, host=socket.gethostname(), pid=child.pid, start=None, boot="")
    with ObjectLock(storage, EXCLUSIVE, "prune") as lock:
        assert dead not in _locks(storage)
        assert f"process {child.pid} on this host is gone" in lock.removed[0] and not lock.warnings


def test_reused_pid_with_another_start_time_is_stale(storage):
    if process_start(os.getpid()) is None:
        pytest.skip("no /proc on this machine: process start times cannot be read")
    reused = _plant(storage, "d" * 32, host=socket.gethostname(), pid=os.getpid(),
                    start=process_start(os.getpid()) + 1, boot="")
    with ObjectLock(storage, EXCLUSIVE, "prune") as lock:
        assert reused not in _locks(storage) and lock.removed


def test_unreadable_lock_object_is_removed_with_a_warning(storage):
    storage.put(f"{LOCKS}/{'e' * 32}", b"\x00garbage")
    with ObjectLock(storage, EXCLUSIVE, "prune") as lock:
        assert "unreadable" in lock.warnings[0]


class _Racing:
    """A storage where another exclusive taker writes its lock right after ours (the race of two takers)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.location = inner.location
        self.raced = False

    def put(self, name, data, *, overwrite=False):
        self.inner.put(name, data, overwrite=overwrite)
        if name.startswith(LOCKS + "/") and not self.raced:
            self.raced = True
            _plant(self.inner, "f" * 32, host="rival", role="forget")

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


def test_two_exclusive_takers_racing_the_later_write_is_seen_and_ours_removed(storage):
    racing = _Racing(storage)
    with pytest.raises(Locked, match="rival"):
        ObjectLock(racing, EXCLUSIVE, "prune").acquire()
    assert _locks(storage) == [f"{LOCKS}/{'f' * 32}"]  # ours was removed, the rival's stays


def test_held_lock_is_refreshed_and_a_removed_one_is_reported_lost(storage):
    with ObjectLock(storage, SHARED, "sync", refresh=0.05) as lock:
        first = json.loads(storage.get(lock.name))["refreshed"]
        deadline = time.time() + 10
        while json.loads(storage.get(lock.name))["refreshed"] == first and time.time() < deadline:
            time.sleep(0.02)
        assert json.loads(storage.get(lock.name))["refreshed"] > first
        name = lock.name
        storage.delete(name)  # another process judged it stale
        lock.refresh_now()
        assert lock.lost and name in lock.lost
        assert not storage.exists(name)  # a lost lock is not written back


def test_kill_9_of_a_holder_does_not_block_the_next_run(tmp_path):
    code = ("import sys,time\n"
            "from replicator.store.local import LocalStorage\n"
            "from replicator.store.lock import ObjectLock, SHARED\n"
            "ObjectLock(LocalStorage(sys.argv[1]), SHARED, 'sync').acquire()\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        storage = LocalStorage(str(tmp_path))
        with pytest.raises(Locked):
            ObjectLock(storage, EXCLUSIVE, "prune").acquire()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        with ObjectLock(storage, EXCLUSIVE, "prune") as lock:
            assert f"process {child.pid} on this host is gone" in lock.removed[0] and not lock.warnings
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

"""The daemon against a real `replicator serve` on loopback, and kill -9 recovery."""
from __future__ import annotations

import json
import os
import signal
import time

from tests.conftest import run_cli
from tests.daemon.conftest import init_repo, job_toml, restored, snapshots, status, tree_files, wait_for, write_config
from tests.transport.conftest import site, start_server, stop_server  # noqa: F401 - fixture

__all__ = ["site"]


def _remote_cfg(tmp_path, site, src, **extra):  # noqa: F811
    site.pin()
    state = tmp_path / "state"
    job = job_toml("amiens", src, site.url(), identity=str(site.keys["writer"]),
                   known_hosts=str(site.known_hosts), **extra)
    return state, write_config(tmp_path / "r.toml", state, job)


def _latest_equals(repo, tmp_path, expected):
    if not snapshots(repo):
        return False
    return restored(repo, tmp_path / f"restore-{time.monotonic_ns()}") == expected


def test_remote_changes_propagate(tmp_path, site, daemons):  # noqa: F811
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"alpha")
    state, cfg = _remote_cfg(tmp_path, site, src)
    d = daemons(cfg, tmp_path / "daemon.log").start()
    wait_for(lambda: _latest_equals(site.repo, tmp_path, tree_files(src)), what="initial remote sync")
    (src / "b").write_bytes(os.urandom(300_000))
    os.rename(src / "a", src / "a2")
    wait_for(lambda: _latest_equals(site.repo, tmp_path, tree_files(src)), what="change, rename committed remotely")
    os.unlink(src / "b")
    wait_for(lambda: _latest_equals(site.repo, tmp_path, tree_files(src)), what="delete committed remotely")
    assert d.stop() == 0
    lines = [json.loads(x) for x in (state / "audit.jsonl").read_text().splitlines()]
    assert lines[-1]["client_key"] == _fingerprint(site.keys["writer"])
    assert lines[-1]["snapshot"] == snapshots(site.repo)[-1]["id"]
    assert run_cli("audit", "verify", str(state / "audit.jsonl"), passphrase=None).returncode == 0


def _fingerprint(key) -> str:
    import asyncssh

    return asyncssh.read_private_key(str(key)).get_fingerprint("sha256")


def test_receiver_down_then_back(tmp_path, site, daemons):  # noqa: F811
    src = tmp_path / "src"
    src.mkdir()
    (src / "v").write_bytes(b"version 1")
    state, cfg = _remote_cfg(tmp_path, site, src)
    d = daemons(cfg, tmp_path / "daemon.log").start()
    wait_for(lambda: len(snapshots(site.repo)) >= 1, what="first sync")
    stop_server(site)
    for i in range(2, 5):
        (src / "v").write_bytes(f"version {i}".encode())
        (src / f"extra-{i}").write_bytes(os.urandom(1000))
        time.sleep(1)
    wait_for(lambda: status(state)["jobs"]["amiens"].get("failures", 0) >= 1, what="a failed attempt")
    st = status(state)["jobs"]["amiens"]
    assert st["state"] == "retrying" and st["last_error"] and st["lag_seconds"] > 0
    start_server(site)  # same port, same repository
    expected = tree_files(src)
    wait_for(lambda: _latest_equals(site.repo, tmp_path, expected), timeout=120, what="catch up after restart")
    wait_for(lambda: status(state)["jobs"]["amiens"]["state"] == "idle", what="idle again")
    assert d.stop() == 0


def test_kill9_mid_sync_then_restart(tmp_path, daemons):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        (src / f"scan-{i:02d}.dcm").write_bytes(os.urandom(12 << 20))
    repo = init_repo(tmp_path / "repo")
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "r.toml", state, job_toml("local", src, repo))
    d = daemons(cfg, tmp_path / "daemon.log").start()
    wait_for(lambda: status(state).get("jobs", {}).get("local", {}).get("state") == "syncing",
             interval=0.02, what="sync started")
    time.sleep(0.5)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10)
    killed_mid_sync = not snapshots(repo)
    d2 = daemons(cfg, tmp_path / "daemon2.log").start()
    wait_for(lambda: snapshots(repo), timeout=120, what="sync completes after kill -9")
    assert d2.stop() == 0
    r = run_cli("verify", str(repo), "--data")
    assert r.returncode == 0, r.stdout + r.stderr
    assert restored(repo, tmp_path / "restore") == tree_files(src)
    assert killed_mid_sync, "the tree was synced before the kill; make it bigger"


def test_daemon_to_live_mirror(tmp_path, site, daemons):  # noqa: F811
    """The whole chain: a change at the source is readable in the secondary's plain mirror."""
    from tests.conftest import PASSPHRASE

    stop_server(site)
    mirror = tmp_path / "mirror"
    (tmp_path / "passphrase").write_text(PASSPHRASE + "\n")
    start_server(site, extra_args=["--mirror", f"amiens={mirror}", "--passphrase-file", str(tmp_path / "passphrase")])
    src = tmp_path / "src"
    (src / "ward").mkdir(parents=True)
    (src / "ward" / "a.hl7").write_bytes(b"MSH|1")
    state, cfg = _remote_cfg(tmp_path, site, src)
    d = daemons(cfg, tmp_path / "daemon.log").start()
    wait_for(lambda: tree_files(mirror) == tree_files(src) if mirror.exists() else False, what="initial mirror")
    (src / "ward" / "b.dcm").write_bytes(os.urandom(200_000))
    os.rename(src / "ward", src / "ward-7")
    wait_for(lambda: tree_files(mirror) == tree_files(src), what="change and rename in the mirror")
    os.unlink(src / "ward-7" / "a.hl7")
    wait_for(lambda: tree_files(mirror) == tree_files(src), what="delete in the mirror")
    assert d.stop() == 0

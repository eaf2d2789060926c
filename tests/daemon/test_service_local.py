"""The daemon as a real process replicating into a local repository."""
from __future__ import annotations

import json
import os
import signal
import time

from tests.conftest import run_cli
from tests.daemon.conftest import init_repo, job_toml, restored, snapshots, status, tree_files, wait_for, write_config


def _setup(tmp_path, **extra):
    src = tmp_path / "src"
    src.mkdir()
    repo = init_repo(tmp_path / "repo")
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "r.toml", state, job_toml("local", src, repo, **extra))
    return src, repo, state, cfg


def _latest_has(repo, tmp_path, expected: dict[str, bytes]):
    """True when the latest snapshot restores to exactly ``expected``."""
    if not snapshots(repo):
        return False
    target = tmp_path / f"restore-{time.monotonic_ns()}"
    return restored(repo, target) == expected


def test_changes_propagate(tmp_path, daemons):
    src, repo, state, cfg = _setup(tmp_path)
    (src / "a.txt").write_bytes(b"first")
    (src / "sub").mkdir()
    (src / "sub" / "b.txt").write_bytes(b"second")
    d = daemons(cfg, tmp_path / "daemon.log").start()
    wait_for(lambda: _latest_has(repo, tmp_path, tree_files(src)), what="initial sync")
    (src / "c.txt").write_bytes(b"new file")
    wait_for(lambda: _latest_has(repo, tmp_path, tree_files(src)), what="new file committed")
    os.unlink(src / "a.txt")
    os.rename(src / "sub" / "b.txt", src / "renamed.txt")
    expected = tree_files(src)
    assert set(expected) == {"c.txt", "renamed.txt"}
    wait_for(lambda: _latest_has(repo, tmp_path, expected), what="delete and rename committed")
    st = wait_for(lambda: (s := status(state)) and s["jobs"]["local"]["state"] == "idle" and s, what="status")
    job = st["jobs"]["local"]
    assert job["last_snapshot"] == snapshots(repo)[-1]["id"] and job["last_error"] is None
    r = run_cli("status", "--config", str(cfg), passphrase=None)
    assert r.returncode == 0 and "local: idle" in r.stdout and "daemon running" in r.stdout, r.stdout + r.stderr
    r = run_cli("status", "--state-dir", str(state), "--json", passphrase=None)
    doc = json.loads(r.stdout)
    assert doc["running"] is True and doc["jobs"]["local"]["lag_seconds"] >= 0
    assert d.stop() == 0
    r = run_cli("audit", "verify", str(state / "audit.jsonl"), "--json", passphrase=None)
    assert r.returncode == 0 and json.loads(r.stdout)["lines"] == len(snapshots(repo))
    r = run_cli("status", "--state-dir", str(state), passphrase=None)
    assert "not running" in r.stdout


def test_status_without_daemon(tmp_path):
    r = run_cli("status", "--state-dir", str(tmp_path), passphrase=None)
    assert r.returncode == 3 and "no status file" in r.stdout


def test_sigterm_mid_sync_exits_cleanly(tmp_path, daemons):
    """SIGTERM during a long first sync: exit 0 within 15 s and no snapshot (nothing partial)."""
    src, repo, state, cfg = _setup(tmp_path)
    rnd = os.urandom
    for i in range(12):
        (src / f"big-{i}.bin").write_bytes(rnd(16 << 20))
    d = daemons(cfg, tmp_path / "daemon.log").start()
    wait_for(lambda: status(state).get("jobs", {}).get("local", {}).get("state") == "syncing",
             interval=0.02, what="sync started")
    time.sleep(0.3)
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    rc = d.proc.wait(30)
    took = time.monotonic() - t0
    assert rc == 0 and took < 15, (rc, took, d.text())
    if "abandoned" in d.text():
        assert snapshots(repo) == []
    r = run_cli("verify", str(repo))
    assert r.returncode == 0, r.stderr
    # the next start completes the sync
    d2 = daemons(cfg, tmp_path / "daemon2.log").start()
    wait_for(lambda: len(snapshots(repo)) >= 1, what="sync after restart")
    assert d2.stop() == 0


def test_sighup_adds_job_and_keeps_old_on_bad_config(tmp_path, daemons):
    src, repo, state, cfg = _setup(tmp_path)
    (src / "x").write_bytes(b"x")
    d = daemons(cfg, tmp_path / "daemon.log").start()
    wait_for(lambda: len(snapshots(repo)) >= 1, what="first job syncs")
    good = cfg.read_text()
    cfg.write_text(good + "[[job]]\nname = 'broken'\nmode = 'sometimes'\n")
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in d.text(), what="reload refused")
    assert d.proc.poll() is None
    src2 = tmp_path / "src2"
    src2.mkdir()
    (src2 / "y").write_bytes(b"y")
    repo2 = init_repo(tmp_path / "repo2")
    cfg.write_text(good + job_toml("second", src2, repo2))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(snapshots(repo2)) >= 1, what="new job syncs after SIGHUP")
    assert set(status(state)["jobs"]) == {"local", "second"}
    assert d.stop() == 0


def test_schedule_mode_and_json_logs(tmp_path, daemons):
    """Scheduled syncs of an unchanged source: one commit, then checks that commit nothing but count as
    successes (the status file's last_success moves, the lag stays low)."""
    src, repo, state, cfg = _setup(tmp_path, mode="every 1 seconds")
    (src / "x").write_bytes(b"x")
    d = daemons(cfg, tmp_path / "daemon.log").start("--log-format", "json")
    wait_for(lambda: snapshots(repo), what="a first scheduled sync")
    def job_status() -> dict:
        return status(state).get("jobs", {}).get("local", {})

    first = wait_for(lambda: job_status().get("last_success"), what="a first success")
    wait_for(lambda: (job_status().get("last_success") or 0) > first + 1.5,
             what="later scheduled syncs recorded as successes")
    job = job_status()
    assert job["last_error"] is None and job["lag_seconds"] < 5 and job["last_snapshot"] == snapshots(repo)[0]["id"]
    assert d.stop() == 0
    assert len(snapshots(repo)) == 1
    events = [json.loads(line) for line in d.text().splitlines()]
    commits = [e for e in events if e["message"] == "snapshot committed"]
    checks = [e for e in events if e["message"] == "no change since snapshot"]
    assert len(commits) == 1 and all(e["job"] == "local" and "snapshot" in e for e in commits)
    assert checks and all(e["snapshot"] == commits[0]["snapshot"] for e in checks)


def test_job_lock_across_processes(tmp_path, daemons):
    """A second daemon on the same state dir never syncs the job at the same time: it backs off."""
    from replicator.daemon.service import JobLock, JobLocked

    with JobLock(str(tmp_path), "j"):
        try:
            with JobLock(str(tmp_path), "j"):
                raise AssertionError("second lock acquired")
        except JobLocked as exc:
            assert exc.retryable and f"pid {os.getpid()}" in str(exc)
    with JobLock(str(tmp_path), "j"):
        pass


def test_prometheus_metrics_are_served(tmp_path, daemons):
    import urllib.request

    from tests.transport.conftest import free_port

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"x" * 5000)
    repo = init_repo(tmp_path / "repo")
    port = free_port()
    cfg = write_config(tmp_path / "r.toml", tmp_path / "state", job_toml("local", src, repo),
                       metrics=f"127.0.0.1:{port}")
    d = daemons(cfg, tmp_path / "daemon.log").start()
    wait_for(lambda: len(snapshots(repo)) >= 1, what="first sync")

    def scrape() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return r.read().decode()
        except OSError:
            return ""

    wait_for(lambda: 'replicator_syncs_total{replicator_job="local"} 1.0' in scrape(),
             what="metrics after the first sync")
    text = scrape()
    for name in ("replicator_bytes_read_total", "replicator_chunks_new_total", "replicator_sync_duration_seconds",
                 "replicator_last_success_timestamp_seconds", "replicator_replication_lag_seconds"):
        assert f'{name}' in text, name
    assert 'replicator_bytes_read_total{replicator_job="local"} 5000.0' in text
    assert 'replicator_build_info{python="' in text
    wait_for(lambda: 'replicator_job_state{replicator_job="local",state="idle"} 1.0' in scrape(), what="state idle")
    assert d.stop() == 0

"""The daemon and a source that vanished: the job shows "failed" with the reason, the metric says
so, nothing is committed, no backoff as if it were transient, and the job commits again as soon
as the source is back.  Also: a passphrase file others can read is logged once per job."""
from __future__ import annotations

import os
import time
import urllib.request

from tests.daemon.conftest import init_repo, job_toml, snapshots, status, wait_for, write_config
from tests.transport.conftest import free_port


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


def _job(state, name: str) -> dict:
    return status(state).get("jobs", {}).get(name, {})


def test_vanished_source_fails_the_job_with_the_reason_and_the_metric(tmp_path, daemons):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"record-{i}.txt").write_text(f"patient {i}\n")
    marked = tmp_path / "marked"
    marked.mkdir()
    (marked / "a.txt").write_text("a\n")
    repo = init_repo(tmp_path / "repo")
    repo2 = init_repo(tmp_path / "repo2")
    state, port = tmp_path / "state", free_port()
    jobs = (job_toml("local", src, repo, rescan_interval=1)
            + job_toml("marked", marked, repo2, rescan_interval=1, require_marker=".stfolder"))
    cfg = write_config(tmp_path / "r.toml", state, jobs, metrics=f"127.0.0.1:{port}")
    d = daemons(cfg, tmp_path / "daemon.log").start()
    wait_for(lambda: len(snapshots(repo)) >= 1, what="first sync")

    # the marker is missing from the start: refused, never committed
    job = wait_for(lambda: (j := _job(state, "marked")).get("state") == "failed" and j, what="marked job failed")
    assert job["refused"] == "marker" and ".stfolder" in job["last_error"]
    assert 'replicator_source_refused{reason="marker",replicator_job="marked"} 1.0' in _scrape(port)
    assert snapshots(repo2) == []

    # the volume "unmounts": an empty directory where the files were
    for name in os.listdir(src):
        os.unlink(src / name)
    job = wait_for(lambda: (j := _job(state, "local")).get("state") == "failed" and j, what="job failed")
    assert job["refused"] == "empty" and "is empty" in job["last_error"] and "4 files" in job["last_error"]
    text = wait_for(lambda: (t := _scrape(port)) and 'reason="empty",replicator_job="local"} 1.0' in t and t,
                    what="refusal metric")
    assert 'replicator_job_state{replicator_job="local",state="refused"} 1.0' in text
    assert 'replicator_job_state{replicator_job="local",state="failed"} 0.0' in text
    assert 'replicator_source_refused{reason="empty",replicator_job="local"} 1.0' in text
    assert 'replicator_source_refused{reason="shrunk",replicator_job="local"} 0.0' in text
    assert 'replicator_sync_errors_total{kind="permanent",replicator_job="local"}' in text
    assert "retrying in" not in d.text()  # no backoff as for a transient failure
    assert "source refused (empty)" in d.text() and "--confirm-source" in d.text()
    held = snapshots(repo)
    assert held[-1]["files"] == 4
    time.sleep(2.5)  # two more rescans: refused again, never committed
    assert snapshots(repo) == held and d.text().count("source refused (empty)") >= 2

    # the volume is back: committed at the next rescan, the refusal cleared
    for i in range(4):
        (src / f"record-{i}.txt").write_text(f"patient {i}\n")
    (marked / ".stfolder").mkdir()
    wait_for(lambda: len(snapshots(repo)) > len(held) and len(snapshots(repo2)) >= 1,
             what="syncs after the source came back")
    assert snapshots(repo)[len(held)]["files"] == 4
    job = wait_for(lambda: (j := _job(state, "local")).get("state") == "idle" and j, what="job idle")
    assert job["refused"] is None
    text = wait_for(lambda: (t := _scrape(port)) and 'reason="empty",replicator_job="local"} 0.0' in t and t,
                    what="metric 0")
    assert 'replicator_source_refused{reason="marker",replicator_job="marked"} 0.0' in text
    assert d.stop() == 0


def test_readable_passphrase_file_is_logged_once(tmp_path, daemons):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    repo = init_repo(tmp_path / "repo")
    pw = tmp_path / "passphrase"
    pw.write_text("correct horse battery staple\n")
    os.chmod(pw, 0o644)
    cfg = write_config(tmp_path / "r.toml", tmp_path / "state",
                       job_toml("local", src, repo, passphrase_file=str(pw), mode="every 1 seconds"))
    d = daemons(cfg, tmp_path / "daemon.log").start()
    # an unchanged tree commits no snapshot: count the syncs the daemon logs instead
    wait_for(lambda: d.text().count("snapshot committed") + d.text().count("no change since snapshot") >= 3,
             what="three syncs")
    assert d.stop() == 0
    lines = [ln for ln in d.text().splitlines() if "passphrase file" in ln]
    assert len(lines) == 1, d.text()
    assert str(pw) in lines[0] and "0644" in lines[0] and "WARNING" in lines[0].upper()

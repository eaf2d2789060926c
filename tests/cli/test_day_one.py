"""What a hospital sysadmin expects on day one: ``status`` as a Nagios/Icinga check, a quiet broken
pipe, ``restore --source`` naming the sources there are, ``daemon --check`` listing every missing file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from replicator.app.status import CHECK_CRITICAL, CHECK_OK, CHECK_UNKNOWN, CHECK_WARNING, evaluate
from tests.conftest import PASSPHRASE, ROOT, run_cli

DEAD_PID = 2**31 - 1  # above any pid_max: os.kill says ESRCH


def _job(**over) -> dict:
    job = {"state": "idle", "source": "/data/src", "destination": "/srv/repo", "last_success": time.time() - 5,
           "last_snapshot": "ab" * 32, "last_generation": 3, "last_error": None, "last_error_time": None,
           "failures": 0, "refused": None, "lag_seconds": 0.0}
    job.update(over)
    return job


def _doc(jobs: dict, *, pid: int | None = None, updated: float | None = None) -> dict:
    return {"pid": os.getpid() if pid is None else pid, "updated": time.time() if updated is None else updated,
            "started": time.time() - 100, "config": "/etc/replicator/replicator.toml", "jobs": jobs}


def _status(tmp_path, doc, *extra: str) -> subprocess.CompletedProcess:
    if doc is not None:
        (tmp_path / "status.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return run_cli("status", "--state-dir", str(tmp_path), *extra, passphrase=None, timeout=60)


# --- 2. status as a monitoring check --------------------------------------------------------------

@pytest.mark.parametrize("jobs, kw, code, words", [  # times relative to collection: only gaps matter
    ({"a": _job(), "b": _job()}, {}, CHECK_OK, "2 jobs"),
    ({"a": _job(), "b": _job(state="syncing", last_success=None, last_snapshot=None)}, {}, CHECK_WARNING,
     "b: no snapshot committed yet"),
    ({"a": _job(last_success=time.time() - 7200)}, {"max_age": 3600}, CHECK_WARNING, "a: last success"),
    ({"a": _job(last_success=time.time() - 7200)}, {}, CHECK_OK, "1 job"),
    ({"a": _job(state="failed", failures=1, last_error="disk full")}, {}, CHECK_CRITICAL, "a: failed"),
    ({"a": _job(state="retrying", failures=2, last_error="connection refused")}, {}, CHECK_CRITICAL,
     "connection refused"),
    ({"a": _job(state="syncing", failures=2, last_error="connection refused")}, {}, CHECK_CRITICAL,
     "connection refused"),
    ({"a": _job(state="failed", failures=1, refused="empty", last_error="source is empty")}, {}, CHECK_CRITICAL,
     "a: source refused (empty)"),
    ({"a": _job(spot_check="failed: pack 12 does not match its name")}, {}, CHECK_CRITICAL, "spot check"),
])
def test_check_of_the_jobs(jobs, kw, code, words):
    check = evaluate(_doc(jobs), time.time(), **kw)
    assert check.code == code and words in check.summary, check.summary
    assert check.summary.startswith(f"REPLICATOR {('OK', 'WARNING', 'CRITICAL', 'UNKNOWN')[code]} - ")


def test_check_of_the_daemon():
    jobs = {"a": _job()}
    assert evaluate(_doc(jobs), time.time()).code == CHECK_OK
    dead = evaluate(_doc(jobs, pid=DEAD_PID), time.time())
    assert dead.code == CHECK_CRITICAL and "daemon not running" in dead.summary
    stopped = evaluate(_doc({"a": _job(state="stopped")}), time.time())
    assert stopped.code == CHECK_CRITICAL and "not running" in stopped.summary
    stale = evaluate(_doc(jobs, updated=time.time() - 600), time.time())
    assert stale.code == CHECK_CRITICAL and "not updated for 10 min" in stale.summary
    # the worst wins, and every problem is named
    both = evaluate(_doc({"a": _job(state="failed", failures=1, last_error="x"), "b": _job(last_success=None)}),
                    time.time())
    assert both.code == CHECK_CRITICAL and "a: failed" in both.summary and "b: no snapshot" in both.summary


@pytest.mark.parametrize("make, code, first", [
    (lambda: _doc({"a": _job()}), CHECK_OK, "REPLICATOR OK - "),
    (lambda: _doc({"a": _job(last_success=None)}), CHECK_WARNING, "REPLICATOR WARNING - "),
    (lambda: _doc({"a": _job(state="failed", failures=1, last_error="boom\x1b[31m")}), CHECK_CRITICAL,
     "REPLICATOR CRITICAL - "),
    (lambda: _doc({"a": _job()}, pid=DEAD_PID), CHECK_CRITICAL, "REPLICATOR CRITICAL - daemon not running"),
    (lambda: None, CHECK_UNKNOWN, "REPLICATOR UNKNOWN - no status file"),
    (lambda: "{not json", CHECK_UNKNOWN, "REPLICATOR UNKNOWN - "),
])
def test_status_exit_codes(tmp_path, make, code, first):
    r = _status(tmp_path, make())  # made now: a document made at collection would be stale by now
    assert r.returncode == code, r.stdout + r.stderr
    assert r.stdout.splitlines()[0].startswith(first), r.stdout
    assert "\x1b" not in r.stdout and "Traceback" not in r.stderr
    j = _status(tmp_path, None, "--json")
    assert j.returncode == code
    assert json.loads(j.stdout)["check"]["code"] == code


def test_status_thresholds_on_the_command_line(tmp_path):
    doc = _doc({"a": _job(last_success=time.time() - 7200)}, updated=time.time() - 90)
    assert _status(tmp_path, doc).returncode == CHECK_CRITICAL  # stale after 60 s by default
    r = _status(tmp_path, None, "--stale-after", "300", "--max-age", "3600")
    assert r.returncode == CHECK_WARNING and "last success 2.0 h ago" in r.stdout.splitlines()[0], r.stdout


@pytest.mark.parametrize("what", ["directory", "array"])
def test_status_unknown_when_unreadable(tmp_path, what):
    if what == "directory":  # unreadable, also for root (a mode-000 file is not)
        (tmp_path / "status.json").mkdir()
    else:
        (tmp_path / "status.json").write_text("[1, 2]")
    r = _status(tmp_path, None)
    assert r.returncode == CHECK_UNKNOWN and r.stdout.startswith("REPLICATOR UNKNOWN - "), r.stdout + r.stderr
    assert r.stderr == ""


# --- 3. a broken pipe exits quietly ---------------------------------------------------------------

def test_broken_pipe_is_quiet(tmp_path):
    jobs = {f"job-{i:05d}": _job() for i in range(20000)}  # megabytes of output: far more than a pipe holds
    (tmp_path / "status.json").write_text(json.dumps(_doc(jobs)))
    proc = subprocess.Popen([sys.executable, "-m", "replicator", "status", "--state-dir", str(tmp_path)],
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(100).startswith(b"REPLICATOR OK")  # like `| head -c 100`
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(30) == 141, err  # 128 + SIGPIPE: what a shell shows for `yes | head`
    assert err == b""


# --- 4. restore --source names the sources there are ----------------------------------------------

def test_restore_unknown_source_names_the_others(tmp_path):
    from replicator import constants as C
    from replicator.errors import RepositoryError
    from replicator.repo.repository import Repository
    from tests.conftest import sync_repo

    repo = Repository.init(str(tmp_path / "repo"), PASSPHRASE.encode(), log2n=C.SCRYPT_LOG2N_MIN)
    try:
        with pytest.raises(RepositoryError) as empty:
            repo.find_snapshot(None, "x")
        assert str(empty.value).endswith("has no snapshot of source 'x'")  # an empty repository: as before
        for name in ("a", "b"):
            src = tmp_path / name
            src.mkdir()
            (src / "f.txt").write_text(name)
            sync_repo(str(src), repo, name)
    finally:
        repo.close()
    r = run_cli("restore", str(tmp_path / "repo"), str(tmp_path / "out"), "--source", "x")
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip().endswith("has no snapshot of source 'x'; its sources: 'a', 'b'"), r.stderr


# --- 5. daemon --check reports every missing file --------------------------------------------------

def _config_with_missing_files(tmp_path):
    missing = tmp_path / "missing"
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "pw").write_text(PASSPHRASE)
    text = (f'state_dir = "{tmp_path / "state"}"\nmetrics_listen = "off"\n\n'
            f'[[job]]\nname = "ok"\nsource = "{src}"\ndestination = "{tmp_path / "repo"}"\n'
            f'passphrase_file = "{tmp_path / "pw"}"\n\n'
            f'[[job]]\nname = "remote"\nsource = "{missing / "data"}"\n'
            f'destination = "ssh://u@127.0.0.1:2222/r"\nidentity = "{missing / "key"}"\n'
            f'known_hosts = "{missing / "known_hosts"}"\npassphrase_file = "{missing / "pw"}"\n')
    cfg = tmp_path / "r.toml"
    cfg.write_text(text)
    return cfg


def test_check_lists_every_missing_file(tmp_path):
    cfg = _config_with_missing_files(tmp_path)
    r = run_cli("daemon", "--config", str(cfg), "--check", passphrase=None, timeout=60)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert [ln.split(": ")[3] for ln in lines] == ["job[1].source", "job[1].identity", "job[1].known_hosts",
                                                   "job[1].passphrase_file"], lines
    for ln, (line, what) in zip(lines, ((12, "does not exist"), (14, "does not exist"), (15, "does not exist"),
                                        (16, "does not exist"))):
        assert ln.startswith(f"replicator: error: {cfg}:{line}: job[1].") and what in ln, ln
        assert str(tmp_path / "missing") in ln


def test_daemon_refuses_to_start_with_missing_files(tmp_path):
    cfg = _config_with_missing_files(tmp_path)
    r = run_cli("daemon", "--config", str(cfg), passphrase=None, timeout=60)
    assert r.returncode == 2, r.stderr
    # The missing source is not among them: at start it fails only its own job (a volume mounted late).
    assert r.stderr.count("replicator: error: ") == 3 and "job[1].known_hosts" in r.stderr, r.stderr
    assert "job[1].source" not in r.stderr
    assert not (tmp_path / "state" / "status.json").exists()


def test_check_unreadable_and_not_a_directory(tmp_path):
    from replicator.app.config import check_files, load_config

    cfg = _config_with_missing_files(tmp_path)
    (tmp_path / "missing").mkdir()
    (tmp_path / "missing" / "data").write_text("a file, not a directory")
    for name in ("key", "known_hosts", "pw"):
        (tmp_path / "missing" / name).write_text("x")
    problems = check_files(load_config(str(cfg)))
    assert len(problems) == 1 and "job[1].source" in problems[0] and "not a directory" in problems[0], problems
    os.unlink(tmp_path / "missing" / "key")
    (tmp_path / "missing" / "key").mkdir()  # unreadable as a file, also for root
    (tmp_path / "missing" / "pw").write_text("")
    problems = check_files(load_config(str(cfg)))
    assert [p.split(": ")[1:] for p in problems] == [
        ["job[1].source", f"{tmp_path / 'missing' / 'data'} is not a directory"],
        ["job[1].identity", f"{tmp_path / 'missing' / 'key'} is a directory, not a file"],
        ["job[1].passphrase_file", f"{tmp_path / 'missing' / 'pw'} is empty"]], problems

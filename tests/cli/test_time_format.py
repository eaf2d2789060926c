"""One time format in every output: RFC 3339, UTC, to the second, with a ``Z`` (replicator/times.py).

Each command that shows a time is run and every time it prints is checked against that pattern:
``snapshots`` (table and --json), ``forget`` (table), ``status`` (text and --json, including a status
file an older daemon wrote with Unix times only), the audit log's lines, and the log lines of the
daemon's formats (text and JSON; ``serve``'s are checked in test_serve_cmd.py).  Any other spelling
(``2026-12-02 07:13:48 UTC``, a local time, ``+0100``) fails here.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time

import pytest

from replicator.times import parse_rfc3339
from tests.conftest import run_cli, sync_repo

RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
ANY_DATE = r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d)?\S*"  # anything that looks like a time, well spelled or not


def _times_in(text: str) -> list[str]:
    found = re.findall(ANY_DATE, text)
    assert found, f"no time at all in {text!r}"
    return found


def _all_rfc3339(text: str) -> None:
    for t in _times_in(text):
        assert re.fullmatch(RFC3339, t.rstrip("!,;:)")), f"{t!r} is not RFC 3339 UTC in:\n{text}"


@pytest.fixture
def repo_with_snapshots(tmp_path):
    from replicator.repo.repository import Repository

    repo = tmp_path / "repo"
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    src = tmp_path / "src"
    src.mkdir()
    from tests.conftest import PASSPHRASE

    with Repository.open(str(repo), PASSPHRASE.encode(), exclusive=True) as r:
        for i in range(2):
            (src / f"f{i}").write_bytes(b"x" * (i + 1))
            sync_repo(str(src), r, "hospitals")
    return repo


def test_snapshots_table_and_json(repo_with_snapshots):
    r = run_cli("snapshots", str(repo_with_snapshots))
    assert r.returncode == 0, r.stderr
    _all_rfc3339(r.stdout)
    r = run_cli("snapshots", str(repo_with_snapshots), "--json")
    rows = json.loads(r.stdout)["snapshots"]
    assert len(rows) == 2
    for row in rows:
        assert re.fullmatch(RFC3339, row["time"]), row
        assert parse_rfc3339(row["time"]) == row["time_ns"] // 1_000_000_000


def test_forget_table(repo_with_snapshots):
    r = run_cli("forget", str(repo_with_snapshots), "--keep-last", "1", "--dry-run")
    assert r.returncode == 0, r.stderr
    _all_rfc3339(r.stdout)
    r = run_cli("forget", str(repo_with_snapshots), "--keep-last", "1", "--dry-run", "--json")
    for row in json.loads(r.stdout)["snapshots"]:
        assert re.fullmatch(RFC3339, row["time"]), row


def test_audit_log_lines(repo_with_snapshots, tmp_path):
    audit = tmp_path / "audit.jsonl"
    r = run_cli("forget", str(repo_with_snapshots), "--keep-last", "1", "--audit-log", str(audit))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert lines and all(re.fullmatch(RFC3339, line["time"]) for line in lines), lines


def _status_file(state, now: float) -> None:
    """A status file as a daemon without the RFC 3339 twins wrote it: Unix seconds only."""
    state.mkdir()
    job = {"state": "failed", "source": "/src", "destination": "/dst", "last_success": now - 7200,
           "last_snapshot": "ab" * 32, "last_generation": 3, "last_error": "the other site is down",
           "last_error_time": now - 5, "failures": 2, "next_retry": now + 60, "spot_check_time": now - 3600,
           "lag_seconds": 7200.0}
    doc = {"pid": os.getpid(), "updated": now, "started": now - 9000, "config": "/etc/r.toml",
           "jobs": {"hospitals": job}}
    (state / "status.json").write_text(json.dumps(doc))


def test_status_text_and_json(tmp_path):
    now = time.time()
    _status_file(tmp_path / "state", now)
    r = run_cli("status", "--state-dir", str(tmp_path / "state"), passphrase=None)
    _all_rfc3339(r.stdout)
    assert len(_times_in(r.stdout)) >= 3, r.stdout  # updated, last success, last error
    r = run_cli("status", "--state-dir", str(tmp_path / "state"), "--json", passphrase=None)
    doc = json.loads(r.stdout)
    job = doc["jobs"]["hospitals"]
    for holder, name in [(doc, "updated"), (doc, "started"), (job, "last_success"), (job, "last_error_time"),
                         (job, "next_retry"), (job, "spot_check_time")]:
        assert re.fullmatch(RFC3339, holder[f"{name}_iso"]), (name, holder)
        assert abs(parse_rfc3339(holder[f"{name}_iso"]) - holder[name]) < 1


def test_status_file_written_by_the_daemon_has_the_twins(tmp_path):
    from replicator.app.status import read_status, write_status

    now = time.time()
    write_status(str(tmp_path), {"pid": 1, "updated": now, "started": now, "jobs": {
        "j": {"last_success": None, "last_error_time": now}}})
    doc = read_status(str(tmp_path))
    assert re.fullmatch(RFC3339, doc["updated_iso"]) and doc["jobs"]["j"]["last_success_iso"] is None
    assert re.fullmatch(RFC3339, doc["jobs"]["j"]["last_error_time_iso"])


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines(fmt, capsys):
    from replicator.app.log import JobLogger, setup_logging

    logger = logging.getLogger("replicator")
    saved = logger.level, logger.propagate, list(logger.handlers)
    setup_logging(fmt)
    try:
        JobLogger("hospitals").info("snapshot committed", fields={"files": 3})
        logging.getLogger("replicator.serve").warning("a peer went away")
    finally:  # leave the logger as pytest's capture expects it
        logger.handlers[:] = saved[2]
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    for line in lines:
        stamp = json.loads(line)["time"] if fmt == "json" else line.split(" ", 1)[0]
        assert re.fullmatch(RFC3339, stamp), line
        assert abs(parse_rfc3339(stamp) - time.time()) < 60

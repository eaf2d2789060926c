"""``replicator serve`` at start: what it refuses (one line, its exit code) and how it logs.

* a ``--listen`` port another process holds: exit EXIT_ADDRESS_IN_USE (10), not a storage error;
* a ``--repo NAME=PATH`` whose PATH is missing or not a repository: exit 3 naming it, before serving;
* the log lines are the daemon's (app/log.py): ``TIME level message`` with an RFC 3339 time, or JSON
  objects with ``--log-format json``;
* ``--stdio`` without ``--allow``: the repositories on its command line are the ones the peer may write
  (the OpenSSH ``command="replicator serve --stdio --repo ..."`` recipe).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from replicator import constants as C
from replicator.transport import protocol as P
from tests.conftest import ROOT, run_cli

RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@pytest.fixture
def keys(tmp_path):
    from replicator.transport.ssh import generate_key

    generate_key(str(tmp_path / "host_key"))
    (tmp_path / "authorized_keys").write_text("")
    return tmp_path


def _repo(tmp_path, name="repo"):
    path = tmp_path / name
    r = run_cli("init", str(path), "--kdf-work", "14", "-q")
    assert r.returncode == 0, r.stderr
    return path


def _listen_args(keys, port, *repos):
    return ["serve", "--listen", f"127.0.0.1:{port}", *[a for r in repos for a in ("--repo", r)],
            "--host-key", str(keys / "host_key"), "--authorized-keys", str(keys / "authorized_keys")]


def _one_error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("replicator: error: "), r.stderr
    return lines[0]


def test_port_in_use_is_its_own_exit_code(keys, tmp_path):
    repo = _repo(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = run_cli(*_listen_args(keys, port, f"hospitals={repo}"), passphrase=None, timeout=60)
    assert r.returncode == C.EXIT_ADDRESS_IN_USE, (r.returncode, r.stderr)
    line = _one_error_line(r)
    assert f"127.0.0.1:{port}" in line and "already in use" in line


@pytest.mark.parametrize("make", ["missing", "empty_dir", "a_file"])
@pytest.mark.parametrize("mode", ["listen", "stdio", "verify-only"])
def test_repo_that_is_not_a_repository_is_refused_at_start(keys, tmp_path, make, mode):
    good = _repo(tmp_path)
    bad = tmp_path / "not-a-repo"
    if make == "empty_dir":
        bad.mkdir()
    elif make == "a_file":
        bad.write_text("x")
    repos = [f"hospitals={good}", f"archive={bad}"]
    if mode == "listen":
        args = _listen_args(keys, 1, *repos)  # refused before it binds: the port is never tried
    else:
        args = ["serve", f"--{mode}", *[a for r in repos for a in ("--repo", r)]]
    r = run_cli(*args, passphrase=None, timeout=60)
    assert r.returncode == C.EXIT_REPOSITORY, (r.returncode, r.stdout, r.stderr)
    line = _one_error_line(r)
    assert "archive" in line and str(bad) in line, line


def _serve_log(keys, tmp_path, *extra) -> str:
    from tests.transport.conftest import free_port

    repo = _repo(tmp_path)
    port = free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}
    proc = subprocess.Popen([sys.executable, "-m", "replicator", *_listen_args(keys, port, f"hospitals={repo}"),
                             *extra], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"))
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(20)
    return log.read_text()


def test_logs_in_the_daemons_text_format(keys, tmp_path):
    lines = _serve_log(keys, tmp_path).splitlines()
    listening = [line for line in lines if "listening on" in line]
    assert listening and re.fullmatch(rf"{RFC3339} info listening on 127\.0\.0\.1:\d+, serving hospitals=.*",
                                      listening[0]), lines


def test_logs_json_with_log_format_json(keys, tmp_path):
    docs = [json.loads(line) for line in _serve_log(keys, tmp_path, "--log-format", "json").splitlines()]
    listening = [d for d in docs if d["message"].startswith("listening on")]
    assert listening and listening[0]["level"] == "info", docs
    assert all(re.fullmatch(RFC3339, d["time"]) for d in docs), docs


async def _stdio(repo, *args: str) -> list:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "replicator", "serve", "--stdio", "--repo", f"hospitals={repo}", *args, cwd=ROOT,
        env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    proc.stdin.write(P.Hello().encode() + P.Open("hospitals", P.MODE_WRITE).encode())
    await proc.stdin.drain()
    got = [await asyncio.wait_for(P.read_message(proc.stdout), 30) for _ in range(2)]
    proc.stdin.close()
    await asyncio.wait_for(proc.wait(), 30)
    return got


def test_stdio_without_allow_grants_its_repositories(tmp_path):
    repo = _repo(tmp_path)
    hello, answer = asyncio.run(_stdio(repo))
    assert isinstance(hello, P.Hello) and isinstance(answer, P.OpenOk), answer


def test_stdio_with_allow_grants_only_that(tmp_path):
    repo = _repo(tmp_path)
    _hello, answer = asyncio.run(_stdio(repo, "--allow", "hospitals:r"))
    assert isinstance(answer, P.Error) and "not allowed" in answer.message, answer


def test_stdio_on_a_file_is_a_usage_error_not_a_hang(tmp_path):
    """By hand, stdin is a terminal or a file: the event loop cannot watch it; one line, exit 2, at once."""
    repo = _repo(tmp_path)
    r = run_cli("serve", "--stdio", "--repo", f"hospitals={repo}", passphrase=None, timeout=60)  # stdin: /dev/null
    assert r.returncode == C.EXIT_USAGE, (r.returncode, r.stderr)
    assert "not a pipe or socket" in _one_error_line(r)

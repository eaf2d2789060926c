"""Helpers for daemon tests: a config writer, a real `replicator daemon` subprocess, polling.

Every daemon is started with its stderr in a log file and stopped (SIGTERM, then
SIGKILL) at the end of the test.  Timeouts are generous: they bound a hang, they
never measure performance.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, ROOT, run_cli

TIMEOUT = 60.0


def wait_for(pred, timeout: float = TIMEOUT, what: str = "condition", interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def job_toml(name: str, source, destination, **extra) -> str:
    lines = ["[[job]]", f'name = "{name}"', f'source = "{source}"', f'destination = "{destination}"',
             "debounce = 0.3", "max_delay = 2"]
    for k, v in extra.items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def write_config(path: Path, state_dir: Path, jobs: str, metrics: str = "off") -> Path:
    path.write_text(f'state_dir = "{state_dir}"\nmetrics_listen = "{metrics}"\n\n{jobs}')
    return path


class Daemon:
    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen | None = None

    def start(self, *extra: str) -> Daemon:
        env = dict(os.environ, REPLICATOR_PASSPHRASE=PASSPHRASE)
        self.proc = subprocess.Popen([sys.executable, "-m", "replicator", "daemon", "--config", str(self.config),
                                      *extra], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"), env=env)
        return self

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


@pytest.fixture
def daemons():
    started: list[Daemon] = []

    def make(config: Path, log: Path) -> Daemon:
        d = Daemon(config, log)
        started.append(d)
        return d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def snapshots(repo) -> list[dict]:
    r = run_cli("snapshots", str(repo), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["snapshots"]


def status(state_dir) -> dict:
    try:
        return json.loads((Path(state_dir) / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def restored(repo, target: Path) -> dict[str, bytes]:
    """Restore the latest snapshot into ``target``; :returns: relative path -> content of every file."""
    r = run_cli("restore", str(repo), str(target), "-q")
    assert r.returncode == 0, r.stderr
    return tree_files(target)


def tree_files(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def init_repo(path: Path) -> Path:
    r = run_cli("init", str(path), "--kdf-work", "14", "-q")
    assert r.returncode == 0, r.stderr
    return path

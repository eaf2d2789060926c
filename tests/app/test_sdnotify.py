"""systemd notification (app/sdnotify.py): a real unix datagram socket stands in for systemd's NOTIFY_SOCKET.

The module is tested alone (path and abstract sockets, the watchdog interval), then as systemd sees it:
a real ``replicator daemon`` and a real ``replicator serve --listen`` must send READY=1 only once they
serve (the jobs loaded; the port bound), STATUS= lines, WATCHDOG=1 at half of $WATCHDOG_USEC, and
STOPPING=1 on SIGTERM.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from replicator.app.sdnotify import Notifier, watchdog_interval
from tests.conftest import PASSPHRASE, ROOT, run_cli

RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


class FakeSystemd:
    """A bound AF_UNIX datagram socket, as systemd's notification socket; collects what arrives."""

    def __init__(self, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"replicator-test-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
            self._dir = None
        else:  # a short directory: sun_path holds 108 bytes
            self._dir = tempfile.mkdtemp(prefix="rn", dir="/tmp")
            self.address = os.path.join(self._dir, "notify")
            self.sock.bind(self.address)
        self.sock.settimeout(0.2)
        self.messages: list[list[str]] = []  # each datagram, split in lines

    def drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                return
            self.messages.append(data.decode().split("\n"))

    def lines(self) -> list[str]:
        return [line for m in self.messages for line in m]

    def wait(self, pattern: str, timeout: float = 60.0, count: int = 1) -> list[str]:
        """Wait until ``count`` lines match ``pattern``; :returns: those lines."""
        deadline = time.monotonic() + timeout
        while True:
            self.drain()
            hits = [line for line in self.lines() if re.fullmatch(pattern, line)]
            if len(hits) >= count:
                return hits
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} x {pattern!r} from the process; got {self.lines()}")

    def close(self) -> None:
        self.sock.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def systemd():
    made: list[FakeSystemd] = []

    def make(abstract: bool = False) -> FakeSystemd:
        made.append(FakeSystemd(abstract))
        return made[-1]

    yield make
    for s in made:
        s.close()


# --- the module alone ---------------------------------------------------------------------

@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_messages_reach_the_socket(systemd, abstract):
    sd = systemd(abstract)
    n = Notifier(sd.address, watchdog=0.05)
    n.ready("listening")
    n.status("listening")  # unchanged: not sent again
    n.status("idle, last sync 2026-01-01T00:00:00Z")
    n.tick()
    n.stopping()
    n.close()
    sd.drain()
    assert sd.messages == [["READY=1", "STATUS=listening"], ["STATUS=idle, last sync 2026-01-01T00:00:00Z"],
                           ["WATCHDOG=1"], ["STOPPING=1"]]


def test_without_a_socket_nothing_is_sent_and_nothing_fails(systemd):
    n = Notifier(None, watchdog=1.0)
    assert not n.enabled and n.watchdog is None and n.tick() is None and n.send("READY=1") is False
    gone = systemd()
    n = Notifier(gone.address)
    gone.close()  # systemd restarted: sending fails quietly, replication goes on
    assert n.send("READY=1") is False
    assert Notifier("vsock:2:1234").enabled is False  # not a transport this module speaks


def test_watchdog_interval_is_half_of_watchdog_usec():
    assert watchdog_interval("30000000", None, 42) == 15.0
    assert watchdog_interval("30000000", "42", 42) == 15.0
    assert watchdog_interval("30000000", "43", 42) is None  # another process's watchdog
    for bad in (None, "", "0", "-5", "soon"):
        assert watchdog_interval(bad, None, 42) is None


def test_tick_pings_only_when_due(systemd):
    sd = systemd()
    n = Notifier(sd.address, watchdog=30.0)
    assert n.tick() == pytest.approx(30.0, abs=1)  # the first tick pings
    assert 0 < n.tick() <= 30.0  # the second is not due yet
    sd.drain()
    assert sd.lines() == ["WATCHDOG=1"]


# --- a real daemon and a real serve, as systemd runs them ---------------------------------

def _env(sd: FakeSystemd, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATOR_", "NOTIFY_", "WATCHDOG_"))}
    env.update(NOTIFY_SOCKET=sd.address, WATCHDOG_USEC="400000", **extra)  # a ping every 0.2 s
    return env


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def test_daemon_notifies_ready_status_watchdog_stopping(tmp_path, systemd):
    from tests.daemon.conftest import init_repo, job_toml, status, write_config

    sd = systemd()
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "r.toml", state, job_toml("hospitals", src, init_repo(tmp_path / "repo")))
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen([sys.executable, "-m", "replicator", "daemon", "--config", str(cfg)], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(log, "wb"),
                            env=_env(sd, REPLICATOR_PASSPHRASE=PASSPHRASE))
    try:
        sd.wait("READY=1")
        assert "hospitals" in (status(state).get("jobs") or {}), "READY=1 before the jobs were loaded"
        sd.wait(rf"STATUS=idle, last sync {RFC3339}")
        sd.wait("WATCHDOG=1", count=3, timeout=20)
        assert any(line.startswith("STATUS=syncing hospitals") for line in sd.lines()), sd.lines()
    finally:
        rc = _stop(proc)
    assert rc == 0, log.read_text()
    sd.wait("STOPPING=1", timeout=5)


def test_serve_notifies_ready_after_binding(tmp_path, systemd):
    from replicator.transport.ssh import generate_key
    from tests.transport.conftest import free_port

    sd = systemd(abstract=True)
    generate_key(str(tmp_path / "host_key"))
    (tmp_path / "authorized_keys").write_text("")
    repo = tmp_path / "repo"
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    port = free_port()
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "replicator", "serve", "--listen", f"127.0.0.1:{port}",
                             "--repo", f"hospitals={repo}", "--host-key", str(tmp_path / "host_key"),
                             "--authorized-keys", str(tmp_path / "authorized_keys")], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(log, "wb"), env=_env(sd))
    try:
        sd.wait("READY=1", timeout=30)
        socket.create_connection(("127.0.0.1", port), 2).close()  # READY=1 means the port is bound
        sd.wait(rf"STATUS=listening on 127\.0\.0\.1:{port}, serving hospitals.*")
        sd.wait("WATCHDOG=1", count=3, timeout=20)
    finally:
        rc = _stop(proc)
    assert rc == 0, Path(log).read_text()
    sd.wait("STOPPING=1", timeout=5)


@pytest.mark.parametrize("unit", ["replicator-daemon.service", "replicator-serve.service"])
def test_units_wait_for_ready_and_set_a_watchdog(unit):
    """Type=simple would call the unit started before the jobs load or the port is bound, and no
    WatchdogSec means nobody restarts a hung process."""
    settings = {}
    for line in (ROOT / "packaging" / unit).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings[key.strip()] = value.strip()
    assert settings.get("Type") == "notify" and settings.get("NotifyAccess", "main") == "main", settings
    assert re.fullmatch(r"\d+s", settings.get("WatchdogSec", "")), settings

"""Replication lag of the daemon over loopback SSH.

Time from a file closed at the source until a snapshot containing it is
committed at the secondary (`replicator serve`), and until the file is
readable, whole, in the secondary's live mirror (`serve --mirror`), for a
small file and a large one (100 MiB; 20 MiB with BENCH_QUICK=1).  The daemon runs as a real process
with debounce 0.5 s / max_delay 5 s (recorded in extra_info); the end point is
read from the daemon's status file (state idle, no pending change, last
success after the write) and checked afterwards by restoring the file.
Timings are never asserted.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks.conftest import QUICK, MiB
from tests.conftest import PASSPHRASE, ROOT, run_cli
from tests.transport.conftest import SshSite, free_port, start_server, stop_server

DEBOUNCE, MAX_DELAY = 0.5, 5.0


@pytest.fixture(scope="module")
def lag_daemon(tmp_path_factory):
    from replicator.transport.ssh import generate_key

    tmp = tmp_path_factory.mktemp("lag")
    keys = {n: tmp / f"{n}_key" for n in ("host", "writer")}
    for n, p in keys.items():
        generate_key(str(p), n)
    (tmp / "authorized_keys").write_text(f'replicator-repos="amiens:rw" {(tmp / "writer_key.pub").read_text().strip()}\n')
    repo = tmp / "secondary"
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q", passphrase=PASSPHRASE).returncode == 0
    site = SshSite(tmp=tmp, repo=repo, port=free_port(), host_key=keys.pop("host"), host_fp="", keys=keys,
                   known_hosts=tmp / "known_hosts")
    mirror = tmp / "mirror"
    (tmp / "passphrase").write_text(PASSPHRASE + "\n")
    start_server(site, extra_args=["--mirror", f"amiens={mirror}", "--passphrase-file", str(tmp / "passphrase")])
    site.pin()
    src, state = tmp / "src", tmp / "state"
    src.mkdir()
    (src / "seed").write_bytes(b"seed")
    cfg = tmp / "r.toml"
    cfg.write_text(f'state_dir = "{state}"\nmetrics_listen = "off"\n[[job]]\nname = "lag"\nsource = "{src}"\n'
                   f'destination = "{site.url()}"\nidentity = "{keys["writer"]}"\nknown_hosts = "{site.known_hosts}"\n'
                   f"debounce = {DEBOUNCE}\nmax_delay = {MAX_DELAY}\n")
    proc = subprocess.Popen([sys.executable, "-m", "replicator", "daemon", "--config", str(cfg)], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(tmp / "daemon.log", "wb"),
                            env=dict(os.environ, REPLICATOR_PASSPHRASE=PASSPHRASE))
    assert _wait_committed(state, 0.0, 120) is not None, (tmp / "daemon.log").read_text()
    yield site, src, state, mirror
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    stop_server(site)


def _wait_committed(state, after: float, timeout: float = 300) -> float | None:
    """Poll the status file until a snapshot committed after ``after`` with nothing pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            job = json.loads((state / "status.json").read_text())["jobs"]["lag"]
        except (OSError, ValueError, KeyError):
            job = {}
        if job.get("state") == "idle" and not job.get("pending_changes") and (job.get("last_success") or 0) > after:
            return time.time()
        time.sleep(0.02)
    return None


@pytest.mark.parametrize("size", [4096, (20 if QUICK else 100) * MiB], ids=["small", "large"])
@pytest.mark.benchmark(group="daemon-lag")
def test_lag_to_secondary_and_mirror(benchmark, lag_daemon, size, tmp_path):
    site, src, state, mirror = lag_daemon
    name = f"lag-{size}-{time.monotonic_ns()}.bin"
    result = {}

    def once():
        data = os.urandom(size)
        with open(src / name, "wb") as f:
            f.write(data)
        written = time.time()
        done = _wait_committed(state, written)
        assert done is not None, "not committed within 300 s"
        result["lag"] = done - written
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if (mirror / name).stat().st_size == size:  # renamed into place whole, never partial
                    break
            except OSError:
                pass
            time.sleep(0.01)
        else:
            raise AssertionError("not in the mirror within 300 s")
        result["mirror"] = time.time() - written
        assert (mirror / name).read_bytes() == data

    benchmark.pedantic(once, rounds=1, iterations=1)
    r = run_cli("restore", str(site.repo), str(tmp_path / "r"), "--path", name, "-q", passphrase=PASSPHRASE)
    assert r.returncode == 0 and (tmp_path / "r" / name).stat().st_size == size, r.stderr
    benchmark.extra_info.update(bytes=size, lag_seconds=round(result["lag"], 3),
                                mirror_lag_seconds=round(result["mirror"], 3), debounce=DEBOUNCE, max_delay=MAX_DELAY,
                                measures="file closed at the source -> snapshot committed at the secondary "
                                "(lag_seconds) and -> readable in its live mirror (mirror_lag_seconds); loopback SSH")

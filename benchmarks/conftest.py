"""Shared benchmark fixtures: seeded corpora, measured subprocesses, MB/s.

BENCH_QUICK=1 (used by `make test` in CI) shrinks every data set so the suite
runs in about a minute while still executing every benchmark.  End-to-end
benchmarks run every tool, ours included, as a subprocess, so wall time and
peak memory (from wait4) are measured the same way for all of them.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from benchmarks.measure import Measured, run_measured  # noqa: F401  (re-exported for the benchmarks)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

QUICK = os.environ.get("BENCH_QUICK") == "1"
MiB = 1024 * 1024
CORPUS_SIZE = (24 if QUICK else 256) * MiB
SCALES = [8 * MiB, 16 * MiB] if QUICK else [64 * MiB, 128 * MiB, 256 * MiB]
ROUNDS = 1 if QUICK else 3
PASSPHRASE = "benchmark passphrase"
# Where the restore benchmarks write.  On this project's ext4 disk, after a few restores and deletions of the
# 25,219-file tree, file creation itself took most of a restore (perf: 44% of all samples in ext4's
# recently_deleted, called by ext4_create), and it grew from run to run (the same restore took 6.4 s and
# 15.1 s in one benchmark): the figures measured the disk's history, not the tools.  A memory file system
# (the same one for every tool and path compared) takes that away; BENCH_RESTORE_DIR chooses another place.
RESTORE_DIR = os.environ.get("BENCH_RESTORE_DIR", "/dev/shm")


@contextlib.contextmanager
def restore_place(benchmark, tmp_path: Path, need: int):
    """A directory to restore into: a fresh one under ``RESTORE_DIR`` when it has ``need`` bytes free (four
    times over), else ``tmp_path``; which one goes into the benchmark's ``restored_into``."""
    if os.path.isdir(RESTORE_DIR) and shutil.disk_usage(RESTORE_DIR).free > 4 * need:
        with tempfile.TemporaryDirectory(dir=RESTORE_DIR, prefix="replicator-bench-") as into:
            benchmark.extra_info["restored_into"] = RESTORE_DIR
            yield Path(into)
    else:
        benchmark.extra_info["restored_into"] = "the benchmark's temporary directory"
        yield tmp_path


def record_rate(benchmark, nbytes: int, **extra) -> None:
    """Store bytes and MB/s (from the best round) in the benchmark's extra_info."""
    benchmark.extra_info["bytes"] = nbytes
    benchmark.extra_info.update(extra)
    if benchmark.stats is not None:
        benchmark.extra_info["MB/s"] = round(nbytes / benchmark.stats.stats.min / 1e6, 1)


def replicator_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "replicator", *args]


def dir_bytes(path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


@pytest.fixture(scope="session")
def corpus_day1(tmp_path_factory):
    from benchmarks import corpus

    root = tmp_path_factory.mktemp("corpus") / "day1"
    stats = corpus.generate(root, CORPUS_SIZE, seed=1)
    return root, stats


@pytest.fixture(scope="session")
def corpus_days(tmp_path_factory, corpus_day1):
    """(day1, day2): day2 is a copy of day1 with the "next day" mutation applied."""
    from benchmarks import corpus

    day1, _ = corpus_day1
    day2 = tmp_path_factory.mktemp("corpus2") / "day2"
    shutil.copytree(day1, day2, symlinks=True)
    corpus.mutate(day2, rate=0.05, seed=2)
    return day1, day2


def fresh_copy(src: Path, dst: Path) -> Path:
    """A working copy of a tree (mtimes kept) that a tool may read and a mutation may change."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)
    return dst


def served_site(tmp: Path, repo_name: str = "secondary", extra_serve=()):
    """A repository at ``tmp/repo_name`` served by ``replicator serve`` on a free loopback port, its host key
    pinned and one key, ``writer``, allowed to write it (``extra_serve``: more arguments for ``serve``).  Stop it
    with tests.transport.conftest.stop_server."""
    from replicator.transport.ssh import generate_key
    from tests.conftest import run_cli
    from tests.transport.conftest import SshSite, free_port, start_server

    keys = {n: tmp / f"{n}_key" for n in ("host", "writer")}
    for n, p in keys.items():
        generate_key(str(p), n)
    pub = (tmp / "writer_key.pub").read_text().strip()
    (tmp / "authorized_keys").write_text(f'replicator-repos="amiens:rw" {pub}\n')
    repo = tmp / repo_name
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    site = SshSite(tmp=tmp, repo=repo, port=free_port(), host_key=keys.pop("host"), host_fp="", keys=keys,
                   known_hosts=tmp / "known_hosts")
    start_server(site, extra_args=extra_serve)
    site.pin()
    return site


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A private OpenSSH server on a free loopback port, root login by key only."""
    if not shutil.which("rsync") or not (shutil.which("sshd") or os.path.exists("/usr/sbin/sshd")):
        pytest.skip("rsync or sshd not installed: no rsync-over-ssh comparison")
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    tmp = tmp_path_factory.mktemp("sshd")
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)], check=True)
    (tmp / "authorized_keys").write_text((tmp / "client.pub").read_text())
    os.chmod(tmp / "authorized_keys", 0o600)
    from tests.transport.conftest import free_port

    port = free_port()
    (tmp / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host'}\nAuthorizedKeysFile {tmp / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        f"StrictModes no\nUsePAM no\nPidFile {tmp / 'sshd.pid'}\n")
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(tmp / "sshd_config")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "sshd.log", "wb"))
    ssh = (f"ssh -p {port} -i {tmp / 'client'} -o UserKnownHostsFile={tmp / 'kh'} -o StrictHostKeyChecking=no "
           "-o BatchMode=yes -o Ciphers=aes128-gcm@openssh.com")
    deadline = time.monotonic() + 10
    while True:
        r = subprocess.run(ssh.split() + [f"{os.environ.get('USER', 'root')}@127.0.0.1", "true"],
                           capture_output=True)
        if r.returncode == 0:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.skip(f"private sshd did not start: {(tmp / 'sshd.log').read_text()[-300:]}")
        time.sleep(0.1)
    yield ssh, tmp
    proc.terminate()
    proc.wait()


def rsync_over_ssh(ssh: str, src, dest, *flags: str) -> tuple[float, int]:
    """``rsync -a --stats`` (plus ``flags``, e.g. "-z") of ``src`` into ``dest`` through the sshd fixture's ``ssh``
    command. :returns: wall seconds and "Total bytes sent"."""
    t0 = time.perf_counter()
    r = subprocess.run(["rsync", "-a", *flags, "--stats", "-e", ssh, f"{src}/",
                        f"{os.environ.get('USER', 'root')}@127.0.0.1:{dest}/"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    sent = int(re.search(r"Total bytes sent: ([\d,.]+)", r.stdout).group(1).replace(",", "").replace(".", ""))
    return wall, sent

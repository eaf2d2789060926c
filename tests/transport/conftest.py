"""A real `replicator serve` on 127.0.0.1 with generated keys, one per test.

Keys are made with replicator.transport.ssh.generate_key (asyncssh); the
authorized-keys file grants ``writer`` rw on "amiens", ``reader`` r only; the
``stranger`` key is not authorized.  The server process is stopped (SIGTERM,
then SIGKILL) at the end of each test.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, ROOT, run_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SshSite:
    tmp: Path
    repo: Path
    port: int
    host_key: Path
    host_fp: str
    keys: dict  # name -> private key path
    known_hosts: Path
    proc: subprocess.Popen | None = None
    log: Path | None = None

    def url(self, name: str = "amiens", user: str = "replicator") -> str:
        return f"ssh://{user}@127.0.0.1:{self.port}/{name}"

    def sync_args(self, src, *, key: str = "writer", name: str = "amiens", extra=()) -> list[str]:
        return ["sync", str(src), self.url(name), "--name", "s", "--identity", str(self.keys[key]),
                "--known-hosts", str(self.known_hosts), *extra]

    def remote(self, *args: str, key: str = "writer") -> list[str]:
        """``args`` with the options that reach this site as ``key`` (a command on ``self.url()``)."""
        return [*args, "--identity", str(self.keys[key]), "--known-hosts", str(self.known_hosts)]

    def pin(self) -> None:
        """Trust the host key (what --accept-host-key does on first contact)."""
        pub = Path(str(self.host_key) + ".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n")

    def snapshots(self) -> list[str]:
        d = self.repo / "snapshots"
        return sorted(os.listdir(d)) if d.exists() else []

    def server_log(self) -> str:
        return self.log.read_text() if self.log and self.log.exists() else ""

    def keyring(self):
        """The key holder's keys of the served repository (for raw-frame tests that must sign like a writer)."""
        from replicator.repo.keyring import Keyring

        return Keyring.unlock((self.repo / "config").read_bytes(), (self.repo / "keys" / "default").read_bytes(),
                              PASSPHRASE.encode(), str(self.repo))

    def pack_proof(self, name: str, ids) -> bytes:
        return self.keyring().declarer.pack(name.rsplit("/", 1)[-1], b"".join(sorted(ids)))

    def snapshot_proof(self, name: str) -> bytes:
        return self.keyring().declarer.snapshot(name.rsplit("/", 1)[-1])


def start_server(site: SshSite, extra_repos=(), extra_args=()) -> None:
    site.log = site.tmp / "serve.log"
    args = [sys.executable, "-m", "replicator", "serve", "--listen", f"127.0.0.1:{site.port}",
            "--repo", f"amiens={site.repo}", *[a for r in extra_repos for a in ("--repo", r)],
            "--host-key", str(site.host_key), "--authorized-keys", str(site.tmp / "authorized_keys"), *extra_args]
    site.proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=open(site.log, "wb"), env={k: v for k, v in os.environ.items()
                                                                    if k != "REPLICATOR_PASSPHRASE"})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if site.proc.poll() is not None:
            raise RuntimeError(f"serve exited: {site.server_log()}")
        try:
            socket.create_connection(("127.0.0.1", site.port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("serve did not start listening")


def stop_process(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; always waited for."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_server(site: SshSite) -> None:
    stop_process(site.proc)


@pytest.fixture
def site(tmp_path):
    from replicator.transport.ssh import generate_key

    keys = {}
    for name in ("host", "writer", "reader", "stranger"):
        keys[name] = tmp_path / f"{name}_key"
        generate_key(str(keys[name]), name)
    pub = {n: Path(str(p) + ".pub").read_text().strip() for n, p in keys.items()}
    (tmp_path / "authorized_keys").write_text(
        f'replicator-repos="amiens:rw" {pub["writer"]}\n'
        f'replicator-repos="amiens:r,archive:r" {pub["reader"]}\n')
    import asyncssh  # the test may use it to compute the fingerprint it expects

    host_fp = asyncssh.read_private_key(str(keys["host"])).get_fingerprint("sha256")
    repo = tmp_path / "secondary"
    r = run_cli("init", str(repo), "--kdf-work", "14", "-q")
    assert r.returncode == 0, r.stderr
    s = SshSite(tmp=tmp_path, repo=repo, port=free_port(), host_key=keys.pop("host"), host_fp=host_fp, keys=keys,
                known_hosts=tmp_path / "known_hosts")
    start_server(s)
    yield s
    stop_server(s)


def make_tree(root: Path, n_files: int, size: int, seed: int) -> None:
    import random

    rnd = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (root / f"scan-{i:03d}.dcm").write_bytes(rnd.randbytes(size))


__all__ = ["PASSPHRASE", "SshSite", "free_port", "make_tree", "start_server", "stop_process", "stop_server"]

"""The receiver under the distribution's OpenSSH sshd: the recipes of docs/OPERATIONS.md, for real.

Each test starts its own sshd on loopback (``sshd -D -e -f CONFIG``: its own config, host key and
authorized_keys in a temporary directory, a free high port, ``UsePAM no``, ``StrictModes no``) and
stops it at the end.  The replicator executable sshd runs is a two-line script around
``sys.executable -m replicator``.  Recipes:

* ``ForceCommand .../replicator serve --stdio --repo ...`` (the sender asks for the ``replicator``
  subsystem, sshd answers "subsystem not found" when no Subsystem line names it; the sender then
  asks to run a command, which ForceCommand replaces);
* ``Subsystem replicator .../replicator serve --stdio --repo ...``;
* per-key rights: ``command=".../replicator serve --stdio --repo hospA=...",restrict KEY`` in
  authorized_keys, one line per key, so key A reaches repository A and never B.

Each does a full sync and a restore through sshd.  Skipped, saying so, when sshd is not installed.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from replicator import constants as C
from tests.conftest import ROOT, run_cli

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
PRIVSEP_DIR = "/run/sshd"  # Debian's sshd as root wants it; its unit makes it (RuntimeDirectory=sshd)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OpenSsh:
    """One test's sshd, its keys and repositories; ``start`` runs sshd with a config and authorized_keys."""

    tmp: Path
    user: str
    exe: Path  # the replicator "executable" sshd runs
    keys: dict[str, Path] = field(default_factory=dict)  # name -> private key
    pub: dict[str, str] = field(default_factory=dict)  # name -> public key line
    port: int = 0
    proc: subprocess.Popen | None = None
    log: Path | None = None

    def repo(self, name: str) -> Path:
        path = self.tmp / "repos" / name
        if not path.exists():
            r = run_cli("init", str(path), "--kdf-work", "14", "-q")
            assert r.returncode == 0, r.stderr
        return path

    def serve(self, *repos: str, allow: str | None = None) -> str:
        """The command line of ``replicator serve --stdio`` for these NAME=PATH repositories."""
        words = [str(self.exe), "serve", "--stdio", *[w for r in repos for w in ("--repo", r)]]
        return " ".join(words + (["--allow", allow] if allow else []))

    def start(self, config: str, authorized_keys: str) -> None:
        (self.tmp / "authorized_keys").write_text(authorized_keys)
        self.port = _free_port()
        cfg = self.tmp / "sshd_config"
        cfg.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.tmp / 'ssh_host_ed25519_key'}\n"
            f"PidFile none\nUsePAM no\nStrictModes no\nAuthorizedKeysFile {self.tmp / 'authorized_keys'}\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"PermitRootLogin prohibit-password\nAllowUsers {self.user}\nLogLevel VERBOSE\n{config}")
        self.log = self.tmp / "sshd.log"
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"sshd exited at start: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError(f"sshd did not listen: {self.log.read_text()}")
        host = (self.tmp / "ssh_host_ed25519_key.pub").read_text().split()
        (self.tmp / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host[0]} {host[1]}\n")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def sshd_log(self) -> str:
        return self.log.read_text() if self.log and self.log.exists() else ""

    def url(self, name: str) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}/{name}"

    def ssh_args(self, key: str) -> list[str]:
        return ["--identity", str(self.keys[key]), "--known-hosts", str(self.tmp / "known_hosts")]

    def sync(self, src: Path, name: str, key: str):
        return run_cli("sync", str(src), self.url(name), "--name", "hospitals", *self.ssh_args(key), timeout=300)

    def restore(self, name: str, key: str, target: Path):
        return run_cli("restore", self.url(name), str(target), *self.ssh_args(key), "-q", timeout=300)


@pytest.fixture
def openssh(tmp_path):
    if not os.access(SSHD, os.X_OK):
        pytest.skip(f"OpenSSH's sshd is not installed ({SSHD}): the OpenSSH recipes cannot be tested")
    if os.geteuid() == 0 and not os.path.isdir(PRIVSEP_DIR):
        try:
            os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
        except OSError as exc:
            pytest.skip(f"sshd needs its privilege separation directory {PRIVSEP_DIR}: {exc}")
    from replicator.transport.ssh import generate_key

    exe = tmp_path / "replicator"
    exe.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m replicator \"$@\"\n")
    exe.chmod(0o755)
    site = OpenSsh(tmp=tmp_path, user=pwd.getpwuid(os.geteuid()).pw_name, exe=exe)
    generate_key(str(tmp_path / "ssh_host_ed25519_key"), "host")
    for name in ("a", "b"):
        site.keys[name] = tmp_path / f"key_{name}"
        site.pub[name] = generate_key(str(site.keys[name]), f"sender-{name}")
    yield site
    site.stop()


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "scans").mkdir(parents=True)
    (src / "scans" / "ct-001.dcm").write_bytes(os.urandom(300_000))
    (src / "report.txt").write_text("all clear\n")
    return src


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _sync_and_restore(site: OpenSsh, tmp_path: Path, name: str, key: str) -> None:
    src = _source(tmp_path)
    r = site.sync(src, name, key)
    assert r.returncode == 0, f"{r.stderr}\n--- sshd:\n{site.sshd_log()}"
    target = tmp_path / f"restored-{name}"
    r = site.restore(name, key, target)
    assert r.returncode == 0, f"{r.stderr}\n--- sshd:\n{site.sshd_log()}"
    assert _files(target) == _files(src)


def test_force_command(openssh, tmp_path):
    """The README recipe: ``Match User`` + ``ForceCommand``; the subsystem request is refused, the command runs."""
    repo = openssh.repo("hospitals")
    openssh.start(f"Match User {openssh.user}\n    ForceCommand {openssh.serve(f'hospitals={repo}', allow='hospitals:rw')}\n",
                  f"restrict {openssh.pub['a']}\n")
    _sync_and_restore(openssh, tmp_path, "hospitals", "a")
    log = openssh.sshd_log()
    assert "subsystem not found" in log and "Starting session: forced-command (config)" in log, log


def test_subsystem(openssh, tmp_path):
    repo = openssh.repo("hospitals")
    openssh.start(f"Subsystem replicator {openssh.serve(f'hospitals={repo}', allow='hospitals:rw')}\n",
                  f"restrict {openssh.pub['a']}\n")
    _sync_and_restore(openssh, tmp_path, "hospitals", "a")
    assert "Starting session: subsystem 'replicator'" in openssh.sshd_log()  # it went the Subsystem way


def test_per_key_rights_in_authorized_keys(openssh, tmp_path):
    """``command="... --repo hospA=...",restrict``: key A reaches repository A only, key B only B."""
    a, b = openssh.repo("hospA"), openssh.repo("hospB")
    openssh.start("", f'command="{openssh.serve(f"hospA={a}")}",restrict {openssh.pub["a"]}\n'
                      f'command="{openssh.serve(f"hospB={b}")}",restrict {openssh.pub["b"]}\n')
    _sync_and_restore(openssh, tmp_path, "hospA", "a")
    r = openssh.sync(_source(tmp_path / "other"), "hospB", "a")
    assert r.returncode == C.EXIT_REPOSITORY, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not allowed" in lines[0] and "hospB" in lines[0], r.stderr
    assert not (b / "snapshots").exists() or not os.listdir(b / "snapshots")
    r = openssh.restore("hospA", "b", tmp_path / "b-reads-a")  # nor can key B read repository A
    assert r.returncode == C.EXIT_REPOSITORY and "not allowed" in r.stderr, (r.returncode, r.stderr)
    _sync_and_restore(openssh, tmp_path / "b", "hospB", "b")


def test_a_forced_command_that_cannot_start_is_named_at_the_sender(openssh, tmp_path):
    """serve refuses a --repo that is no repository; its one line reaches the sender (over the channel's stderr)."""
    missing = tmp_path / "no-such-repo"
    openssh.start("", f'command="{openssh.serve(f"hospitals={missing}")}",restrict {openssh.pub["a"]}\n')
    r = openssh.sync(_source(tmp_path), "hospitals", "a")
    assert r.returncode == C.EXIT_TRANSPORT, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and f"exit status {C.EXIT_REPOSITORY}" in lines[0], r.stderr

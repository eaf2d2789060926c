"""``serve --config FILE``: many repositories, each with its own keys and quota, reloaded on SIGHUP.

A real ``replicator serve`` process on 127.0.0.1 (as tests/transport/conftest.py starts one), senders
as real ``replicator sync`` processes.  No timing is asserted: waits are for log lines, with deadlines.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, ROOT, run_cli
from tests.transport.conftest import free_port, make_tree, stop_process

MiB = 1024 * 1024


class Receiver:
    """A serve --config process and what a sender needs to reach it."""

    def __init__(self, tmp: Path) -> None:
        from replicator.transport.ssh import generate_key

        self.tmp = tmp
        self.port = free_port()
        self.metrics_port = free_port()
        self.keys = {}
        for name in ("host", "a", "b"):
            self.keys[name] = tmp / f"{name}_key"
            generate_key(str(self.keys[name]), name)
        self.config = tmp / "serve.toml"
        self.log = tmp / "serve.log"
        self.known_hosts = tmp / "known_hosts"
        pub = Path(str(self.keys["host"]) + ".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n")
        self.proc: subprocess.Popen | None = None

    def pub(self, key: str) -> str:
        return Path(str(self.keys[key]) + ".pub").read_text()

    def repo(self, name: str, template: Path | None = None) -> Path:
        path = self.tmp / "repos" / name
        if template is not None:
            shutil.copytree(template, path)
        else:
            r = run_cli("init", str(path), "--kdf-work", "14", "-q")
            assert r.returncode == 0, r.stderr
        return path

    def write_config(self, repos: list[dict], extra: str = "") -> None:
        lines = [f'listen = "127.0.0.1:{self.port}"', f'host_key = "{self.keys["host"]}"',
                 f'metrics_listen = "127.0.0.1:{self.metrics_port}"', extra]
        for r in repos:
            lines.append("[[repo]]")
            lines += [f"{k} = {v!r}" if isinstance(v, int) else f'{k} = "{v}"' for k, v in r.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, *extra: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "replicator", "serve", "--config", str(self.config),
                                      *extra], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "wb"),
                                     env={k: v for k, v in os.environ.items() if k != "REPLICATOR_PASSPHRASE"})
        self.wait_log("listening on")

    def wait_log(self, text: str, count: int = 1, deadline: float = 60) -> str:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            log = self.log.read_text() if self.log.exists() else ""
            if log.count(text) >= count:
                return log
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {log}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in the serve log: {self.log.read_text()}")

    def stop(self) -> None:
        stop_process(self.proc, 20)

    def sync_args(self, src: Path, name: str, key: str, *extra: str) -> list[str]:
        return ["sync", str(src), f"ssh://replicator@127.0.0.1:{self.port}/{name}", "--name", "s", "--identity",
                str(self.keys[key]), "--known-hosts", str(self.known_hosts), *extra]

    def scrape(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=30) as resp:
            return resp.read().decode()


@pytest.fixture
def receiver(tmp_path):
    r = Receiver(tmp_path)
    yield r
    r.stop()


def _src(tmp_path: Path, name: str, n: int = 2, size: int = 64 * 1024, seed: int = 1) -> Path:
    src = tmp_path / f"src-{name}"
    make_tree(src, n, size, seed)
    return src


def _keys_file(receiver: Receiver, name: str, *keys: str) -> Path:
    path = receiver.tmp / f"{name}.pub"
    path.write_text("".join(receiver.pub(k) for k in keys))
    return path


def test_sync_through_serve_config_and_a_key_is_its_tenants_only(receiver, tmp_path):
    a, b = receiver.repo("chu-a"), receiver.repo("chu-b")
    receiver.write_config([{"name": "chu-a", "url": a, "authorized_keys": _keys_file(receiver, "chu-a", "a")},
                           {"name": "chu-b", "url": b, "authorized_keys": _keys_file(receiver, "chu-b", "b")}])
    receiver.start()
    src = _src(tmp_path, "a")
    r = run_cli(*receiver.sync_args(src, "chu-a", "a"))
    assert r.returncode == 0, r.stderr
    assert os.listdir(a / "snapshots")
    r = run_cli(*receiver.sync_args(src, "chu-b", "a"))  # tenant A's key asking for tenant B
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "not allowed: write to repository 'chu-b'" in r.stderr
    assert not (b / "snapshots").exists() or not os.listdir(b / "snapshots")
    r = run_cli(*receiver.sync_args(src, "chu-b", "b"))
    assert r.returncode == 0, r.stderr


def test_config_and_repo_flags_together_and_a_name_defined_twice(receiver, tmp_path):
    a, extra = receiver.repo("chu-a"), receiver.repo("extra")
    receiver.write_config([{"name": "chu-a", "url": a, "authorized_keys": _keys_file(receiver, "chu-a", "a")}])
    r = run_cli("serve", "--config", str(receiver.config), "--repo", f"chu-a={extra}", passphrase=None, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert f"repository 'chu-a' defined twice: --repo chu-a={extra} and {receiver.config}:5" in r.stderr
    global_keys = receiver.tmp / "authorized_keys"
    global_keys.write_text(f'replicator-repos="extra:rw" {receiver.pub("b")}')
    receiver.start("--repo", f"extra={extra}", "--authorized-keys", str(global_keys))
    src = _src(tmp_path, "x")
    assert run_cli(*receiver.sync_args(src, "extra", "b")).returncode == 0
    assert run_cli(*receiver.sync_args(src, "chu-a", "a")).returncode == 0


@pytest.mark.parametrize("text, expected", [
    ("[[repo]\n", r"serve.toml:1: TOML syntax error"),
    ('listen = "127.0.0.1:1"\nport = 2\n', r"serve.toml:2: port: unknown key"),
])
def test_bad_config_at_start_is_one_line_exit_2(tmp_path, text, expected):
    import re

    (tmp_path / "serve.toml").write_text(text)
    r = run_cli("serve", "--config", str(tmp_path / "serve.toml"), passphrase=None, timeout=60)
    assert r.returncode == 2 and re.search(expected, r.stderr), r.stderr
    assert r.stderr.strip().count("\n") == 0
    r = run_cli("serve", "--config", str(tmp_path / "missing.toml"), passphrase=None, timeout=60)
    assert r.returncode == 2 and "missing.toml: cannot read the configuration" in r.stderr


def test_sighup_adds_and_removes_while_a_session_in_progress_completes(receiver, tmp_path):
    a, b = receiver.repo("chu-a"), receiver.repo("chu-b", template=receiver.tmp / "repos" / "chu-a")
    keys_a = _keys_file(receiver, "chu-a", "a")
    receiver.write_config([{"name": "chu-a", "url": a, "authorized_keys": keys_a}])
    receiver.start()
    slow = _src(tmp_path, "slow", n=4, size=MiB, seed=2)
    env = {**os.environ, "REPLICATOR_PASSPHRASE": PASSPHRASE}
    sender = subprocess.Popen([sys.executable, "-m", "replicator",
                               *receiver.sync_args(slow, "chu-a", "a", "--bwlimit", "1M")], cwd=ROOT, env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        receiver.wait_log("opened chu-a for write")
        # A bad file first: logged, nothing changes.
        receiver.config.write_text(receiver.config.read_text() + "bogus = 1\n")
        receiver.proc.send_signal(signal.SIGHUP)
        log = receiver.wait_log("reload failed")
        assert "still serving the 1 repositories in force" in log and "bogus: unknown key" in log
        # Then chu-a removed while its session runs, chu-b added.
        receiver.write_config([{"name": "chu-b", "url": b, "authorized_keys": _keys_file(receiver, "chu-b", "a")}])
        receiver.proc.send_signal(signal.SIGHUP)
        receiver.wait_log("reloaded")
        out, err = sender.communicate(timeout=300)
    finally:
        if sender.poll() is None:
            sender.kill()
    assert sender.returncode == 0, err
    assert "committed" in receiver.log.read_text()
    assert os.listdir(a / "snapshots")  # the session in progress finished its commit
    r = run_cli(*receiver.sync_args(_src(tmp_path, "n"), "chu-b", "a"))
    assert r.returncode == 0, r.stderr
    r = run_cli(*receiver.sync_args(_src(tmp_path, "n"), "chu-a", "a"))
    assert r.returncode == 3 and "repository 'chu-a'" in r.stderr  # its keys went with it: not allowed
    assert receiver.proc.poll() is None


def test_quota_refuses_the_pack_that_would_exceed_it_naming_quota_and_usage(receiver, tmp_path):
    a = receiver.repo("chu-a")
    keys_a = _keys_file(receiver, "chu-a", "a")
    receiver.write_config([{"name": "chu-a", "url": a, "authorized_keys": keys_a, "quota": 1000}])
    receiver.start()
    src = _src(tmp_path, "big", n=1, size=MiB, seed=3)  # incompressible: a pack of about 1 MiB
    r = run_cli(*receiver.sync_args(src, "chu-a", "a"))
    assert r.returncode == 3, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line
    assert "quota exceeded: repository 'chu-a' holds 0 bytes of its quota of 1000 bytes" in line, line
    assert not (a / "data").exists() or not [p for p in (a / "data").rglob("*") if p.is_file()]  # nothing stored
    assert "refused (quota exceeded)" in receiver.log.read_text()
    # A larger quota, by reload: the same sync goes through; the usage is the pack bytes stored.
    receiver.write_config([{"name": "chu-a", "url": a, "authorized_keys": keys_a, "quota": "10MiB"}])
    receiver.proc.send_signal(signal.SIGHUP)
    receiver.wait_log("reloaded")
    r = run_cli(*receiver.sync_args(src, "chu-a", "a"))
    assert r.returncode == 0, r.stderr
    stored = sum(p.stat().st_size for p in (a / "data").rglob("*") if p.is_file())
    assert stored > MiB
    receiver.write_config([{"name": "chu-a", "url": a, "authorized_keys": keys_a, "quota": stored}])
    receiver.proc.send_signal(signal.SIGHUP)
    receiver.wait_log("reloaded", 2)
    r = run_cli(*receiver.sync_args(_src(tmp_path, "more", n=1, size=MiB, seed=4), "chu-a", "a"))
    assert r.returncode == 3 and f"holds {stored} bytes of its quota of {stored} bytes" in r.stderr, r.stderr

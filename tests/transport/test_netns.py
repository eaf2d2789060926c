"""Two hosts: the receiver and the sender in two network namespaces joined by a
veth pair, the link shaped with tc tbf (netem is not available here).

Needs root, iproute2 and network namespaces; skipped with the reason otherwise.
Uses only addresses inside the namespaces this test creates, and removes them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, ROOT, run_cli
from tests.transport.conftest import make_tree

RECEIVER_IP, SENDER_IP = "10.203.77.1", "10.203.77.2"
PORT = 2222
RATE_MBIT = 40


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def two_hosts():
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    if not shutil.which("ip") or not shutil.which("tc"):
        pytest.skip("needs iproute2 (ip, tc)")
    tag = uuid.uuid4().hex[:6]
    rx, tx = f"rpl-rx-{tag}", f"rpl-tx-{tag}"
    vrx, vtx = f"vrx{tag}", f"vtx{tag}"
    made = []
    try:
        for ns in (rx, tx):
            r = _ip("netns", "add", ns, check=False)
            if r.returncode != 0:
                pytest.skip(f"cannot create a network namespace: {r.stderr.strip()}")
            made.append(ns)
        _ip("link", "add", vrx, "type", "veth", "peer", "name", vtx)
        _ip("link", "set", vrx, "netns", rx)
        _ip("link", "set", vtx, "netns", tx)
        for ns, dev, addr in ((rx, vrx, RECEIVER_IP), (tx, vtx, SENDER_IP)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        # Shape the sender's egress: a WAN-like bottleneck.
        r = subprocess.run(["ip", "netns", "exec", tx, "tc", "qdisc", "add", "dev", vtx, "root", "tbf", "rate",
                            f"{RATE_MBIT}mbit", "burst", "64kb", "latency", "50ms"], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"tc tbf is not available: {r.stderr.strip()}")
        yield rx, tx
    finally:
        for ns in made:
            _ip("netns", "del", ns, check=False)


def test_sync_between_two_hosts_over_a_shaped_link(two_hosts, tmp_path):
    from replicator.transport.ssh import generate_key

    rx, tx = two_hosts
    keys = {n: tmp_path / f"{n}_key" for n in ("host", "writer")}
    for n, p in keys.items():
        generate_key(str(p), n)
    pub = Path(str(keys["writer"]) + ".pub").read_text().strip()
    (tmp_path / "authorized_keys").write_text(f'replicator-repos="amiens:rw" {pub}\n')
    host_pub = Path(str(keys["host"]) + ".pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[{RECEIVER_IP}]:{PORT} {host_pub[0]} {host_pub[1]}\n")
    repo = tmp_path / "secondary"
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen(
        ["ip", "netns", "exec", rx, sys.executable, "-m", "replicator", "serve", "--listen", f"{RECEIVER_IP}:{PORT}",
         "--repo", f"amiens={repo}", "--host-key", str(keys["host"]),
         "--authorized-keys", str(tmp_path / "authorized_keys")],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while b"listening" not in (tmp_path / "serve.log").read_bytes() and time.monotonic() < deadline:
            if server.poll() is not None:
                pytest.fail(f"serve exited: {(tmp_path / 'serve.log').read_text()}")
            time.sleep(0.1)
        time.sleep(0.5)
        src = tmp_path / "src"
        make_tree(src, 4, 2 * 1024 * 1024, seed=5)  # 8 MiB, incompressible
        env = dict(os.environ, REPLICATOR_PASSPHRASE=PASSPHRASE, REPLICATOR_CACHE_DIR=str(tmp_path / "cache"))
        r = subprocess.run(["ip", "netns", "exec", tx, sys.executable, "-m", "replicator", "sync", str(src),
                            f"ssh://replicator@{RECEIVER_IP}:{PORT}/amiens", "--name", "toulouse",
                            "--identity", str(keys["writer"]), "--known-hosts", str(known), "--json"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        summary = json.loads(r.stdout)
        assert summary["bytes_sent"] >= 8 * 1024 * 1024
        # The data crossed the shaped link: the tbf qdisc counted it (no timing involved).
        stats = subprocess.run(["ip", "netns", "exec", tx, "tc", "-s", "qdisc", "show", "dev", f"vtx{rx[-6:]}"],
                               capture_output=True, text=True).stdout
        sent = int(stats.split("Sent ", 1)[1].split(" bytes", 1)[0])
        assert sent >= summary["bytes_sent"], stats
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    out = tmp_path / "restored"
    assert run_cli("restore", str(repo), str(out), "-q").returncode == 0
    for p in src.iterdir():
        assert (out / p.name).read_bytes() == p.read_bytes()

"""End to end over a real `replicator serve` on 127.0.0.1: sync, incremental sync, restore and
verify at the secondary, key-less receiver check, kill -9 resume, and every refusal."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import PASSPHRASE, ROOT, run_cli
from tests.transport.conftest import make_tree, start_server, stop_server

MiB = 1024 * 1024


def _tree(src):
    make_tree(src / "imaging", 3, 3 * MiB, seed=1)
    (src / "reports").mkdir()
    for i in range(20):
        (src / "reports" / f"r{i}.txt").write_text(f"report {i}\n" * (200 + i))
    os.symlink("reports/r1.txt", src / "latest")


def _same_tree(a, b):
    r = subprocess.run(["diff", "-r", "--no-dereference", str(a), str(b)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_sync_incremental_restore_verify(site, tmp_path):
    src = tmp_path / "src"
    _tree(src)
    site.pin()
    first = run_cli(*site.sync_args(src), "--json")
    assert first.returncode == 0, first.stderr
    s1 = json.loads(first.stdout)
    assert s1["generation"] == 1 and s1["bytes_sent"] >= 9 * MiB
    assert site.snapshots() == [s1["snapshot"]]

    (src / "reports" / "r3.txt").write_text("amended\n")
    make_tree(src / "new", 1, 100_000, seed=5)
    second = run_cli(*site.sync_args(src), "--json")
    assert second.returncode == 0, second.stderr
    s2 = json.loads(second.stdout)
    assert s2["generation"] == 2
    assert s2["bytes_sent"] < 300_000, s2  # only the changes travel
    assert s2["files_unchanged"] >= 21

    # At the secondary site, locally, with the passphrase: restore and verify --data.
    out = tmp_path / "restored"
    r = run_cli("restore", str(site.repo), str(out), "-q")
    assert r.returncode == 0, r.stderr
    _same_tree(src, out)
    v = run_cli("verify", str(site.repo), "--data", "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    assert json.loads(v.stdout)["snapshots"] == 2

    # Without the passphrase.
    k = run_cli("serve", "--verify-only", "--repo", f"amiens={site.repo}", "--json", passphrase=None)
    assert k.returncode == 0, k.stdout + k.stderr
    rep = json.loads(k.stdout)["amiens"]
    assert rep["ok"] and rep["snapshots"] == 2 and rep["packs"] == rep["ids_objects"] >= 2


def test_keyless_verify_finds_damage(site, tmp_path):
    src = tmp_path / "src"
    make_tree(src, 2, 100_000, seed=3)
    site.pin()
    assert run_cli(*site.sync_args(src)).returncode == 0
    pack = next(p for p in (site.repo / "data").rglob("*") if p.is_file())
    data = bytearray(pack.read_bytes())
    data[100] ^= 1
    pack.write_bytes(bytes(data))
    ids = next((site.repo / "ids").iterdir())
    ids.unlink()
    k = run_cli("serve", "--verify-only", "--repo", f"amiens={site.repo}", "--json", passphrase=None)
    assert k.returncode == 5
    problems = json.loads(k.stdout)["amiens"]["problems"]
    assert any("does not match its name" in p for p in problems)
    assert any("missing chunks" in p for p in problems)


def test_accept_host_key_pins_it(site, tmp_path):
    src = tmp_path / "src"
    make_tree(src, 1, 1000, seed=1)
    r = run_cli(*site.sync_args(src, extra=["--accept-host-key", site.host_fp]))
    assert r.returncode == 0, r.stderr
    assert site.known_hosts.read_text().startswith(f"[127.0.0.1]:{site.port} ssh-ed25519 ")
    r = run_cli(*site.sync_args(src))  # pinned now: no option needed
    assert r.returncode == 0, r.stderr


def _refused(r, *words, code=None):
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0
    if code is not None:
        assert r.returncode == code, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("replicator: error: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_unknown_host_key_refused(site, tmp_path):
    src = tmp_path / "src"
    make_tree(src, 1, 1000, seed=1)
    r = run_cli(*site.sync_args(src))
    _refused(r, "unknown host key", site.host_fp, code=7)
    r = run_cli(*site.sync_args(src, extra=["--accept-host-key", "SHA256:" + "A" * 43]))
    _refused(r, "unknown host key")
    assert not site.known_hosts.exists() and site.snapshots() == []


def test_changed_host_key_refused(site, tmp_path):
    from replicator.transport.ssh import generate_key

    src = tmp_path / "src"
    make_tree(src, 1, 1000, seed=1)
    other = tmp_path / "other_host"
    pub = generate_key(str(other)).split()
    site.known_hosts.write_text(f"[127.0.0.1]:{site.port} {pub[0]} {pub[1]}\n")
    r = run_cli(*site.sync_args(src, extra=["--accept-host-key", site.host_fp]))
    _refused(r, "HOST KEY CHANGED", code=7)
    assert site.snapshots() == []


def test_unauthorized_client_key_refused(site, tmp_path):
    src = tmp_path / "src"
    make_tree(src, 1, 1000, seed=1)
    site.pin()
    r = run_cli(*site.sync_args(src, key="stranger"))
    _refused(r, "refused our key", code=7)
    assert site.snapshots() == []
    time.sleep(0.2)
    assert "refused key SHA256:" in site.server_log()


def test_key_without_write_permission_refused(site, tmp_path):
    src = tmp_path / "src"
    make_tree(src, 1, 1000, seed=1)
    site.pin()
    r = run_cli(*site.sync_args(src, key="reader"))
    _refused(r, "not allowed")
    assert site.snapshots() == []
    time.sleep(0.2)
    log = site.server_log()
    assert "not allowed" in log and "key SHA256:" in log


def test_wrong_repository_name_refused(site, tmp_path):
    src = tmp_path / "src"
    make_tree(src, 1, 1000, seed=1)
    site.pin()
    r = run_cli(*site.sync_args(src, name="nosuch"))
    _refused(r, "not allowed")
    assert site.snapshots() == []


def test_configured_but_missing_repository(site, tmp_path):
    """A repository that vanished after serve started (serve refuses a missing one at start,
    tests/cli/test_serve_cmd.py): each session that opens it is refused."""
    stop_server(site)
    (site.tmp / "authorized_keys").write_text(
        (site.tmp / "authorized_keys").read_text().replace('"amiens:rw"', '"amiens:rw,gone:rw"'))
    gone = tmp_path / "gone"
    assert run_cli("init", str(gone), "--kdf-work", "14", "-q").returncode == 0
    start_server(site, extra_repos=[f"gone={gone}"])
    gone.rename(tmp_path / "unmounted")
    src = tmp_path / "src"
    make_tree(src, 1, 1000, seed=1)
    site.pin()
    r = run_cli(*site.sync_args(src, name="gone"))
    _refused(r, "no replicator repository")


def test_wrong_passphrase(site, tmp_path):
    src = tmp_path / "src"
    make_tree(src, 1, 1000, seed=1)
    site.pin()
    r = run_cli(*site.sync_args(src), passphrase="wrong")
    _refused(r, "wrong passphrase")
    assert r.returncode == 4


def test_kill9_mid_transfer_resends_at_most_one_window(site, tmp_path):
    """kill -9 the sender once packs are acknowledged; the next run re-sends no acknowledged pack."""
    src = tmp_path / "src"
    make_tree(src, 6, 12 * MiB, seed=7)  # ~72 MiB of incompressible data: 4-5 packs
    total = 72 * MiB
    site.pin()
    env = dict(os.environ, REPLICATOR_PASSPHRASE=PASSPHRASE)
    window = 2
    proc = subprocess.Popen([sys.executable, "-m", "replicator", *site.sync_args(src),
                             "--bwlimit", "24M", "--streams", str(window)],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    ids_dir = site.repo / "ids"
    deadline = time.monotonic() + 120
    try:
        while (not ids_dir.exists() or len(os.listdir(ids_dir)) < 2) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is not None:
            pytest.fail("sync finished before it could be killed")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert site.snapshots() == []  # nothing committed
    time.sleep(0.3)  # let the server finish the session it was in
    acked = len(os.listdir(ids_dir))
    assert acked >= 2

    r = run_cli(*site.sync_args(src), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    pack = 16 * MiB
    # Every pack the receiver holds is found again (its ids/ object): only the rest travels.
    assert s["bytes_sent"] <= total - acked * pack + 2 * MiB, (s["bytes_sent"], acked)
    assert s["bytes_sent"] >= total - (acked + 1) * pack - 2 * MiB  # the rest really was sent
    out = tmp_path / "restored"
    assert run_cli("restore", str(site.repo), str(out), "-q").returncode == 0
    _same_tree(src, out)

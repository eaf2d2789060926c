"""A real `replicator serve --mirror` on 127.0.0.1: after each remote sync the mirror equals the source
(bytes and metadata); a write session holds the repository lock, so prune at the secondary waits for
it; after forget + prune at the secondary the sender drops cached id lists of deleted packs."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from replicator.restore.mirror import load_state
from tests.conftest import PASSPHRASE, ROOT, run_cli
from tests.transport.conftest import stop_server
from tests.treecompare import diff, manifest


def _start_with_mirror(site, mirror, *extra) -> None:
    """Like conftest.start_server, with --mirror (the passphrase comes from a file, never the environment)."""
    stop_server(site)
    pw = site.tmp / "passphrase"
    pw.write_text(PASSPHRASE + "\n")
    pw.chmod(0o600)
    site.log = site.tmp / "serve-mirror.log"
    args = [sys.executable, "-m", "replicator", "serve", "--listen", f"127.0.0.1:{site.port}",
            "--repo", f"amiens={site.repo}", "--host-key", str(site.host_key),
            "--authorized-keys", str(site.tmp / "authorized_keys"), "--mirror", f"amiens={mirror}",
            "--passphrase-file", str(pw), *extra]
    site.proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=open(site.log, "wb"),
                                 env={k: v for k, v in os.environ.items() if k != "REPLICATOR_PASSPHRASE"})
    import socket

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert site.proc.poll() is None, site.server_log()
        try:
            socket.create_connection(("127.0.0.1", site.port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("serve did not start listening")


def _wait_mirrored(site, mirror, snapshot: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = load_state(str(mirror))
        if state and state.get("snapshot") == snapshot and not state.get("dirty"):
            return
        time.sleep(0.05)
    raise AssertionError(f"mirror never reached {snapshot[:16]}: {load_state(str(mirror))}\n{site.server_log()}")


def _sync(site, src) -> str:
    r = run_cli(*site.sync_args(src), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["snapshot"]


def test_mirror_follows_every_commit(site, tmp_path):
    mirror = tmp_path / "plain" / "amiens"
    _start_with_mirror(site, mirror)
    site.pin()
    rng = random.Random(9)
    src = tmp_path / "src"
    (src / "imaging").mkdir(parents=True)
    (src / "reports").mkdir()
    (src / "imaging" / "ct.dcm").write_bytes(rng.randbytes(2_500_000))
    for i in range(15):
        (src / "reports" / f"r{i}.txt").write_text(f"report {i}\n" * (100 + i))
    os.symlink("reports/r1.txt", src / "latest")
    os.chmod(src / "reports" / "r2.txt", 0o640)

    _wait_mirrored(site, mirror, _sync(site, src))
    assert diff(manifest(str(src)), manifest(str(mirror))) == []

    (src / "reports" / "r3.txt").write_text("amended\n")
    (src / "reports" / "r4.txt").unlink()
    os.rename(src / "imaging", src / "radiology")
    (src / "new").mkdir()
    (src / "new" / "admission.txt").write_text("bed 12\n")
    os.utime(src / "reports" / "r5.txt", ns=(1_500_000_000_000_000_000,) * 2)
    _wait_mirrored(site, mirror, _sync(site, src))
    assert diff(manifest(str(src)), manifest(str(mirror))) == []

    import shutil

    shutil.rmtree(src / "radiology")
    _wait_mirrored(site, mirror, _sync(site, src))
    assert diff(manifest(str(src)), manifest(str(mirror))) == []
    log = site.server_log()
    assert "mirror amiens" in log and "(diff)" in log, log

    # A restart catches up by itself (nothing to do here) and the mirror stays right.
    stop_server(site)
    _start_with_mirror(site, mirror)
    (src / "reports" / "r6.txt").write_text("after restart\n")
    _wait_mirrored(site, mirror, _sync(site, src))
    assert diff(manifest(str(src)), manifest(str(mirror))) == []


def test_serve_mirror_needs_the_passphrase(site, tmp_path):
    r = run_cli("serve", "--stdio", "--repo", f"amiens={site.repo}", "--allow", "amiens:rw",
                "--mirror", f"amiens={tmp_path / 'm'}", passphrase=None)
    assert r.returncode == 2 and "no passphrase" in r.stderr, r.stderr
    r = run_cli("serve", "--stdio", "--repo", f"amiens={site.repo}", "--allow", "amiens:rw",
                "--mirror", f"amiens={tmp_path / 'm'}", passphrase="wrong")
    assert r.returncode == 4, r.stderr
    r = run_cli("serve", "--stdio", "--repo", f"amiens={site.repo}", "--mirror", f"other={tmp_path / 'm'}")
    assert r.returncode == 2 and "no --repo other" in r.stderr, r.stderr


def test_write_session_holds_the_lock_against_prune(site, tmp_path):
    from replicator.transport.client import RemoteSink
    from replicator.transport.url import parse_url

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    site.pin()
    _sync(site, src)
    dest = RemoteSink(parse_url(site.url()), identity=str(site.keys["writer"]),
                      known_hosts=str(site.known_hosts), cache_dir=str(tmp_path / "cache"))
    try:
        r = run_cli("prune", str(site.repo))
        assert r.returncode == 3 and "locked" in r.stderr, r.stderr
        r = run_cli("forget", str(site.repo), "--keep-last", "1")
        assert r.returncode == 3 and "locked" in r.stderr, r.stderr
    finally:
        dest.close()
    time.sleep(0.2)  # the server releases the lock when the session ends
    deadline = time.monotonic() + 10
    while (r := run_cli("prune", str(site.repo))).returncode == 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.returncode == 0, r.stderr


def test_sender_drops_cached_ids_of_pruned_packs(site, tmp_path):
    site.pin()
    rng = random.Random(4)
    a, b = rng.randbytes(400_000), rng.randbytes(300_000)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(a)
    _sync(site, src)
    ids_after_first = set(os.listdir(site.repo / "ids"))
    (src / "a.bin").unlink()
    (src / "b.bin").write_bytes(b)
    _sync(site, src)
    cache = next(Path(os.environ["REPLICATOR_CACHE_DIR"]).glob("*/remote-ids"))
    assert ids_after_first <= set(os.listdir(cache))

    # At the secondary, with the passphrase: forget the first snapshot and prune its pack.
    r = run_cli("forget", str(site.repo), "--keep-last", "1", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["removed"] == 1, r.stderr
    r = run_cli("prune", str(site.repo), "--json")
    assert r.returncode == 0, r.stderr
    pruned = json.loads(r.stdout)
    assert pruned["packs_deleted"] >= 1 and pruned["id_lists_deleted"] == pruned["packs_deleted"]
    gone = {n.rsplit("/", 1)[1] for n in pruned["deleted"]}
    assert gone <= ids_after_first and not gone & set(os.listdir(site.repo / "ids"))

    # a.bin comes back: its chunks were pruned, so the sender must send them again, not trust its cache.
    (src / "a.bin").write_bytes(a)
    r = run_cli(*site.sync_args(src), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bytes_sent"] >= 400_000
    assert not gone & set(os.listdir(cache))  # the stale lists were dropped from the cache
    v = run_cli("verify", str(site.repo), "--data")
    assert v.returncode == 0, v.stdout + v.stderr
    k = run_cli("serve", "--verify-only", "--repo", f"amiens={site.repo}", "--json", passphrase=None)
    assert k.returncode == 0, k.stdout
    out = tmp_path / "restored"
    r = run_cli("restore", str(site.repo), str(out), "-q")
    assert r.returncode == 0, r.stderr
    assert diff(manifest(str(src)), manifest(str(out))) == []

"""kill -9 during a sync: the previous snapshot stays intact, and the next
run completes without storing again what was already stored."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import PASSPHRASE, ROOT

MiB = 1024 * 1024


def _make_tree(root, n_files: int, size: int, seed: int) -> None:
    import random

    rnd = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (root / f"scan-{i:03d}.dcm").write_bytes(rnd.randbytes(size))


def _packs(repo) -> int:
    data = repo / "data"
    if not data.exists():
        return 0
    return sum(1 for _d, _s, files in os.walk(data) for f in files if not f.startswith(".tmp-"))


@pytest.mark.parametrize("kill_after_packs", [1, 3])
def test_kill9_mid_sync_then_resume(tmp_path, cli, kill_after_packs):
    src, repo = tmp_path / "src", tmp_path / "repo"
    _make_tree(src / "day1", 4, 8 * MiB, seed=1)
    assert cli("init", str(repo), "--kdf-work", "14").returncode == 0
    first = cli("sync", str(src), str(repo), "--name", "s", "--json")
    assert first.returncode == 0, first.stderr
    snap1 = json.loads(first.stdout)["snapshot"]

    _make_tree(src / "day2", 12, 8 * MiB, seed=2)  # ~96 MiB of new data, about 6 packs
    packs_before = _packs(repo)
    env = dict(os.environ, REPLICATOR_PASSPHRASE=PASSPHRASE)
    proc = subprocess.Popen([sys.executable, "-m", "replicator", "sync", str(src), str(repo), "--name", "s",
                             "--workers", "1"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _packs(repo) < packs_before + kill_after_packs and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is not None:
        pytest.fail("sync finished before it could be killed; make the tree larger")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    # The previous snapshot is intact and still the only one.
    snaps = json.loads(cli("snapshots", str(repo), "--json").stdout)["snapshots"]
    assert [s["id"] for s in snaps] == [snap1]
    assert cli("verify", str(repo), "--data").returncode == 0

    again = cli("sync", str(src), str(repo), "--name", "s", "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    # What reached a pack before the kill is not stored again.
    new_data = 12 * 8 * MiB
    assert summary["bytes_new"] <= new_data - (kill_after_packs * 16 * MiB) * 0.9, summary
    assert cli("verify", str(repo), "--data").returncode == 0
    out = tmp_path / "out"
    assert cli("restore", str(repo), str(out)).returncode == 0
    for p in (src / "day2").iterdir():
        assert (out / "day2" / p.name).read_bytes() == p.read_bytes()

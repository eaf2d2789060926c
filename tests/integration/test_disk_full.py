"""A full disk at the repository: exit code 6, one line, nothing committed lost."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

MiB = 1024 * 1024


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_during_sync(tmp_path, small_fs, cli):
    repo = small_fs / "repo"
    src = tmp_path / "src"
    src.mkdir()
    (src / "first.bin").write_bytes(os.urandom(2 * MiB))
    assert cli("init", str(repo), "--kdf-work", "14").returncode == 0
    first = cli("sync", str(src), str(repo), "--json")
    assert first.returncode == 0, first.stderr
    snap1 = json.loads(first.stdout)["snapshot"]

    (src / "too-big.bin").write_bytes(os.urandom(30 * MiB))  # incompressible: cannot fit in 12 MiB
    r = cli("sync", str(src), str(repo))
    assert r.returncode == 6, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no space left" in lines[0], r.stderr
    assert "Traceback" not in r.stderr

    # Nothing committed was lost, and no temporary file is left behind.
    snaps = json.loads(cli("snapshots", str(repo), "--json").stdout)["snapshots"]
    assert [s["id"] for s in snaps] == [snap1]
    assert not [f for _d, _s, fs in os.walk(repo) for f in fs if f.startswith(".tmp-")]
    assert cli("verify", str(repo), "--data").returncode == 0

    # Space freed (the big file shrinks): the next sync completes.
    (src / "too-big.bin").write_bytes(os.urandom(1 * MiB))
    again = cli("sync", str(src), str(repo), "--json")
    assert again.returncode == 0, again.stderr
    out = tmp_path / "out"
    assert cli("restore", str(repo), str(out)).returncode == 0
    assert (out / "too-big.bin").read_bytes() == (src / "too-big.bin").read_bytes()

"""restore --delta: failback into a tree that already holds yesterday's copy fetches only the difference.

Before, a restore rewrote every file from fetched chunks: failing back over the WAN meant sending
the whole tree again.  Now unchanged files are kept and changed ones are rebuilt from the chunks
their current version already holds (keyed ids, the repository's chunker), fetching only the rest.
"""
from __future__ import annotations

import filecmp
import json
import os
import random

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("restore_writers")


def _tree(root, rnd: random.Random) -> None:
    (root / "records").mkdir(parents=True)
    for i in range(30):
        (root / "records" / f"r{i:02d}.hl7").write_bytes(rnd.randbytes(3000))
    (root / "ct.dcm").write_bytes(rnd.randbytes(6 << 20))


def test_delta_restore_fetches_only_what_changed(tmp_path):
    repo, src, target = tmp_path / "repo", tmp_path / "src", tmp_path / "old-primary"
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    rnd = random.Random(12)
    _tree(src, rnd)
    assert run_cli("sync", str(src), str(repo), "--name", "h").returncode == 0
    assert run_cli("restore", str(repo), str(target), "-q").returncode == 0
    # A day at the other site: 100 bytes of the big image rewritten, one record changed, one added.
    image = bytearray((src / "ct.dcm").read_bytes())
    image[3 << 20 : (3 << 20) + 100] = rnd.randbytes(100)
    (src / "ct.dcm").write_bytes(bytes(image))
    (src / "records" / "r07.hl7").write_bytes(rnd.randbytes(3000))
    (src / "records" / "new.hl7").write_bytes(rnd.randbytes(2000))
    r = run_cli("sync", str(src), str(repo), "--name", "h", "--json")
    assert r.returncode == 0, r.stderr
    day = json.loads(r.stdout)["chunks_new"]

    os.chmod(target / "records" / "r03.hl7", 0o600)  # same size and time, another mode: not "unchanged"
    r = run_cli("restore", str(repo), str(target), "--delta", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    done = json.loads(r.stdout)
    assert done["kept"] == 28  # every record but the changed, the new and the re-moded one
    assert (target / "records" / "r03.hl7").stat().st_mode == (src / "records" / "r03.hl7").stat().st_mode
    assert done["chunks_fetched"] <= day  # no more than the day's new chunks
    assert done["chunks_seeded"] >= 10  # the rest of the image came from its old version
    cmp = filecmp.dircmp(src, target)
    assert not cmp.left_only and not cmp.right_only
    assert filecmp.cmp(src / "ct.dcm", target / "ct.dcm", shallow=False)
    assert filecmp.cmp(src / "records" / "r07.hl7", target / "records" / "r07.hl7", shallow=False)
    assert (target / "records" / "new.hl7").read_bytes() == (src / "records" / "new.hl7").read_bytes()


def test_a_seed_that_lies_costs_a_fetch_not_a_wrong_byte(tmp_path):
    """A file in the target whose bytes changed after being chunked never contributes wrong data."""
    from replicator.repo.repository import Repository
    from replicator.restore.seeds import Seeds
    from tests.conftest import PASSPHRASE

    repo_path, src, target = tmp_path / "repo", tmp_path / "src", tmp_path / "t"
    assert run_cli("init", str(repo_path), "--kdf-work", "14", "-q").returncode == 0
    src.mkdir()
    (src / "f.bin").write_bytes(random.Random(3).randbytes(1 << 20))
    assert run_cli("sync", str(src), str(repo_path), "--name", "h").returncode == 0
    target.mkdir()
    (target / "f.bin").write_bytes((src / "f.bin").read_bytes())
    with Repository.open(str(repo_path), PASSPHRASE.encode()) as repo:
        (snap,) = repo.snapshots()
        (entry,) = [e for e in repo.walk_tree(snap.tree) if e.path == "f.bin"]
        seeds = Seeds(repo, str(target))
        seeds.scan([entry])
        chunks = seeds.read_file(entry)
        first = next(chunks)  # the seed was chunked; now it changes under the reader
        (target / "f.bin").write_bytes(bytes(1 << 20))
        data = first + b"".join(chunks)
    assert data == (src / "f.bin").read_bytes()
    assert seeds.chunks_fetched >= 1

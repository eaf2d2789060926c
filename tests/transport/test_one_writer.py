"""One writer over key-less sinks: a repository holds the same objects whichever way it was written.

The same tree synced locally into one repository and over SSH into another with the same keys gives
the same kinds of objects and the same snapshot content; a repository written locally and then
served gets only new chunks on the next remote sync, and passes the receiver's key-less check."""
from __future__ import annotations

import json
import random
import shutil

from replicator.format import layout as L
from replicator.format.idlist import decode_ids
from replicator.repo.repository import Repository
from tests.conftest import PASSPHRASE, run_cli
from tests.repo.test_upgrade import kinds


def _tree(root) -> None:
    rnd = random.Random(5)
    (root / "ward").mkdir(parents=True)
    (root / "ward" / "admissions.hl7").write_text("MSH|^~\\&|ADT|TLS\n" * 3000)
    (root / "imaging.dcm").write_bytes(rnd.randbytes(3 << 20))
    (root / "empty").write_bytes(b"")


def _snapshot_view(repo_path) -> tuple:
    """What a snapshot says, independent of pack salts: source, generation, tree, and every id held and referenced."""
    with Repository.open(str(repo_path), PASSPHRASE.encode()) as repo:
        (snap,) = repo.snapshots()
        storage = repo.storage
        refs = list(decode_ids(storage.get(L.refs_name(snap.id)), "refs"))  # the proof differs: another snapshot
        held = set()
        for name in storage.list(L.IDS):
            held.update(decode_ids(storage.get(name), name))
        files = {e.path: e.chunks for e in repo.walk_tree(snap.tree)}
        return snap.source, snap.generation, snap.tree, refs, held, files, len(list(storage.list(L.PACKS)))


def test_local_and_remote_syncs_write_the_same_objects(site, tmp_path):
    local = tmp_path / "local-copy"
    shutil.copytree(site.repo, local)  # same config and keys: a copied repository
    src = tmp_path / "src"
    _tree(src)
    site.pin()
    r = run_cli(*site.sync_args(src))
    assert r.returncode == 0, r.stderr
    r = run_cli("sync", str(src), str(local), "--name", "s")
    assert r.returncode == 0, r.stderr
    assert kinds(local) == kinds(site.repo) == {"config", "keys", "data", "ids", "snapshots", "refs", "heads"}
    assert _snapshot_view(local) == _snapshot_view(site.repo)
    for repo in (local, site.repo):
        r = run_cli("serve", "--verify-only", "--repo", f"x={repo}")
        assert r.returncode == 0, r.stdout + r.stderr
        r = run_cli("verify", str(repo), "--data")
        assert r.returncode == 0, r.stdout + r.stderr


def test_repository_written_locally_then_served_gets_only_new_chunks(site, tmp_path):
    src = tmp_path / "src"
    _tree(src)
    r = run_cli("sync", str(src), str(site.repo), "--name", "s")  # seeded at the secondary from a carried disk
    assert r.returncode == 0, r.stderr
    r = run_cli("serve", "--verify-only", "--repo", f"amiens={site.repo}")
    assert r.returncode == 0, r.stdout + r.stderr
    (src / "ward" / "discharge.hl7").write_text("MSH|^~\\&|ADT|TLS|discharge\n")
    site.pin()
    r = run_cli(*site.sync_args(src), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["generation"] == 2
    assert summary["chunks_new"] == 1  # the new file; everything else was deduplicated against ids/
    assert summary["bytes_sent"] < 64 * 1024, summary  # not the 3 MiB image again
    r = run_cli("serve", "--verify-only", "--repo", f"amiens={site.repo}")
    assert r.returncode == 0, r.stdout + r.stderr


def test_upgraded_old_repository_served_gets_only_new_chunks(site, tmp_path):
    """A 0.1.0 repository (no ids/, no refs/) moved to the secondary: upgrade, then serve it."""
    from tests.repo.test_upgrade import FIXTURE_PASSPHRASE, extract_fixture

    old, src = extract_fixture(tmp_path)
    shutil.rmtree(site.repo)
    shutil.copytree(old, site.repo)
    r = run_cli("upgrade", str(site.repo), passphrase=FIXTURE_PASSPHRASE)
    assert r.returncode == 0, r.stderr
    (src / "lab" / "new.csv").write_text("1,2,3\n")
    site.pin()
    # The same data under the name 0.1.0 recorded (another name would start a second lineage: warned).
    r = run_cli(*site.sync_args(src, extra=["--name", "fixture", "--json"]), passphrase=FIXTURE_PASSPHRASE)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(r.stdout)
    assert summary["chunks_new"] == 1, summary
    r = run_cli("serve", "--verify-only", "--repo", f"amiens={site.repo}")
    assert r.returncode == 0, r.stdout + r.stderr

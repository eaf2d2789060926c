"""forget + prune: unreferenced packs go (with their ids/ lists), referenced ones never; dry runs delete
nothing; the repository verifies (--data) and every kept snapshot restores afterwards; a sync running
at the same time (another process) is never affected."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest

from replicator import constants as C
from replicator.core.params import ChunkerParams
from replicator.errors import IntegrityError, RepositoryError
from replicator.format.idlist import decode_ids
from replicator.repo.prune import delete_snapshots, prune
from replicator.repo.repository import Repository
from replicator.repo.verify import verify
from tests.conftest import PASSPHRASE, ROOT, run_cli, sync_repo
from tests.treecompare import diff, manifest

PW = b"pw"
PARAMS = ChunkerParams(min_size=4096, avg_size=16384, max_size=65536)


def _write(root, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def _add_id_lists(repo: Repository) -> None:
    """What replicator serve keeps: ids/<hash> per pack (and refs/<hash> per snapshot)."""
    for name in repo.storage.list("data/"):
        digest = name.rsplit("/", 1)[1]
        if not repo.storage.exists(f"ids/{digest}"):
            repo.storage.put(f"ids/{digest}", b"".join(sorted(e.id for e in repo.index.blobs_in(name))))
    for snap in repo.snapshots():
        if not repo.storage.exists(f"refs/{snap.id}"):
            repo.storage.put(f"refs/{snap.id}", b"")


def _read_every_chunk(repo: Repository) -> int:
    n = 0
    for snap in repo.snapshots():
        for e in repo.walk_tree(snap.tree):
            for c in e.chunks:
                repo.read_blob(c)
        n += 1
    return n


@pytest.fixture
def two_snapshots(tmp_path, monkeypatch):
    """Snapshot 1: shared + old; snapshot 2: shared + new (old removed).  Small packs."""
    monkeypatch.setattr(C, "PACK_TARGET_SIZE", 96 * 1024)
    rng = random.Random(11)
    src = tmp_path / "src"
    _write(src, {"shared/a.bin": rng.randbytes(300_000), "old/gone.bin": rng.randbytes(400_000)})
    path = str(tmp_path / "repo")
    with Repository.init(path, PW, log2n=C.SCRYPT_LOG2N_MIN, params=PARAMS) as repo:
        first = sync_repo(str(src), repo, "ward").snapshot
        (src / "old" / "gone.bin").unlink()
        os.rmdir(src / "old")
        _write(src, {"new/fresh.bin": rng.randbytes(200_000)})
        second = sync_repo(str(src), repo, "ward").snapshot
        _add_id_lists(repo)
    return path, src, first, second


def test_prune_deletes_only_unreferenced_packs_and_their_id_lists(two_snapshots):
    path, src, first, second = two_snapshots
    with Repository.open(path, PW, exclusive=True) as repo:
        packs_before = set(repo.storage.list("data/"))
        assert prune(repo).packs_deleted == 0  # everything is still referenced
        delete_snapshots(repo, [first.id])
        assert not repo.storage.exists(f"snapshots/{first.id}") and not repo.storage.exists(f"refs/{first.id}")
        dry = prune(repo, dry_run=True)
        assert dry.packs_deleted >= 2 and set(repo.storage.list("data/")) == packs_before  # nothing deleted
        assert len(list(repo.storage.list("ids/"))) == len(packs_before)
        report = prune(repo)
        assert report.deleted == dry.deleted and report.bytes_deleted == dry.bytes_deleted
        assert report.id_lists_deleted == report.packs_deleted == dry.id_lists_deleted
        after = set(repo.storage.list("data/"))
        assert after == packs_before - set(report.deleted)
        # ids/ objects exist for exactly the remaining packs
        assert {n.split("/")[1] for n in repo.storage.list("ids/")} == {n.rsplit("/", 1)[1] for n in after}
        assert set(repo.index.packs()) == after
        v = verify(repo, data=True)
        assert v.ok, v.problems
        assert _read_every_chunk(repo) == 1
        again = prune(repo)
        assert again.packs_deleted == 0
    # the kept snapshot restores byte for byte
    out = two_snapshots[0] + "-out"
    r = run_cli("restore", path, out, "-q", passphrase="pw")
    assert r.returncode == 0, r.stderr
    assert diff(manifest(str(src)), manifest(out)) == []


def test_referenced_packs_are_never_deleted_even_if_the_index_says_so(two_snapshots, monkeypatch):
    path, _src, first, _second = two_snapshots
    with Repository.open(path, PW, exclusive=True) as repo:
        packs = set(repo.storage.list("data/"))
        monkeypatch.setattr(repo.index, "blobs_in", lambda name: [])  # a lying index: "every pack is empty"
        report = prune(repo)
        assert report.packs_deleted == 0 and report.packs_kept_by_table == len(packs)
        assert set(repo.storage.list("data/")) == packs


def test_partly_used_pack_is_kept_and_its_waste_reported(tmp_path, monkeypatch):
    rng = random.Random(5)
    src = tmp_path / "src"
    _write(src, {"keep.bin": rng.randbytes(100_000), "drop.bin": rng.randbytes(150_000)})
    path = str(tmp_path / "repo")
    with Repository.init(path, PW, log2n=C.SCRYPT_LOG2N_MIN, params=PARAMS) as repo:
        first = sync_repo(str(src), repo, "s").snapshot  # one pack holds both files
        (src / "drop.bin").unlink()
        sync_repo(str(src), repo, "s")
        delete_snapshots(repo, [first.id])
        report = prune(repo)
        assert report.packs_partly_used == 1
        assert 150_000 <= report.bytes_reclaimable_in_partly_used < 200_000
        assert verify(repo, data=True).ok


def test_prune_needs_the_lock_and_refuses_damaged_snapshots_without_refs(two_snapshots):
    """A damaged snapshot with a refs/ object is pruned around (tests/cli/test_damaged_snapshots.py);
    without one, what it references is unknown and nothing is deleted."""
    path, _src, first, second = two_snapshots
    with Repository.open(path, PW) as repo:
        with pytest.raises(RepositoryError, match="exclusively"):
            prune(repo)
        with pytest.raises(RepositoryError, match="exclusively"):
            delete_snapshots(repo, [first.id])
    snap_file = os.path.join(path, "snapshots", first.id)
    data = bytearray(open(snap_file, "rb").read())
    data[-1] ^= 1
    os.chmod(snap_file, 0o600)
    open(snap_file, "wb").write(bytes(data))
    with Repository.open(path, PW, exclusive=True) as repo:
        delete_snapshots(repo, [second.id])  # so that prune would have something to delete
        report = prune(repo, dry_run=True)
        listed = set(decode_ids(repo.storage.get(f"refs/{first.id}"), "refs"))
        assert report.deleted  # the second snapshot's own data would go ...
        for pack in report.deleted:  # ... but nothing the damaged one's refs/ lists
            assert not {e.id for e in repo.index.blobs_in(pack)} & listed
        assert [d["id"] for d in report.damaged_snapshots] == [first.id]
        os.unlink(os.path.join(path, "refs", first.id))
        packs = set(repo.storage.list("data/"))
        with pytest.raises(IntegrityError, match="nothing deleted"):
            prune(repo)
        assert set(repo.storage.list("data/")) == packs


def test_orphaned_id_lists_and_refs_are_removed(two_snapshots):
    path, *_ = two_snapshots
    with Repository.open(path, PW, exclusive=True) as repo:
        repo.storage.put("ids/" + "ab" * 32, b"\0" * 32)
        repo.storage.put("refs/" + "cd" * 32, b"")
        report = prune(repo, dry_run=True)
        assert report.id_lists_deleted == 1 and report.refs_deleted == 1
        assert repo.storage.exists("ids/" + "ab" * 32)
        report = prune(repo)
        assert report.id_lists_deleted == 1 and report.refs_deleted == 1
        assert not repo.storage.exists("ids/" + "ab" * 32) and not repo.storage.exists("refs/" + "cd" * 32)


def test_cli_forget_and_prune(two_snapshots, tmp_path):
    path, src, first, second = two_snapshots
    r = run_cli("forget", path, "--keep-last", "1", "--dry-run", "--json", passphrase="pw")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["removed"] == 1 and out["kept"] == 1 and out["dry_run"]
    assert os.path.exists(os.path.join(path, "snapshots", first.id))
    r = run_cli("forget", path, passphrase="pw")
    assert r.returncode == 2 and "no --keep-*" in r.stderr
    r = run_cli("forget", path, "--keep-last", "1", "--source", "nosuch", passphrase="pw")
    assert r.returncode == 2, r.stderr
    r = run_cli("forget", path, "--keep-last", "1", "--json", passphrase="pw")
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(os.path.join(path, "snapshots", first.id))
    r = run_cli("prune", path, "--dry-run", "--json", passphrase="pw")
    assert r.returncode == 0, r.stderr
    dry = json.loads(r.stdout)
    assert dry["packs_deleted"] >= 2 and dry["dry_run"]
    r = run_cli("prune", path, "--json", passphrase="pw")
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout)
    assert done["deleted"] == dry["deleted"]
    r = run_cli("prune", path, passphrase="pw")
    assert r.returncode == 0 and "deleted 0 unreferenced packs" in r.stdout, r.stdout
    v = run_cli("verify", path, "--data", passphrase="pw")
    assert v.returncode == 0, v.stdout + v.stderr
    out_dir = tmp_path / "restored"
    r = run_cli("restore", path, str(out_dir), "-q", passphrase="pw")
    assert r.returncode == 0, r.stderr
    assert diff(manifest(str(src)), manifest(str(out_dir))) == []


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, REPLICATOR_PASSPHRASE=PASSPHRASE)
    return subprocess.run([sys.executable, "-m", "replicator", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300, stdin=subprocess.DEVNULL)


def test_sync_and_prune_running_at_the_same_time(tmp_path):
    """Syncs (one process each) and forget+prune (other processes) in loops: the lock serialises them;
    afterwards verify --data passes and every kept snapshot restores exactly what was synced."""
    repo = str(tmp_path / "repo")
    assert _cli("init", repo, "--kdf-work", "14", "--chunk-sizes", "4096,16384,65536", "-q").returncode == 0
    src = tmp_path / "src"
    rng = random.Random(3)
    _write(src, {f"d{i}/f{j}.bin": rng.randbytes(60_000) for i in range(3) for j in range(4)})
    expected: dict[str, dict] = {}
    stop = threading.Event()
    outcomes = {"prune_ok": 0, "prune_locked": 0, "sync_locked": 0, "other": []}

    def pruner() -> None:
        while not stop.is_set():
            for args in (("forget", repo, "--keep-last", "2", "-q"), ("prune", repo, "--json")):
                r = _cli(*args)
                if r.returncode == 0:
                    outcomes["prune_ok"] += args[0] == "prune"
                elif r.returncode == 3 and "locked" in r.stderr:
                    outcomes["prune_locked"] += 1
                else:
                    outcomes["other"].append((args[0], r.returncode, r.stderr))

    thread = threading.Thread(target=pruner)
    thread.start()
    try:
        for round_ in range(8):
            # change a few files, drop one, add one: every round leaves garbage for prune
            for j in range(2):
                (src / f"d{round_ % 3}" / f"f{j}.bin").write_bytes(rng.randbytes(60_000))
            victim = sorted(src.rglob("*.bin"))[0]
            victim.unlink()
            _write(src, {f"d{round_ % 3}/n{round_}.bin": rng.randbytes(50_000)})
            snapshot_manifest = manifest(str(src), owner=False)
            deadline = time.monotonic() + 120
            while True:
                r = _cli("sync", str(src), repo, "--name", "ward", "--no-cache", "--json")
                if r.returncode == 0:
                    expected[json.loads(r.stdout)["snapshot"]] = snapshot_manifest
                    break
                assert r.returncode == 3 and "locked" in r.stderr, r.stderr
                outcomes["sync_locked"] += 1
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    assert not outcomes["other"], outcomes["other"]
    assert outcomes["prune_ok"] >= 1, outcomes
    print("concurrency outcomes:", {k: v for k, v in outcomes.items() if k != "other"})
    # the pruner may have last run several syncs ago: a last forget and prune with no sync around
    assert _cli("forget", repo, "--keep-last", "2", "-q").returncode == 0
    final = _cli("prune", repo, "--json")
    assert final.returncode == 0, final.stderr
    v = _cli("verify", repo, "--data", "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    remaining = [n for n in os.listdir(os.path.join(repo, "snapshots"))]
    assert len(remaining) == 2
    for sid in remaining:
        out = tmp_path / f"restore-{sid[:8]}"
        r = _cli("restore", repo, str(out), "--snapshot", sid, "-q")
        assert r.returncode == 0, r.stderr
        assert diff(expected[sid], manifest(str(out), owner=False)) == [], sid

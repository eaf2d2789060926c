"""Many writers, one repository (issue 12): concurrent syncs share it (shared lock objects, store/lock.py),
forget and prune exclude them (exclusive), and everything written restores identical."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import PASSPHRASE, ROOT, run_cli
from tests.transport.conftest import make_tree
from tests.treecompare import diff, manifest

SENDERS = 8


def _popen(args: list[str], cache: str, passphrase: bool) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "REPLICATOR_PASSPHRASE"}
    if passphrase:
        env["REPLICATOR_PASSPHRASE"] = PASSPHRASE
    return subprocess.Popen([sys.executable, "-m", "replicator", *args, "--cache-dir", cache], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _all_succeed(procs: list[subprocess.Popen]) -> None:
    outcomes = [(p.wait(600), *p.communicate()) for p in procs]
    # Exit 1 with warnings only: "starts a new lineage" beside the other sources is expected here.
    failed = [err for rc, _out, err in outcomes
              if rc not in (0, 1) or (rc == 1 and not all(line.startswith("replicator: warning:")
                                                          for line in err.strip().splitlines()))]
    assert not failed, failed


def _trees(tmp_path, n: int) -> list:
    trees = []
    for i in range(n):
        src = tmp_path / f"src{i}"
        make_tree(src, 12, 20_000 + i, seed=i)
        (src / "shared.dcm").write_bytes(b"the same bytes at every site " * 2000)  # deduplicated across writers
        trees.append(src)
    return trees


def _verify_and_restore_each(tmp_path, repo, trees) -> None:
    r = run_cli("verify", str(repo), "--data")
    assert r.returncode == 0, r.stdout + r.stderr
    for i, src in enumerate(trees):
        out = tmp_path / f"out{i}"
        r = run_cli("restore", str(repo), str(out), "--source", f"site{i}")
        assert r.returncode == 0, r.stdout + r.stderr
        assert diff(manifest(str(src)), manifest(str(out))) == [], f"site{i}"


def test_concurrent_local_syncs_into_one_directory(tmp_path):
    repo = tmp_path / "repo"
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    trees = _trees(tmp_path, 4)
    _all_succeed([_popen(["sync", str(src), str(repo), "--name", f"site{i}", "-q"], str(tmp_path / f"c{i}"), True)
                  for i, src in enumerate(trees)])
    assert not os.listdir(repo / "locks")  # every writer removed its lock object
    _verify_and_restore_each(tmp_path, repo, trees)


def test_eight_senders_over_ssh_into_one_repository(site, tmp_path):
    site.pin()
    trees = _trees(tmp_path, SENDERS)
    procs = [_popen(["sync", str(src), site.url(), "--name", f"site{i}", "-q", "--identity", str(site.keys["writer"]),
                     "--known-hosts", str(site.known_hosts)], str(tmp_path / f"c{i}"), True)
             for i, src in enumerate(trees)]
    _all_succeed(procs)
    assert len(site.snapshots()) == SENDERS
    _verify_and_restore_each(tmp_path, site.repo, trees)
    # A second round: each source continues its own lineage, never refused for another's commit.
    for src in trees:
        (src / "new.dcm").write_bytes(os.urandom(5000))
    _all_succeed([_popen(["sync", str(src), site.url(), "--name", f"site{i}", "-q", "--identity",
                          str(site.keys["writer"]), "--known-hosts", str(site.known_hosts)], str(tmp_path / f"c{i}"),
                         True) for i, src in enumerate(trees)])
    assert len(site.snapshots()) == 2 * SENDERS
    _verify_and_restore_each(tmp_path, site.repo, trees)


def test_prune_is_refused_while_a_writer_holds_a_shared_lock_and_vice_versa(tmp_path):
    from replicator.store.local import LocalStorage
    from replicator.store.lock import EXCLUSIVE, SHARED, ObjectLock

    repo = tmp_path / "repo"
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    src = _trees(tmp_path, 1)[0]
    storage = LocalStorage(str(repo))
    with ObjectLock(storage, SHARED, "sync", host="ward-7"):  # a writer on another host
        r = run_cli("prune", str(repo))
        assert r.returncode == 3, r.stdout + r.stderr
        assert "pid" in r.stderr and "ward-7 (sync)" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        r = run_cli("sync", str(src), str(repo), "--name", "site0", "-q", "--cache-dir", str(tmp_path / "c"))
        assert r.returncode in (0, 1) and "error" not in r.stderr, r.stderr  # writers share
    with ObjectLock(storage, EXCLUSIVE, "prune", host="ward-7"):
        r = run_cli("sync", str(src), str(repo), "--name", "site0", "-q", "--cache-dir", str(tmp_path / "c"))
        assert r.returncode == 3 and "ward-7 (prune)" in r.stderr, r.stderr
    assert run_cli("prune", str(repo)).returncode == 0


@pytest.mark.parametrize("command", ["forget", "prune"])
def test_forget_and_prune_through_serve_are_refused_while_another_session_writes(site, tmp_path, command):
    from replicator.store.local import LocalStorage
    from replicator.store.lock import SHARED, ObjectLock

    site.pin()
    src = _trees(tmp_path, 1)[0]
    for round_ in range(2):  # two snapshots: forget --keep-last 1 has one to forget
        (src / "round.dcm").write_bytes(os.urandom(1000 + round_))
        r = run_cli(*site.sync_args(src, extra=("--cache-dir", str(tmp_path / "c"), "-q")))
        assert r.returncode == 0, r.stderr
    with ObjectLock(LocalStorage(str(site.repo)), SHARED, "serve", host="other-receiver"):
        args = ["prune", site.url()] if command == "prune" else ["forget", site.url(), "--keep-last", "1"]
        r = run_cli(*site.remote(*args))
        assert r.returncode != 0 and "other-receiver" in r.stdout + r.stderr, r.stdout + r.stderr
    assert len(site.snapshots()) == 2  # nothing deleted

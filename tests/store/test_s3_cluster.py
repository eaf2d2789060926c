"""A secondary on a SeaweedFS cluster survives the loss of a volume server in the middle of a sync.

One master, volume servers on one rack, replication ``001`` (every object on two servers of the rack), a
filer and an S3 gateway, each a separate process on loopback (tests/seaweed.py).  The sync is held after its
first pack is stored and a volume server is killed:

* with three volume servers the sync goes on: puts routed to the dead server fail until the master drops it,
  and must be retried, not fail the sync.  The data then verifies and restores byte for byte while the
  server is still down, from the one replica that is left of each volume;
* with two, every write fails while one is down (``001`` needs two live servers: what docs/OPERATIONS.md
  tells operators), the sync's puts are retried meanwhile, and once the server is back (a reboot) the sync
  completes, verifies and restores.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time

import pytest

from replicator import constants as C
from replicator.errors import StorageError
from replicator.format import layout as L
from replicator.repo.repository import Repository
from replicator.store.location import s3_settings
from replicator.store.s3 import S3Storage
from tests.conftest import run_cli, sync_repo
from tests.seaweed import cli_env, running_cluster
from tests.transport.conftest import make_tree
from tests.treecompare import diff, manifest

PW = "pw"
PACK_SIZE = 2 << 20  # several packs from a tree of a few tens of MB
FILES, FILE_SIZE = 12, 3_000_000  # 36 MB of incompressible data: about 18 packs
DOWN_SECONDS = 5.0  # how long the lost server stays down with only two (the sync's retries outlast it)
SYNC_GUARD = 240.0  # a hung sync fails the test instead of hanging it (not a timing assertion)


@pytest.fixture
def cluster(tmp_path_factory):
    with running_cluster(str(tmp_path_factory.mktemp("seaweed-cluster")), volumes=3) as c:
        yield c


@pytest.fixture
def pair(tmp_path_factory):
    with running_cluster(str(tmp_path_factory.mktemp("seaweed-pair")), volumes=2) as c:
        yield c


def _sync_with_a_loss(cluster, tmp_path, monkeypatch, while_down) -> tuple[str, dict, object]:
    """Sync a tree into the cluster, killing volume server 0 once the first pack is stored; ``while_down()``
    runs with the server dead and the sync going on.  :returns: (url, the sync's outcome, the tree)."""
    env = cli_env(cluster)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    url = f"s3://{cluster.bucket}/secondary"
    src = tmp_path / "src"
    make_tree(src, FILES, FILE_SIZE, seed=11)
    Repository.init(url, PW.encode(), log2n=C.SCRYPT_LOG2N_MIN).close()

    first_pack, killed = threading.Event(), threading.Event()
    real_put = S3Storage.put

    def put(self, name, data, *, overwrite=False):
        real_put(self, name, data, overwrite=overwrite)
        if L.is_pack(name) and not first_pack.is_set():
            first_pack.set()
            killed.wait()  # the rest of the sync runs after the volume server is gone

    outcome: dict = {}

    def sync() -> None:
        try:
            with Repository.open(url, PW.encode(), exclusive=True) as repo:
                outcome["report"] = sync_repo(str(src), repo, "ward")
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(S3Storage, "put", put)
        mp.setattr(C, "PACK_TARGET_SIZE", PACK_SIZE)
        runner = threading.Thread(target=sync, daemon=True)
        runner.start()
        try:
            assert first_pack.wait(SYNC_GUARD), f"no pack stored: {outcome}"
            assert cluster.live_volume_servers() == cluster.volumes
            cluster.stop_volume(0)
        finally:
            killed.set()
        while_down()
        runner.join(SYNC_GUARD)
    assert not runner.is_alive(), "the sync hung after a volume server was lost\n" + cluster.logs()
    assert "error" not in outcome, f"{outcome['error']!r}\n{cluster.logs()}"
    return url, outcome, src


def _verify_and_restore(cluster, url, src, tmp_path) -> None:
    env = cli_env(cluster)
    store = S3Storage(s3_settings(url, env))
    packs = list(store.list("data/"))
    store.close()
    assert len(packs) >= FILES, packs  # several packs, most of them stored after the loss
    r = run_cli("verify", url, "--data", passphrase=PW, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    out = tmp_path / "out"
    r = run_cli("restore", url, str(out), passphrase=PW, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    assert diff(manifest(str(src), owner=False), manifest(str(out), owner=False)) == []


def test_sync_survives_a_volume_server_loss(cluster, tmp_path, monkeypatch):
    url, _outcome, src = _sync_with_a_loss(cluster, tmp_path, monkeypatch, lambda: None)
    assert cluster.live_volume_servers() == 2  # all that follows reads with the server still down
    _verify_and_restore(cluster, url, src, tmp_path)


def test_with_two_volume_servers_writes_wait_for_the_lost_one(pair, tmp_path, monkeypatch):
    probe: dict = {}

    def while_down() -> None:
        # One try, no retries: does the store take a new object with one of its two servers gone?
        store = S3Storage(dataclasses.replace(s3_settings(f"s3://{pair.bucket}/probe", cli_env(pair)),
                                              max_attempts=1))
        try:
            store.put("probe", os.urandom(1 << 20), overwrite=True)
            probe["stored"] = True
        except StorageError as exc:
            probe["error"] = str(exc)
        finally:
            store.close()
        time.sleep(DOWN_SECONDS)  # the sync's puts fail and are retried meanwhile
        pair.start_volume(0)  # the server is back, as after a reboot

    url, _outcome, src = _sync_with_a_loss(pair, tmp_path, monkeypatch, while_down)
    assert "error" in probe, f"a write succeeded with one of two volume servers down: {probe}"
    assert pair.live_volume_servers() == 2
    _verify_and_restore(pair, url, src, tmp_path)

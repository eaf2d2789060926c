"""A secondary on a SeaweedFS cluster survives the loss of a volume server in the middle of a sync.

One master, three volume servers on one rack, replication ``001`` (every object on two servers of the rack),
a filer and an S3 gateway, each a separate process on loopback (tests/seaweed.py).  The sync is held after
its first pack is stored, a volume server is killed, and the sync goes on: puts routed to the dead server fail
until the master drops it, and must be retried, not fail the sync.  The data then verifies and restores byte
for byte while the server is still down, from the one replica that is left of each volume.
"""
from __future__ import annotations

import threading

import pytest

from replicator import constants as C
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
SYNC_GUARD = 240.0  # a hung sync fails the test instead of hanging it (not a timing assertion)


@pytest.fixture
def cluster(tmp_path_factory):
    with running_cluster(str(tmp_path_factory.mktemp("seaweed-cluster")), volumes=3) as c:
        yield c


def test_sync_survives_a_volume_server_loss(cluster, tmp_path, monkeypatch):
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
            assert cluster.live_volume_servers() == 3
            cluster.stop_volume(0)
        finally:
            killed.set()
        runner.join(SYNC_GUARD)
    assert not runner.is_alive(), "the sync hung after a volume server was lost\n" + cluster.logs()
    assert "error" not in outcome, f"{outcome['error']!r}\n{cluster.logs()}"

    store = S3Storage(s3_settings(url, env))
    packs = list(store.list("data/"))
    store.close()
    assert len(packs) >= FILES, packs  # several packs, most of them stored after the loss
    assert cluster.live_volume_servers() == 2  # all that follows reads with the server still down
    r = run_cli("verify", url, "--data", passphrase=PW, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    out = tmp_path / "out"
    r = run_cli("restore", url, str(out), passphrase=PW, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    assert diff(manifest(str(src), owner=False), manifest(str(out), owner=False)) == []


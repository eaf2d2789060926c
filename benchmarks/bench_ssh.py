"""Replication over loopback SSH: replicator (sync to `replicator serve`) beside `rsync -a` over OpenSSH.

Initial sync of the day-1 corpus, then the "next day" sync after corpus.mutate.
Records wall time and bytes sent (replicator: uploaded frame bytes from
`sync --json`; rsync: "Total bytes sent" of --stats) in extra_info.  rsync runs
only when `rsync` and `sshd` exist and a private sshd starts on a free port;
otherwise it is skipped with the reason.  Timings are never asserted.
"""
from __future__ import annotations

import json
import shutil
import time

import pytest

from benchmarks import corpus
from benchmarks.conftest import QUICK, dir_bytes, fresh_copy, record_rate, restore_place, rsync_over_ssh, served_site
from tests.conftest import PASSPHRASE, ROOT, run_cli
from tests.transport.conftest import stop_server

RESTORE_ROUNDS = 1 if QUICK else 3


@pytest.fixture(scope="module")
def ssh_site(tmp_path_factory, corpus_day1):
    tmp = tmp_path_factory.mktemp("sshbench")
    site = served_site(tmp)
    work = fresh_copy(corpus_day1[0], tmp / "work")
    yield site, work
    stop_server(site)


def _sync(site, work, env):
    t0 = time.perf_counter()
    r = run_cli(*site.sync_args(work), "--json", env=env)
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    return wall, json.loads(r.stdout)


@pytest.mark.benchmark(group="e2e-ssh")
def test_ssh_initial(benchmark, ssh_site, tmp_path):
    site, work = ssh_site
    env = {"REPLICATOR_CACHE_DIR": str(site.tmp / "cache")}
    out = {}
    benchmark.pedantic(lambda: out.update(zip(("wall", "s"), _sync(site, work, env))), rounds=1, iterations=1)
    s = out["s"]
    record_rate(benchmark, s["bytes_total"], wall_s=round(out["wall"], 3), bytes_sent=s["bytes_sent"],
                packs=s["packs_written"])


@pytest.mark.benchmark(group="e2e-ssh")
def test_ssh_next_day(benchmark, ssh_site):
    site, work = ssh_site
    env = {"REPLICATOR_CACHE_DIR": str(site.tmp / "cache")}
    corpus.mutate(work, rate=0.05, seed=2)
    out = {}
    benchmark.pedantic(lambda: out.update(zip(("wall", "s"), _sync(site, work, env))), rounds=1, iterations=1)
    s = out["s"]
    record_rate(benchmark, s["bytes_total"], wall_s=round(out["wall"], 3), bytes_sent=s["bytes_sent"],
                bytes_new=s["bytes_new"])


def _restore(args: list[str], target, env) -> float:
    shutil.rmtree(target, ignore_errors=True)
    t0 = time.perf_counter()
    r = run_cli("restore", *args[:1], str(target), *args[1:], "-q", env=env)
    assert r.returncode == 0, r.stderr
    return time.perf_counter() - t0


@pytest.mark.benchmark(group="e2e-ssh")
def test_restore_over_ssh_beside_a_local_restore(benchmark, ssh_site, tmp_path):
    """Restore the latest snapshot from ssh:// on loopback (GET_RANGES, index cached at the reader) and from the
    repository's own directory, in the same run, local and remote in turn (the file system's own noise hits
    both alike), best of ``RESTORE_ROUNDS`` each; ratio = remote / local wall time."""
    site, work = ssh_site
    _sync(site, work, {"REPLICATOR_CACHE_DIR": str(site.tmp / "cache")})  # a snapshot when run alone
    with restore_place(benchmark, tmp_path, dir_bytes(work)) as into:
        _restore_both_ways(benchmark, site, into)


def _restore_both_ways(benchmark, site, tmp_path) -> None:
    env = {"REPLICATOR_CACHE_DIR": str(site.tmp / "restore-cache")}
    remote = [site.url(), "--identity", str(site.keys["writer"]), "--known-hosts", str(site.known_hosts)]
    _restore(remote, tmp_path / "warm", env)  # the first remote read builds the index cache; not measured
    local, far = [], []
    for _ in range(RESTORE_ROUNDS - 1):
        local.append(_restore([str(site.repo)], tmp_path / "local", env))
        far.append(_restore(remote, tmp_path / "remote", env))
    local.append(_restore([str(site.repo)], tmp_path / "local", env))
    benchmark.pedantic(lambda: far.append(_restore(remote, tmp_path / "remote", env)), rounds=1, iterations=1)
    benchmark.extra_info.update(remote_wall_s=round(min(far), 3), local_wall_s=round(min(local), 3),
                                ratio_remote_to_local=round(min(far) / min(local), 2),
                                rounds=RESTORE_ROUNDS)


@pytest.mark.benchmark(group="e2e-ssh")
def test_rsync_initial_and_next_day(benchmark, sshd, corpus_day1, tmp_path):
    ssh, tmp = sshd
    work = fresh_copy(corpus_day1[0], tmp_path / "work")
    dest = tmp_path / "dest"
    w1, b1 = rsync_over_ssh(ssh, work, dest)
    corpus.mutate(work, rate=0.05, seed=2)
    out = {}
    benchmark.pedantic(lambda: out.update(zip(("wall", "sent"), rsync_over_ssh(ssh, work, dest))), rounds=1, iterations=1)
    benchmark.extra_info.update(initial_wall_s=round(w1, 3), initial_bytes_sent=b1,
                                next_day_wall_s=round(out["wall"], 3), next_day_bytes_sent=out["sent"])


__all__ = ["PASSPHRASE", "ROOT"]

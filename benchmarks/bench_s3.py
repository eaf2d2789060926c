"""The same sync into SeaweedFS (s3://, a real server on loopback) and into a local directory, side by side.

Each round: a fresh repository in each place, then one `replicator sync` of the day-1 corpus into it as a
subprocess (wall time and peak RSS measured the same way for both).  extra_info holds both times and the
ratio s3/local.  Skipped only when the SeaweedFS binary cannot run.  Nothing here asserts on timings.
"""
from __future__ import annotations

import itertools
import json

import pytest

from benchmarks.conftest import PASSPHRASE, ROUNDS, replicator_cmd, run_measured

_round = itertools.count()


@pytest.fixture(scope="module")
def weed(tmp_path_factory):
    from tests.seaweed import running

    with running(str(tmp_path_factory.mktemp("seaweed"))) as server:
        yield server


def _env(server, cache) -> dict:
    from tests.seaweed import cli_env

    return {"REPLICATOR_PASSPHRASE": PASSPHRASE, "REPLICATOR_CACHE_DIR": str(cache)} | cli_env(server)


def _sync(src, repo: str, cache, env) -> float:
    run_measured(replicator_cmd("init", repo, "--kdf-work", "14", "-q"), env)
    m = run_measured(replicator_cmd("sync", str(src), repo, "--name", "bench", "--json", "--cache-dir", str(cache)),
                     env)
    json.loads(m.stdout)
    return m.seconds


def test_sync_s3_vs_local(benchmark, weed, corpus_day1, tmp_path):
    src, stats = corpus_day1
    times: dict[str, list[float]] = {"local": [], "s3": []}

    def one_round():
        n = next(_round)
        cache = tmp_path / f"cache{n}"
        env = _env(weed, cache)
        times["local"].append(_sync(src, str(tmp_path / f"local{n}"), cache, env))
        times["s3"].append(_sync(src, f"s3://{weed.bucket}/bench{n}", cache, env))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    best_local, best_s3 = min(times["local"]), min(times["s3"])
    # The benchmark's own time covers both syncs (and the inits): the per-target figures are these.
    benchmark.extra_info.update(bytes=stats.bytes, files=stats.files, local_s=round(best_local, 2),
                                s3_s=round(best_s3, 2), ratio_s3_over_local=round(best_s3 / best_local, 2),
                                local_MBps=round(stats.bytes / best_local / 1e6, 1),
                                s3_MBps=round(stats.bytes / best_s3 / 1e6, 1))

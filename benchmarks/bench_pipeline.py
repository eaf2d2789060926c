"""End-to-end local sync on the generated hospital corpus: initial and next day.

Each round syncs into a fresh repository (setup, not timed); the next-day
benchmark first syncs day 1 and applies the "next day" mutation (not timed),
then times the second sync, which the state cache and deduplication make
cheap.  Records MB/s of source bytes, bytes stored, and chunks new/total.
"""
from __future__ import annotations

import shutil

import pytest

from benchmarks import corpus
from benchmarks.conftest import QUICK, record_rate
from replicator.repo.repository import Repository
from replicator.sync.engine import sync
from replicator.sync.state import StateCache

ROUNDS = 1 if QUICK else 3


@pytest.mark.benchmark(group="e2e-local")
def test_initial_sync_local(benchmark, corpus_day1, tmp_path):
    src, _stats = corpus_day1
    counter = iter(range(1000))

    def setup():
        repo = Repository.init(str(tmp_path / f"repo{next(counter)}"), b"bench", log2n=14)
        return (repo,), {}

    reports = []

    def run(repo):
        with repo:
            reports.append((sync(str(src), repo, "bench"), dict(repo.stats)))

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    report, stats = reports[-1]
    record_rate(benchmark, report.bytes_total, files=report.files, bytes_stored=stats["bytes_written"],
                chunks=report.chunks_total)


@pytest.mark.benchmark(group="e2e-local")
def test_next_day_sync_local(benchmark, corpus_day1, tmp_path):
    src, _stats = corpus_day1
    counter = iter(range(1000))

    def setup():
        n = next(counter)
        work = tmp_path / f"work{n}"
        shutil.copytree(src, work, symlinks=True)
        repo = Repository.init(str(tmp_path / f"repo{n}"), b"bench", log2n=14)
        state = StateCache(str(tmp_path / f"state{n}.sqlite"))
        sync(str(work), repo, "bench", state=state)
        corpus.mutate(work, rate=0.05, seed=2)
        repo.stats.update(packs_written=0, bytes_written=0, blobs_written=0)
        return (repo, work, state), {}

    reports = []

    def run(repo, work, state):
        with repo:
            reports.append((sync(str(work), repo, "bench", state=state), dict(repo.stats)))
        state.close()

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    report, stats = reports[-1]
    record_rate(benchmark, report.bytes_total, files=report.files, bytes_read=report.bytes_read,
                bytes_stored=stats["bytes_written"], chunks_new=report.chunks_new, chunks=report.chunks_total)

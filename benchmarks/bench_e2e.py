"""End to end on the hospital corpus: replicator beside restic, borg and rsync.

Every tool runs as a subprocess on the same generated tree in the same
session: an initial backup/sync, then the "next day" (the same working copy
mutated by benchmarks.corpus.mutate) backed up again.  Recorded per round:
wall time (the benchmark itself), peak RSS of the process, and bytes written
to the repository (rsync: bytes sent, from --stats).  scripts/bench_report.py
turns the JSON into ratios replicator/peer.  A peer that is not installed is
skipped with a message.  Nothing here asserts on timings.
"""
from __future__ import annotations

import itertools
import json
import shutil

import pytest

from benchmarks import corpus
from benchmarks.conftest import (
    PASSPHRASE,
    QUICK,
    ROUNDS,
    SCALES,
    dir_bytes,
    fresh_copy,
    record_rate,
    replicator_cmd,
    restore_place,
    run_measured,
)

ENV = {"REPLICATOR_PASSPHRASE": PASSPHRASE, "RESTIC_PASSWORD": PASSPHRASE, "BORG_PASSPHRASE": PASSPHRASE,
       "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes", "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}


class Tool:
    """How one tool initialises a repository and backs up a directory."""

    name = ""

    def available(self) -> str | None:
        return None

    def init(self, repo, cache) -> None: ...

    def backup(self, src, repo, cache, tag: str):
        raise NotImplementedError


class Replicator(Tool):
    name = "replicator"

    def init(self, repo, cache):
        run_measured(replicator_cmd("init", str(repo), "--kdf-work", "14"), ENV)

    def backup(self, src, repo, cache, tag):
        m = run_measured(replicator_cmd("sync", str(src), str(repo), "--name", "bench", "--json",
                                        "--cache-dir", str(cache)), ENV)
        return m, json.loads(m.stdout)


class Restic(Tool):
    name = "restic"

    def available(self):
        return None if shutil.which("restic") else "restic is not installed (apt-get install restic)"

    def init(self, repo, cache):
        run_measured(["restic", "init", "--repo", str(repo)], ENV)

    def backup(self, src, repo, cache, tag):
        m = run_measured(
            ["sh", "-c", f'cd "{src}" && exec restic backup --repo "{repo}" --cache-dir "{cache}" --quiet .'], ENV)
        return m, {}


class Borg(Tool):
    name = "borg"

    def available(self):
        return None if shutil.which("borg") else "borg is not installed (apt-get install borgbackup)"

    def init(self, repo, cache):
        run_measured(["borg", "init", "--encryption=repokey-blake2", str(repo)], ENV | {"BORG_CACHE_DIR": str(cache)})

    def backup(self, src, repo, cache, tag):
        # zstd level 1, as replicator's default, for a like-for-like comparison.
        m = run_measured(["sh", "-c", f'cd "{src}" && exec borg create --compression zstd,1 "{repo}::{tag}" .'],
                         ENV | {"BORG_CACHE_DIR": str(cache)})
        return m, {}


class Rsync(Tool):
    """rsync -a to a local directory: the byte-copy baseline (no dedup, no encryption)."""

    name = "rsync"

    def available(self):
        return None if shutil.which("rsync") else "rsync is not installed (apt-get install rsync)"

    def init(self, repo, cache):
        repo.mkdir(parents=True, exist_ok=True)

    def backup(self, src, repo, cache, tag):
        m = run_measured(["rsync", "-a", "--delete", "--stats", f"{src}/", f"{repo}/"])
        sent = 0
        for line in m.stdout.splitlines():
            if line.startswith("Total bytes sent:"):
                sent = int(line.split(":")[1].strip().replace(",", ""))
        return m, {"bytes_sent": sent}


TOOLS = [Replicator(), Restic(), Borg(), Rsync()]


def _need(tool: Tool) -> None:
    why = tool.available()
    if why:
        pytest.skip(f"peer skipped: {why}")


@pytest.mark.benchmark(group="initial")
@pytest.mark.parametrize("tool", TOOLS, ids=lambda t: t.name)
def test_initial(benchmark, tool, corpus_days, tmp_path):
    _need(tool)
    day1, _ = corpus_days
    (m, info), stored = measure_initial(benchmark, tool, day1, tmp_path)
    record_rate(benchmark, dir_bytes(day1), tool=tool.name, peak_rss_mib=round(m.peak_rss_mib, 1),
                repo_bytes=stored, **info)


def measure_initial(benchmark, tool: Tool, src, tmp_path):
    """``tool``'s initial backup of ``src`` into a new repository each round; the last round's
    ((measured run, tool's own figures), repository bytes)."""
    n = itertools.count()
    results = []

    def setup():
        i = next(n)
        repo, cache = tmp_path / f"repo{i}", tmp_path / f"cache{i}"
        tool.init(repo, cache)
        return (repo, cache), {}

    def run(repo, cache):
        results.append((tool.backup(src, repo, cache, "day1"), dir_bytes(repo)))

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    return results[-1]


@pytest.mark.benchmark(group="next-day")
@pytest.mark.parametrize("tool", TOOLS, ids=lambda t: t.name)
def test_next_day(benchmark, tool, corpus_days, tmp_path):
    _need(tool)
    day1, day2 = corpus_days
    n = itertools.count()
    results = []

    def setup():
        i = next(n)
        work, repo, cache = tmp_path / f"work{i}", tmp_path / f"repo{i}", tmp_path / f"cache{i}"
        fresh_copy(day1, work)
        tool.init(repo, cache)
        tool.backup(work, repo, cache, "day1")
        before = dir_bytes(repo)
        corpus.mutate(work, rate=0.05, seed=2)  # the same next day as corpus_days' day2
        return (work, repo, cache, before), {}

    def run(work, repo, cache, before):
        results.append((tool.backup(work, repo, cache, "day2"), dir_bytes(repo) - before))

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    (m, info), added = results[-1]
    record_rate(benchmark, dir_bytes(day2), tool=tool.name, peak_rss_mib=round(m.peak_rss_mib, 1),
                repo_bytes_added=added, **info)


@pytest.mark.benchmark(group="restore-verify")
def test_restore(benchmark, corpus_days, tmp_path):
    """Restore of the day-1 snapshot by us and by restic, in the same run, into the same place
    (conftest.RESTORE_DIR: a memory file system unless told otherwise)."""
    day1, _ = corpus_days
    repo = tmp_path / "repo"
    Replicator().init(repo, tmp_path / "cache")
    Replicator().backup(day1, repo, tmp_path / "cache", "day1")
    n = itertools.count()
    peaks = []
    with restore_place(benchmark, tmp_path, dir_bytes(day1)) as into:
        outs: list = []

        def setup():  # untimed: a memory file system holds one restored tree at a time
            if outs:
                shutil.rmtree(outs[-1])
            outs.append(into / f"out{next(n)}")

        benchmark.pedantic(lambda: peaks.append(run_measured(replicator_cmd("restore", str(repo), str(outs[-1])), ENV)),
                           setup=setup, rounds=ROUNDS, iterations=1)
        shutil.rmtree(outs[-1])
        peer = _restic_restore_wall(day1, tmp_path, into)  # the same snapshot restored by restic, in the same run
    record_rate(benchmark, dir_bytes(day1), tool="replicator", peak_rss_mib=round(peaks[-1].peak_rss_mib, 1))
    ours = benchmark.stats.stats.median
    if peer is not None:
        benchmark.extra_info.update(restic_wall_s=round(peer, 3), rate_vs_restic=round(peer / ours, 2))


def _restic_restore_wall(day1, tmp_path, into) -> float | None:
    """Median wall time of ``restic restore latest`` of ``day1`` into ``into`` (None when restic is not
    installed)."""
    restic = Restic()
    if restic.available():
        return None
    repo, cache = tmp_path / "restic-repo", tmp_path / "restic-cache"
    restic.init(repo, cache)
    restic.backup(day1, repo, cache, "day1")
    walls = []
    for i in range(ROUNDS):
        out = into / f"restic-out{i}"
        m = run_measured(["restic", "restore", "latest", "--repo", str(repo), "--cache-dir", str(cache),
                          "--target", str(out), "--quiet"], ENV)
        walls.append(m.seconds)
        shutil.rmtree(out)
    return sorted(walls)[len(walls) // 2]


@pytest.mark.benchmark(group="restore-verify")
def test_verify_data(benchmark, corpus_days, tmp_path):
    day1, _ = corpus_days
    repo = tmp_path / "repo"
    Replicator().init(repo, tmp_path / "cache")
    Replicator().backup(day1, repo, tmp_path / "cache", "day1")
    peaks = []
    benchmark.pedantic(lambda: peaks.append(run_measured(replicator_cmd("verify", str(repo), "--data"), ENV)),
                       rounds=ROUNDS, iterations=1)
    record_rate(benchmark, dir_bytes(repo), tool="replicator", peak_rss_mib=round(peaks[-1].peak_rss_mib, 1))


@pytest.mark.benchmark(group="scaling")
@pytest.mark.parametrize("size", SCALES, ids=lambda s: f"{s >> 20}MiB")
def test_scaling_initial(benchmark, size, tmp_path_factory):
    src = tmp_path_factory.mktemp("scale") / "src"
    stats = corpus.generate(src, size, seed=3)
    base = tmp_path_factory.mktemp("scalerepo")
    n = itertools.count()
    peaks = []

    def setup():
        i = next(n)
        Replicator().init(base / f"repo{i}", base / f"cache{i}")
        return (base / f"repo{i}", base / f"cache{i}"), {}

    def run(repo, cache):
        peaks.append(Replicator().backup(src, repo, cache, "x")[0])

    benchmark.pedantic(run, setup=setup, rounds=1 if QUICK else 2, iterations=1)
    record_rate(benchmark, stats.bytes, files=stats.files, peak_rss_mib=round(peaks[-1].peak_rss_mib, 1))

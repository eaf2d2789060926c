"""The scale runs of issue 12, run by ``make bench-scale`` (``make test`` runs them at toy sizes, ``make bench``
leaves them out).

- one source of 10^6 small files (corpus.generate_small; ``BENCH_SCALE_FILES`` to change the count): the initial
  local sync, then a no-change sync, in files per second and peak RSS, beside ``rsync -a`` into a directory and
  restic in the same run (each skipped with a message when not installed);
- 500 sources of small trees (``BENCH_SCALE_SOURCES``) syncing into one ``replicator serve`` over loopback SSH,
  ``BENCH_SCALE_PARALLEL`` senders at a time (writers share a repository): total time, the receiver's peak RSS,
  and the time one Prometheus scrape of the receiver takes when ``serve`` exposes metrics.

Figures go to extra_info (scripts/bench_report.py prints them); nothing here asserts on timings.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from benchmarks import corpus
from benchmarks.bench_e2e import ENV, Replicator, Restic, Rsync, _need
from benchmarks.conftest import QUICK, replicator_cmd, run_measured, served_site
from benchmarks.measure import hwm_kib
from tests.conftest import PASSPHRASE as SITE_PASSPHRASE
from tests.transport.conftest import free_port, stop_server

# BENCH_QUICK (make test's smoke run of every benchmark): tiny sizes, so that this file cannot rot unseen.
FILES = int(os.environ.get("BENCH_SCALE_FILES", "2000" if QUICK else "1000000"))
SOURCES = int(os.environ.get("BENCH_SCALE_SOURCES", "6" if QUICK else "500"))
PARALLEL = int(os.environ.get("BENCH_SCALE_PARALLEL", "2" if QUICK else "4"))
FILES_PER_SOURCE = int(os.environ.get("BENCH_SCALE_FILES_PER_SOURCE", "5" if QUICK else "20"))


@pytest.fixture(scope="module")
def million(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale") / "src"
    return root, corpus.generate_small(root, FILES, seed=31)


@pytest.mark.benchmark(group="scale-files")
@pytest.mark.parametrize("tool", [Replicator(), Rsync(), Restic()], ids=lambda t: t.name)
def test_million_files_initial_and_no_change(benchmark, tool, million, tmp_path):
    """Initial then no-change backup of one source of FILES small files: files/s and peak RSS of each."""
    _need(tool)
    src, stats = million
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    tool.init(repo, cache)
    first, _ = tool.backup(src, repo, cache, "day1")
    out = {}
    benchmark.pedantic(lambda: out.update(m=tool.backup(src, repo, cache, "day2")[0]), rounds=1, iterations=1)
    again = out["m"]
    benchmark.extra_info.update(
        tool=tool.name, files=stats.files, bytes=stats.bytes,
        initial_wall_s=round(first.seconds, 2), initial_files_per_s=round(stats.files / first.seconds),
        initial_peak_rss_mib=round(first.peak_rss_mib, 1),
        no_change_wall_s=round(again.seconds, 2), no_change_files_per_s=round(stats.files / again.seconds),
        no_change_peak_rss_mib=round(again.peak_rss_mib, 1))
    shutil.rmtree(repo, ignore_errors=True)


def _small_trees(root, count: int, per_source: int) -> list:
    trees = []
    for i in range(count):
        t = root / f"clinic-{i:04d}"
        corpus.generate_small(t, per_source, seed=1000 + i)
        trees.append(t)
    return trees


def _scrape_seconds(port: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
        body = r.read()
    return time.perf_counter() - t0, len(body)


def _serve_has_metrics() -> bool:
    r = subprocess.run(replicator_cmd("serve", "--help"), capture_output=True, text=True, env=os.environ | ENV)
    return "--metrics-listen" in r.stdout


@pytest.mark.benchmark(group="scale-sources")
def test_many_sources_into_one_receiver(benchmark, tmp_path):
    """SOURCES small trees, each its own source, synced PARALLEL at a time into one receiver over SSH."""
    trees = _small_trees(tmp_path / "sources", SOURCES, FILES_PER_SOURCE)
    metrics_port = free_port() if _serve_has_metrics() else None
    site = served_site(tmp_path, extra_serve=("--metrics-listen", f"127.0.0.1:{metrics_port}") if metrics_port else ())
    env = ENV | {"REPLICATOR_PASSPHRASE": SITE_PASSPHRASE}

    def one(i: int) -> float:
        cmd = replicator_cmd("sync", str(trees[i]), site.url(), "--name", trees[i].name, "--json", "--identity",
                             str(site.keys["writer"]), "--known-hosts", str(site.known_hosts),
                             "--cache-dir", str(tmp_path / "cache"))
        m = run_measured(cmd, env)
        assert json.loads(m.stdout)["committed"], m.stderr
        return m.seconds

    out: dict = {}
    try:
        idle = hwm_kib(site.proc.pid) / 1024

        def all_sources():
            t0 = time.perf_counter()
            with ThreadPoolExecutor(PARALLEL) as pool:
                out["each"] = sorted(pool.map(one, range(SOURCES)))
            out["wall"] = time.perf_counter() - t0

        benchmark.pedantic(all_sources, rounds=1, iterations=1)
        peak = hwm_kib(site.proc.pid) / 1024
        scrape = _scrape_seconds(metrics_port) if metrics_port else None
    finally:
        stop_server(site)
    each = out["each"]
    benchmark.extra_info.update(
        sources=SOURCES, files_per_source=FILES_PER_SOURCE, parallel=PARALLEL, total_wall_s=round(out["wall"], 1),
        sync_median_s=round(each[len(each) // 2], 2), sync_max_s=round(each[-1], 2),
        receiver_idle_peak_rss_mib=round(idle, 1), receiver_peak_rss_mib=round(peak, 1),
        metrics_scrape_s=round(scrape[0], 3) if scrape else None,
        metrics_bytes=scrape[1] if scrape else None,
        metrics_note=None if scrape else "serve has no --metrics-listen in this build: not measured")

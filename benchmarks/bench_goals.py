"""The runs behind issue 11's goals table, each beside its peer in the same session.

- a many-small-files corpus (corpus.generate_small: 200,000 files, about 0.93 GB; quick: 300 files):
  initial, no-change and next-day syncs over loopback SSH (replicator to `replicator serve`) beside
  `rsync -a` (and `-az`, for bytes) over a private OpenSSH, and the local initial sync beside restic and borg;
- the mixed corpus (corpus.generate, 1.5 GiB; quick: 8 MiB): the same three syncs over
  SSH beside rsync, with the peak RSS of the sender (the unlock's peak apart, REPLICATOR_RESET_HWM_AFTER_UNLOCK)
  and of the receiver (VmHWM of a `replicator serve` started for that one run);
- one large imaging file (2 GiB; quick: 64 MiB): the sync rate on one core (taskset, --workers 1) as a share of
  the in-process ceiling of the same stages (chunk, id, compress, seal in one thread), and two cores vs one.

Each test records its phases in extra_info; scripts/bench_report.py turns them into the Goals section.
A peer that is not installed is skipped with the reason.  Nothing here asserts on timings.
"""
from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from benchmarks import corpus
from benchmarks.bench_e2e import ENV, Borg, Replicator, Restic, _need, measure_initial
from benchmarks.conftest import (
    QUICK,
    dir_bytes,
    fresh_copy,
    record_rate,
    replicator_cmd,
    rsync_over_ssh,
    run_measured,
    served_site,
)
from benchmarks.measure import hwm_kib
from tests.conftest import PASSPHRASE as SITE_PASSPHRASE
from tests.transport.conftest import stop_server

SMALL_FILES = 300 if QUICK else 200_000
MIXED_SIZE = (8 if QUICK else 1536) * 2**20
LARGE_SIZE = (64 if QUICK else 2048) * 2**20


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("small") / "day1"
    return root, corpus.generate_small(root, SMALL_FILES, seed=11)


@pytest.fixture(scope="session")
def mixed_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed") / "day1"
    return root, corpus.generate(root, MIXED_SIZE, seed=1)


def _replicator_over_ssh(benchmark, tmp, src):
    """Initial, no-change, then next-day sync of a working copy of ``src`` to a `replicator serve` of its own."""
    site = served_site(tmp)
    try:
        work = fresh_copy(src, tmp / "work")
        env = ENV | {"REPLICATOR_PASSPHRASE": SITE_PASSPHRASE, "REPLICATOR_CACHE_DIR": str(tmp / "cache"),
                     "REPLICATOR_RESET_HWM_AFTER_UNLOCK": "1"}
        cmd = replicator_cmd(*site.sync_args(work), "--json")
        receiver_idle = hwm_kib(site.proc.pid) / 1024
        initial = run_measured(cmd, env)
        receiver_peak = hwm_kib(site.proc.pid) / 1024
        s1 = json.loads(initial.stdout)
        out = {}

        def no_change():
            m = run_measured(cmd, env)
            out["m"], out["s"] = m, json.loads(m.stdout)

        benchmark.pedantic(no_change, rounds=1, iterations=1)
        corpus.mutate(work, rate=0.05, seed=2)
        next_day = run_measured(cmd, env)
        s3 = json.loads(next_day.stdout)
    finally:
        stop_server(site)
    peak = s1.get("peak_rss_mib", {})
    record_rate(benchmark, s1["bytes_total"], tool="replicator", quick=QUICK,
                initial_wall_s=round(initial.seconds, 3), initial_bytes_sent=s1["bytes_sent"],
                no_change_wall_s=round(out["m"].seconds, 3), no_change_bytes_sent=out["s"]["bytes_sent"],
                next_day_wall_s=round(next_day.seconds, 3), next_day_bytes_sent=s3["bytes_sent"],
                sender_peak_rss_mib=round(initial.peak_rss_mib, 1),
                sender_unlock_peak_rss_mib=peak.get("unlock"),
                sender_after_unlock_peak_rss_mib=peak.get("after_unlock"),
                receiver_idle_peak_rss_mib=round(receiver_idle, 1),
                receiver_peak_rss_mib=round(receiver_peak, 1))


def _rsync_over_ssh(benchmark, sshd, tmp, src):
    """The same three syncs with `rsync -a` over OpenSSH; `rsync -az` beside it into a second copy, for bytes."""
    ssh, _ = sshd
    work = fresh_copy(src, tmp / "work")
    a, z = tmp / "dest-a", tmp / "dest-z"
    w1, b1 = rsync_over_ssh(ssh, work, a)
    _, z1 = rsync_over_ssh(ssh, work, z, "-z")
    out = {}
    benchmark.pedantic(lambda: out.update(zip(("wall", "sent"), rsync_over_ssh(ssh, work, a))), rounds=1,
                       iterations=1)
    corpus.mutate(work, rate=0.05, seed=2)
    w3, b3 = rsync_over_ssh(ssh, work, a)
    _, z3 = rsync_over_ssh(ssh, work, z, "-z")
    record_rate(benchmark, dir_bytes(src), tool="rsync", quick=QUICK, initial_wall_s=round(w1, 3), initial_bytes_sent=b1,
                initial_bytes_sent_z=z1, no_change_wall_s=round(out["wall"], 3), no_change_bytes_sent=out["sent"],
                next_day_wall_s=round(w3, 3), next_day_bytes_sent=b3, next_day_bytes_sent_z=z3)


@pytest.mark.benchmark(group="goals-small-ssh")
def test_small_files_over_ssh_replicator(benchmark, small_corpus, tmp_path):
    _replicator_over_ssh(benchmark, tmp_path, small_corpus[0])
    benchmark.extra_info["files"] = small_corpus[1].files


@pytest.mark.benchmark(group="goals-small-ssh")
def test_small_files_over_ssh_rsync(benchmark, sshd, small_corpus, tmp_path):
    _rsync_over_ssh(benchmark, sshd, tmp_path, small_corpus[0])
    benchmark.extra_info["files"] = small_corpus[1].files


@pytest.mark.benchmark(group="goals-mixed-ssh")
def test_mixed_over_ssh_replicator(benchmark, mixed_corpus, tmp_path):
    _replicator_over_ssh(benchmark, tmp_path, mixed_corpus[0])
    benchmark.extra_info["files"] = mixed_corpus[1].files


@pytest.mark.benchmark(group="goals-mixed-ssh")
def test_mixed_over_ssh_rsync(benchmark, sshd, mixed_corpus, tmp_path):
    _rsync_over_ssh(benchmark, sshd, tmp_path, mixed_corpus[0])
    benchmark.extra_info["files"] = mixed_corpus[1].files


@pytest.mark.benchmark(group="goals-small-local")
@pytest.mark.parametrize("tool", [Replicator(), Restic(), Borg()], ids=lambda t: t.name)
def test_small_files_initial_local(benchmark, tool, small_corpus, tmp_path):
    _need(tool)
    src, stats = small_corpus
    (m, _info), _stored = measure_initial(benchmark, tool, src, tmp_path)
    record_rate(benchmark, stats.bytes, tool=tool.name, files=stats.files, quick=QUICK,
                peak_rss_mib=round(m.peak_rss_mib, 1))


@pytest.fixture(scope="module")
def large_file(tmp_path_factory):
    src = tmp_path_factory.mktemp("large") / "src"
    src.mkdir()
    size = corpus.generate_large(src / "MF0001.dcm", LARGE_SIZE)
    return src, size


def _ceiling_mb_s(path, size: int) -> float:
    """The same stages in one Python thread, streaming the file: chunk, keyed id, compress, seal (bench_core's
    test_chunk_id_compress_seal_one_thread over a file instead of a buffer)."""
    from replicator.core.chunker import Chunker, gear_table
    from replicator.core.compress import compress
    from replicator.core.crypto import Aead
    from replicator.core.ids import IdHasher
    from replicator.core.params import DEFAULT_PARAMS

    chunker, h, aead = Chunker(DEFAULT_PARAMS, gear_table(bytes(32))), IdHasher(bytes(32)), Aead(bytes(32))
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        for i, c in enumerate(chunker.chunks(f, size)):
            cid = h(c)
            method, payload = compress(c)
            aead.seal(i.to_bytes(12, "big"), bytes((method,)) + payload, cid)
    return size / (time.perf_counter() - t0) / 1e6


def _sync_mb_s(src, tmp, size: int, workers: int, cores: str | None) -> float:
    repo, cache = tmp / f"repo-w{workers}", tmp / f"cache-w{workers}"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    Replicator().init(repo, cache)
    cmd = replicator_cmd("sync", str(src), str(repo), "--name", "large", "--json", "--cache-dir", str(cache),
                         "--workers", str(workers))
    m = run_measured(["taskset", "-c", cores, *cmd] if cores else cmd, ENV)
    return size / m.seconds / 1e6


@pytest.mark.benchmark(group="goals-large")
def test_large_file_one_core_and_two(benchmark, large_file, tmp_path):
    """MB/s of one large file: one core (taskset -c 0, --workers 1), two cores (--workers 2), and the ceiling."""
    if not shutil.which("taskset"):
        pytest.skip("taskset is not installed (util-linux): no one-core run")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU only: no two-core run")
    src, size = large_file
    ceiling = _ceiling_mb_s(src / "MF0001.dcm", size)
    out = {}
    benchmark.pedantic(lambda: out.update(one=_sync_mb_s(src, tmp_path, size, 1, "0")), rounds=1, iterations=1)
    two = _sync_mb_s(src, tmp_path, size, 2, None)
    record_rate(benchmark, size, quick=QUICK, ceiling_mb_s=round(ceiling, 1), one_core_mb_s=round(out["one"], 1),
                two_cores_mb_s=round(two, 1), one_core_of_ceiling=round(out["one"] / ceiling, 2),
                two_cores_vs_one=round(two / out["one"], 2))

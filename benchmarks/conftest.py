"""Shared benchmark fixtures: seeded corpora, measured subprocesses, MB/s.

BENCH_QUICK=1 (used by `make test` in CI) shrinks every data set so the suite
runs in about a minute while still executing every benchmark.  End-to-end
benchmarks run every tool, ours included, as a subprocess, so wall time and
peak memory (from wait4) are measured the same way for all of them.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

QUICK = os.environ.get("BENCH_QUICK") == "1"
MiB = 1024 * 1024
CORPUS_SIZE = (24 if QUICK else 256) * MiB
SCALES = [8 * MiB, 16 * MiB] if QUICK else [64 * MiB, 128 * MiB, 256 * MiB]
ROUNDS = 1 if QUICK else 3
PASSPHRASE = "benchmark passphrase"


def record_rate(benchmark, nbytes: int, **extra) -> None:
    """Store bytes and MB/s (from the best round) in the benchmark's extra_info."""
    benchmark.extra_info["bytes"] = nbytes
    benchmark.extra_info.update(extra)
    if benchmark.stats is not None:
        benchmark.extra_info["MB/s"] = round(nbytes / benchmark.stats.stats.min / 1e6, 1)


@dataclass
class Measured:
    seconds: float
    peak_rss_mib: float
    stdout: str
    stderr: str


def _hwm_kib(pid: int) -> int:
    """VmHWM (peak RSS of the process's current image) from /proc, 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(cmd: list[str], env: dict | None = None) -> Measured:
    """Run a command to completion: wall time, and its peak RSS.

    Peak RSS is VmHWM polled from /proc every 10 ms (it only grows).  rusage's
    ru_maxrss is not used: for a child forked from this large test process it
    counts the parent's pages from before exec.
    """
    import threading

    full_env = dict(os.environ)
    full_env.update(env or {})
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                            stdin=subprocess.DEVNULL)
    out: dict[str, bytes] = {}

    def drain(name: str, stream) -> None:  # so the child never blocks on a full pipe
        out[name] = stream.read()

    threads = [threading.Thread(target=drain, args=(n, s)) for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for t in threads:
        t.start()
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _hwm_kib(proc.pid))
        time.sleep(0.01)
    seconds = time.perf_counter() - t0
    for t in threads:
        t.join()
    stdout = out.get("out", b"").decode(errors="replace")
    stderr = out.get("err", b"").decode(errors="replace")
    if proc.returncode not in (0, 1):  # 1: replicator finished with warnings
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {stderr[-500:]}")
    return Measured(seconds, peak / 1024, stdout, stderr)


def replicator_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "replicator", *args]


def dir_bytes(path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


@pytest.fixture(scope="session")
def corpus_day1(tmp_path_factory):
    from benchmarks import corpus

    root = tmp_path_factory.mktemp("corpus") / "day1"
    stats = corpus.generate(root, CORPUS_SIZE, seed=1)
    return root, stats


@pytest.fixture(scope="session")
def corpus_days(tmp_path_factory, corpus_day1):
    """(day1, day2): day2 is a copy of day1 with the "next day" mutation applied."""
    from benchmarks import corpus

    day1, _ = corpus_day1
    day2 = tmp_path_factory.mktemp("corpus2") / "day2"
    shutil.copytree(day1, day2, symlinks=True)
    corpus.mutate(day2, rate=0.05, seed=2)
    return day1, day2


def fresh_copy(src: Path, dst: Path) -> Path:
    """A working copy of a tree (mtimes kept) that a tool may read and a mutation may change."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)
    return dst

"""Shared benchmark fixtures: seeded corpora and MB/s recording.

BENCH_QUICK=1 (used by `make test` in CI) shrinks every data set so the suite
runs in well under a minute while still executing every benchmark.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

QUICK = os.environ.get("BENCH_QUICK") == "1"
MiB = 1024 * 1024
CORPUS_SIZE = (24 if QUICK else 256) * MiB


def record_rate(benchmark, nbytes: int, **extra) -> None:
    """Store bytes and MB/s (from the best round) in the benchmark's extra_info."""
    benchmark.extra_info["bytes"] = nbytes
    benchmark.extra_info.update(extra)
    if benchmark.stats is not None:
        benchmark.extra_info["MB/s"] = round(nbytes / benchmark.stats.stats.min / 1e6, 1)


@pytest.fixture(scope="session")
def corpus_day1(tmp_path_factory):
    from benchmarks import corpus

    root = tmp_path_factory.mktemp("corpus") / "day1"
    stats = corpus.generate(root, CORPUS_SIZE, seed=1)
    return root, stats

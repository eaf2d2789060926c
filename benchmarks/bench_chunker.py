"""Chunker throughput: ours (native scan, full Chunker) vs pyfastcdc, same data and sizes.

Run with ``pytest --benchmark-only benchmarks/bench_chunker.py``; BENCH_QUICK=1
uses 8 MiB instead of 64 MiB.  No timing assertions: numbers are recorded in
``extra_info["MB/s"]`` (best round).
"""
import os
import random

import pytest

from replicator._ext import cdc
from replicator.core.chunker import Chunker, gear_table
from replicator.core.params import DEFAULT_PARAMS

SIZE = (8 if os.environ.get("BENCH_QUICK") == "1" else 64) * 1024 * 1024
PARAMS = DEFAULT_PARAMS  # pyfastcdc accepts these (avg <= 4 MiB, max <= 16 MiB)


@pytest.fixture(scope="module")
def data():
    return random.Random(1234).randbytes(SIZE)


def _record(benchmark):
    benchmark.extra_info["bytes"] = SIZE
    benchmark.extra_info["params"] = PARAMS.to_dict()
    if benchmark.stats is not None:
        benchmark.extra_info["MB/s"] = round(SIZE / benchmark.stats.stats.min / 1e6, 1)


@pytest.mark.benchmark(group="chunker")
def test_ours_scan(benchmark, data):
    gear = gear_table(bytes(32))
    cuts = benchmark(cdc.find_cuts, data, PARAMS.min_size, PARAMS.avg_size, PARAMS.max_size, gear, True)
    assert cuts[-1] == SIZE
    _record(benchmark)


@pytest.mark.benchmark(group="chunker")
def test_ours_chunks_of(benchmark, data):
    chunker = Chunker(PARAMS, gear_table(bytes(32)))
    n = benchmark(lambda: sum(map(len, chunker.chunks_of(data))))
    assert n == SIZE
    _record(benchmark)


@pytest.mark.benchmark(group="chunker")
def test_pyfastcdc_cut_buf(benchmark, data):
    pyfastcdc = pytest.importorskip("pyfastcdc", reason="pyfastcdc not installed: no peer to compare with")
    fc = pyfastcdc.FastCDC(PARAMS.avg_size, min_size=PARAMS.min_size, max_size=PARAMS.max_size,
                           normalized_chunking=2)
    n = benchmark(lambda: sum(c.length for c in fc.cut_buf(data)))
    assert n == SIZE
    _record(benchmark)

"""The held-id set (store/idset.py): resident bytes per id, and lookups per second batched, beside the
Python set it replaced and SQLite ``Index.has`` (the engine's per-chunk lookup), in the same run.

Resident bytes are measured in a fresh subprocess (``python -m benchmarks.bench_idset --rss N``): RssAnon
(heap) and RssFile (the mapped runs, page cache the kernel may drop) from /proc/self/status before and
after N simulated ids, after probing every one of them.  N is 10^7 (BENCH_IDSET_N to change; 10^5 in
BENCH_QUICK mode).  No timing assertions.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile

import pytest

from benchmarks.conftest import QUICK, ROOT
from replicator.format.pack import BlobEntry
from replicator.store.idset import IdSet
from replicator.store.index import Index

N_RSS = int(os.environ.get("BENCH_IDSET_N", 10**5 if QUICK else 10**7))
N_LOOKUP = 10**4 if QUICK else 10**6  # ids held for the lookup benchmarks
BATCH = 4096  # lookups per batch (half of them held)


def _ids(start: int, n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "little")).digest() for i in range(start, start + n)]


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


def rss_per_id(n: int, kind: str) -> dict:
    """Load ``n`` ids into a set (``kind``: idset or set), probe each once, report RSS deltas per id."""
    step = 1 << 16
    with tempfile.TemporaryDirectory() as d:
        before = _status()
        held: IdSet | set[bytes] = IdSet(os.path.join(d, "ids")) if kind == "idset" else set()
        generated = (i for start in range(0, n, step) for i in _ids(start, min(step, n - start)))
        if isinstance(held, IdSet):
            held.rebuild(generated)  # as both sinks load the id lists at open
        else:
            held.update(generated)
        for start in range(0, n, step):
            batch = _ids(start, min(step, n - start))
            found = held.contains_many(batch) if isinstance(held, IdSet) else [i in held for i in batch]
            assert all(found)
        after = _status()
        result = {"kind": kind, "ids": n, **{f"{k}_per_id": round((after[k] - before[k]) / n, 2) for k in after}}
        if isinstance(held, IdSet):
            result["heap_structures_per_id"] = round(held.resident_bytes() / n, 2)
            held.close()
    return result


def _measure_rss(n: int, kind: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_idset", "--rss", str(n), kind], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="no /proc/self/status to read RSS from")
@pytest.mark.parametrize("kind", ["idset", "set"])
def test_resident_bytes_per_id(benchmark, kind):
    n = N_RSS if kind == "idset" else min(N_RSS, 10**6)  # the set's cost per id is flat: 10^6 shows it
    result = benchmark.pedantic(_measure_rss, args=(n, kind), rounds=1, iterations=1)
    benchmark.extra_info.update(result)


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    d = tmp_path_factory.mktemp("idset-bench")
    held = _ids(0, N_LOOKUP)
    probes = [p for pair in zip(held[:BATCH // 2], _ids(N_LOOKUP, BATCH // 2)) for p in pair]
    ids = IdSet(str(d / "ids"))
    ids.add_many(held)
    ids.save("bench")  # flushes the delta: the lookups below go to the runs, as at a repository's scale
    index = Index(str(d / "index.sqlite"), "bench")
    for start in range(0, N_LOOKUP, 10**4):  # packs of 10^4 blobs
        index.add_pack(f"pack-{start}", 0, [BlobEntry(0, i, 0, 1, 1, k) for k, i in enumerate(held[start:start + 10**4])])
    yield ids, set(held), index, probes
    ids.close()
    index.close()


def test_lookup_idset_batched(benchmark, populated):
    ids, _s, _i, probes = populated
    found = benchmark(ids.contains_many, probes)
    assert sum(found) == BATCH // 2
    benchmark.extra_info["lookups/s"] = round(BATCH / benchmark.stats.stats.min) if benchmark.stats else None


def test_lookup_python_set(benchmark, populated):
    _ids_, held, _i, probes = populated
    found = benchmark(lambda: [p in held for p in probes])
    assert sum(found) == BATCH // 2
    benchmark.extra_info["lookups/s"] = round(BATCH / benchmark.stats.stats.min) if benchmark.stats else None


def test_lookup_sqlite_index_has(benchmark, populated):
    _ids_, _s, index, probes = populated
    found = benchmark(lambda: [index.has(p) for p in probes])
    assert sum(found) == BATCH // 2
    benchmark.extra_info["lookups/s"] = round(BATCH / benchmark.stats.stats.min) if benchmark.stats else None


def _entries(n: int) -> list[BlobEntry]:
    return [BlobEntry(0, i, 0, 1, 1, k) for k, i in enumerate(_ids(10**8, n))]


@pytest.mark.parametrize("way", ["executemany", "row_by_row"])
def test_index_add_pack(benchmark, tmp_path, way):
    """Index writes of one pack (``Index.add_pack``: one executemany) beside the INSERT per blob it replaced."""
    entries = _entries(4096)
    index = Index(str(tmp_path / "index.sqlite"), "bench")

    def one_by_one(name, size, blobs):
        db = index._db()
        with index._write_lock, db:
            db.execute("INSERT OR REPLACE INTO packs VALUES (?, ?, ?)", (name, size, 0))
            for e in blobs:
                db.execute("INSERT OR REPLACE INTO blobs VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (e.id, e.type, name, e.offset, e.length, e.raw_len, e.seq))

    add = index.add_pack if way == "executemany" else one_by_one
    benchmark(add, "pack", 0, entries)
    index.close()
    benchmark.extra_info["rows/s"] = round(len(entries) / benchmark.stats.stats.min) if benchmark.stats else None


if __name__ == "__main__" and sys.argv[1:2] == ["--rss"]:
    print(json.dumps(rss_per_id(int(sys.argv[2]), sys.argv[3])))

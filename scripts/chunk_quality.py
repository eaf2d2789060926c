#!/usr/bin/env python3
"""Chunk quality next to speed, to choose the default chunker params.

For each avg size (min = avg/4, max = 4*avg) it chunks a synthetic day-1 and
day-2 version of two files and reports:

* dedup %: bytes of day-2 chunks already stored on day 1, over day-2 bytes;
* new MiB: day-2 bytes that must be stored and sent;
* chunks: day-1 chunk count, and the index size at ~100 bytes per chunk;
* CV: coefficient of variation of day-1 chunk sizes (std / mean);
* MB/s: Chunker.chunks_of throughput (best of 3).

Workloads (deterministic, seeded):

* ``sql``: a SQL-dump-like text file; day 2 updates 200 random rows in place
  (same row count, values change), inserts 2,000 rows in the middle and
  deletes 500 rows near 3/4.
* ``bin``: random bytes; day 2 inserts 100 bytes in the middle and overwrites
  4 KiB at a quarter.

Usage: python scripts/chunk_quality.py [--mib 64] [--avg 256K,512K,1M,2M]
"""
from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import time
from pathlib import Path

# Run from a checkout without installing: put the repository root first on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replicator.core.chunker import Chunker, gear_table  # noqa: E402
from replicator.core.params import ChunkerParams  # noqa: E402

KIB = 1024
MIB = 1024 * KIB


def sql_rows(rng: random.Random, start_id: int, count: int) -> list[bytes]:
    words = ["cardiology", "oncology", "radiology", "admitted", "discharged", "stable",
             "follow-up", "prescribed", "allergy", "none", "observation", "transfer"]
    rows = []
    for i in range(start_id, start_id + count):
        note = " ".join(rng.choices(words, k=rng.randint(3, 14)))
        rows.append(
            f"INSERT INTO visits VALUES ({i}, {rng.randint(1, 10**6)}, "
            f"'2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}', "
            f"'{note}', {rng.random() * 1000:.2f});\n".encode()
        )
    return rows


def sql_workload(size: int) -> tuple[bytes, bytes]:
    rng = random.Random(20240101)
    rows: list[bytes] = []
    total = 0
    while total < size:
        batch = sql_rows(rng, len(rows), 10_000)
        rows.extend(batch)
        total += sum(map(len, batch))
    day1 = b"".join(rows)
    day2_rows = list(rows)
    for idx in rng.sample(range(len(rows)), 200):
        day2_rows[idx] = sql_rows(rng, idx, 1)[0]
    cut = 3 * len(day2_rows) // 4
    del day2_rows[cut:cut + 500]
    mid = len(day2_rows) // 2
    day2_rows[mid:mid] = sql_rows(rng, len(rows), 2_000)
    return day1, b"".join(day2_rows)


def bin_workload(size: int) -> tuple[bytes, bytes]:
    rng = random.Random(7)
    day1 = rng.randbytes(size)
    mid = size // 2
    q = size // 4
    day2 = bytearray(day1[:mid] + rng.randbytes(100) + day1[mid:])
    day2[q:q + 4096] = rng.randbytes(4096)
    return day1, bytes(day2)


def measure(chunker: Chunker, day1: bytes, day2: bytes) -> dict[str, float]:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        sizes1 = [len(c) for c in chunker.chunks_of(day1)]
        best = min(best, time.perf_counter() - t0)
    stored = {hashlib.blake2b(c, digest_size=16).digest() for c in chunker.chunks_of(day1)}
    dup = new = 0
    for c in chunker.chunks_of(day2):
        if hashlib.blake2b(c, digest_size=16).digest() in stored:
            dup += len(c)
        else:
            new += len(c)
    return {
        "dedup": 100.0 * dup / len(day2),
        "new_mib": new / MIB,
        "chunks": len(sizes1),
        "cv": statistics.pstdev(sizes1) / statistics.fmean(sizes1),
        "mbs": len(day1) / best / 1e6,
    }


def parse_size(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": KIB, "M": MIB}.get(text[-1], 1)
    return int(text.rstrip("KM")) * mult


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=64, help="size of each day-1 file in MiB")
    ap.add_argument("--avg", default="256K,512K,1M,2M", help="comma-separated avg sizes")
    args = ap.parse_args()
    gear = gear_table(bytes(32))
    workloads = {"sql": sql_workload(args.mib * MIB), "bin": bin_workload(args.mib * MIB)}
    print("| workload | min/avg/max | dedup % | new MiB | chunks (day 1) | index KiB | CV | MB/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (day1, day2) in workloads.items():
        for avg in (parse_size(s) for s in args.avg.split(",")):
            params = ChunkerParams(avg // 4, avg, 4 * avg)
            r = measure(Chunker(params, gear), day1, day2)
            print(f"| {name} | {avg // 4 // KIB}K/{avg // KIB}K/{4 * avg // KIB}K | {r['dedup']:.2f} "
                  f"| {r['new_mib']:.2f} | {r['chunks']} | {r['chunks'] * 100 / KIB:.1f} "
                  f"| {r['cv']:.3f} | {r['mbs']:.0f} |", flush=True)


if __name__ == "__main__":
    main()

"""The pipeline bounds the chunk bytes it holds, not only their number (issue 11, memory).

Before, at most 32 chunks were in flight whatever their size: 32 chunks of 1 MiB (the default max) held
32 MiB of input plus their compressed payloads.  Now at most IN_FLIGHT_BYTES of chunk data are in the
workers or waiting for the consumer (one chunk more only when a single chunk is bigger than that).
"""
from __future__ import annotations

from replicator.core.ids import IdHasher
from replicator.sync.pipeline import IN_FLIGHT_BYTES, ChunkEvent, Pipeline

MiB = 1024 * 1024


def _run(chunks: list[bytes], **kw) -> tuple[int, list[int]]:
    """Submit ``chunks``; :returns: the most bytes in flight after any submit, and the sizes consumed in order.

    The pipeline hands results to the consumer only when a bound is reached (or at drain), so however
    fast the workers are, what it holds grows to its bound: the peak is structural, not a race."""
    consumed: list[int] = []
    pipe = Pipeline(IdHasher(bytes(32)), lambda _id: True, 3, lambda ev: consumed.append(ev.result.raw_len)
                    if isinstance(ev, ChunkEvent) else None, workers=2, **kw)
    peak = 0
    try:
        for i, c in enumerate(chunks):
            pipe.submit_chunk(i, c)
            peak = max(peak, pipe.bytes_in_flight)
        pipe.drain()
    finally:
        pipe.close()
    return peak, consumed


def test_chunk_bytes_in_flight_are_bounded():
    chunks = [bytes([i]) * MiB for i in range(40)]  # 40 MiB of 1 MiB chunks: 32 of them were 32 MiB in flight
    peak, consumed = _run(chunks)
    assert peak <= IN_FLIGHT_BYTES
    assert consumed == [MiB] * 40  # every chunk, in order


def test_a_chunk_bigger_than_the_bound_still_goes_through():
    peak, consumed = _run([b"a" * (3 * MiB), b"b" * (3 * MiB), b"c" * 100_000], max_bytes=2 * MiB)
    assert consumed == [3 * MiB, 3 * MiB, 100_000]
    assert peak <= 3 * MiB  # alone in flight: one chunk more than the bound, never two


def test_the_count_bound_still_holds():
    peak, consumed = _run([b"x" * 100_000] * 20, max_in_flight=4)
    assert peak <= 4 * 100_000 and len(consumed) == 20

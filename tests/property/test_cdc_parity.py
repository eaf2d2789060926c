"""Hypothesis: the native scan (ext/cdc.pyx) is bit-identical to tests/reference/cdc_ref.py."""
import io
import random
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator._ext import cdc
from replicator.core.chunker import Chunker, gear_table
from replicator.core.params import ChunkerParams
from tests.reference import cdc_ref


@st.composite
def small_params(draw):
    avg = 1 << draw(st.integers(8, 11))              # 256 .. 2048
    lo = draw(st.integers(64, avg))
    hi = draw(st.integers(avg, 8 * avg))
    return ChunkerParams(lo, avg, hi)


gears = st.one_of(
    st.binary(min_size=32, max_size=32).map(gear_table),
    st.lists(st.integers(0, 2**64 - 1), min_size=256, max_size=256).map(lambda t: array("Q", t)),
)


@settings(max_examples=150, deadline=None)
@given(params=small_params(), gear=gears, data=st.binary(max_size=12_000), eof=st.booleans())
def test_native_equals_reference(params, gear, data, eof):
    args = (params.min_size, params.avg_size, params.max_size, gear)
    assert cdc.find_cuts(data, *args, eof) == cdc_ref.cut_points(data, *args, eof=eof)


@settings(max_examples=60, deadline=None)
@given(params=small_params(), seed=st.integers(0, 2**32 - 1), size=st.integers(0, 30_000),
       unit=st.binary(min_size=1, max_size=64))
def test_native_equals_reference_random_and_repetitive(params, seed, size, unit):
    gear = gear_table(seed.to_bytes(4, "little") * 8)
    args = (params.min_size, params.avg_size, params.max_size, gear)
    rnd = random.Random(seed).randbytes(size)
    rep = unit * (size // len(unit))
    for data in (rnd, rep):
        assert cdc.find_cuts(data, *args, True) == cdc_ref.cut_points(data, *args)


@settings(max_examples=60, deadline=None)
@given(params=small_params(), seed=st.integers(0, 2**32 - 1), size=st.integers(0, 60_000),
       max_read=st.integers(1, 5000), buffer_size=st.integers(1, 8))
def test_streaming_with_short_reads_matches_in_memory(params, seed, size, max_read, buffer_size):
    rng = random.Random(seed)
    data = rng.randbytes(size)
    chunker = Chunker(params, gear_table(bytes(32)))
    chunker.buffer_size = max(buffer_size * 1024, 4 * params.max_size)

    class Short(io.RawIOBase):
        pos = 0

        def readinto(self, b):
            n = min(len(b), size - self.pos, rng.randint(1, max_read))
            b[:n] = data[self.pos:self.pos + n]
            self.pos += n
            return n

    assert list(chunker.chunks(Short())) == list(chunker.chunks_of(data))


@pytest.mark.slow
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_native_equals_reference_large_params(seed):
    # Long case: realistic sizes on ~1 MB of data (the reference takes seconds).
    params = ChunkerParams(16 * 1024, 64 * 1024, 256 * 1024)
    gear = gear_table(seed.to_bytes(4, "little") * 8)
    data = random.Random(seed).randbytes(1_000_000)
    args = (params.min_size, params.avg_size, params.max_size, gear)
    assert cdc.find_cuts(data, *args, True) == cdc_ref.cut_points(data, *args)

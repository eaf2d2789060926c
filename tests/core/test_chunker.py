"""Chunker: gear table spec, streaming, shift resistance and the golden boundaries."""
import hashlib
import io
import random

import pytest

from replicator._ext import cdc
from replicator.core.chunker import Chunker, gear_table
from replicator.core.params import DEFAULT_PARAMS, ChunkerParams
from tests.reference import cdc_ref

SMALL = ChunkerParams(64, 256, 1024)
GEAR = gear_table(bytes(32))


def seeded(n: int, seed: bytes = b"replicator/test") -> bytes:
    """Deterministic bytes, fully specified (SHAKE-256), stable across Python versions."""
    return hashlib.shake_256(seed).digest(n)


class ShortReads(io.RawIOBase):
    """A file object whose readinto returns a random short count each time."""

    def __init__(self, data: bytes, rng: random.Random, max_read: int):
        self._data = memoryview(data)
        self._pos = 0
        self._rng = rng
        self._max = max_read

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), len(self._data) - self._pos, self._rng.randint(1, self._max))
        b[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


# --- gear table -----------------------------------------------------------

# Spec vector: SHAKE-256(b"replicator/gear/v1\x00" + b"\x00"*32), entries 0 and 1.
# Changing these means every repository's chunk boundaries change.
GEAR_ZERO_KEY_0 = 0x7CE4EA9553BF4C08
GEAR_ZERO_KEY_1 = 0xEF0EFA9C46B8326D


def test_gear_table_spec_vector():
    assert len(GEAR) == 256
    assert GEAR[0] == GEAR_ZERO_KEY_0
    assert GEAR[1] == GEAR_ZERO_KEY_1


def test_gear_table_follows_spec():
    key = bytes(range(32))
    stream = hashlib.shake_256(b"replicator/gear/v1\x00" + key).digest(2048)
    expected = [int.from_bytes(stream[8 * i:8 * i + 8], "little") for i in range(256)]
    assert list(gear_table(key)) == expected
    assert list(gear_table(key)) != list(GEAR)


@pytest.mark.parametrize("key", [b"", bytes(31), bytes(33), "x" * 32])
def test_gear_table_rejects_bad_keys(key):
    with pytest.raises(ValueError, match="32 bytes"):
        gear_table(key)


@pytest.mark.parametrize("table", [[0] * 255, [0] * 257])
def test_chunker_rejects_bad_table(table):
    with pytest.raises(ValueError, match="256 entries"):
        Chunker(SMALL, table)


def test_arbitrary_table_accepted():
    table = [random.Random(1).getrandbits(64) for _ in range(256)]
    data = seeded(50_000)
    assert Chunker(SMALL, table).cut_points(data) == cdc_ref.cut_points(data, 64, 256, 1024, table)


# --- basic contract ---------------------------------------------------------

def test_empty_input():
    c = Chunker(SMALL, GEAR)
    assert c.cut_points(b"") == []
    assert list(c.chunks_of(b"")) == []
    assert list(c.chunks(io.BytesIO(b""))) == []


@pytest.mark.parametrize("n", [1, 63, 64, 65, 255, 1023, 1024, 1025])
def test_tiny_inputs_are_one_chunk_or_follow_reference(n):
    data = seeded(n)
    cuts = Chunker(SMALL, GEAR).cut_points(data)
    assert cuts == cdc_ref.cut_points(data, 64, 256, 1024, GEAR)
    assert cuts[-1] == n
    if n <= 64:
        assert cuts == [n]


def test_sizes_within_bounds_and_concatenate():
    data = seeded(300_000)
    c = Chunker(SMALL, GEAR)
    chunks = list(c.chunks_of(data))
    assert b"".join(chunks) == data
    assert all(64 <= len(x) <= 1024 for x in chunks[:-1])
    assert all(isinstance(x, bytes) for x in chunks)


def test_zero_data_cuts_at_max():
    # Constant input gives the same hash sequence in every chunk, so every
    # non-final chunk has the same length, within bounds.
    cuts = Chunker(SMALL, GEAR).cut_points(bytes(10_000))
    sizes = {b - a for a, b in zip([0] + cuts, cuts[:-1])}
    assert len(sizes) == 1 and 64 <= sizes.pop() <= 1024


def test_not_eof_leaves_tail():
    data = seeded(20_000)
    full = cdc.find_cuts(data, 64, 256, 1024, GEAR, True)
    partial = cdc.find_cuts(data, 64, 256, 1024, GEAR, False)
    assert partial == full[:len(partial)]
    assert len(data) - partial[-1] < 1024
    assert partial == cdc_ref.cut_points(data, 64, 256, 1024, GEAR, eof=False)


def test_chunks_of_accepts_memoryview_and_bytearray():
    data = seeded(40_000)
    c = Chunker(SMALL, GEAR)
    expected = list(c.chunks_of(data))
    assert list(c.chunks_of(bytearray(data))) == expected
    assert list(c.chunks_of(memoryview(data))) == expected


@pytest.mark.parametrize("lo, avg, hi", [(32, 256, 1024), (64, 300, 1024), (64, 1024, 512),
                                         (64, 256, 64 * 1024 * 1024 + 1)])
def test_native_rejects_bad_sizes(lo, avg, hi):
    with pytest.raises(ValueError):
        cdc.find_cuts(b"abc", lo, avg, hi, GEAR, True)


# --- streaming --------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_short_reads_give_identical_chunks(seed):
    rng = random.Random(seed)
    params = ChunkerParams(64, 256, 1024)
    c = Chunker(params, GEAR)
    c.buffer_size = 4096  # force many refills and tail carry-overs
    data = seeded(rng.randint(0, 100_000), seed=bytes([seed]))
    expected = list(c.chunks_of(data))
    got = list(c.chunks(ShortReads(data, rng, rng.choice([1, 7, 300, 5000]))))
    assert got == expected
    assert list(c.chunks(io.BytesIO(data))) == expected


def test_streaming_default_params_multiple_buffers():
    c = Chunker(DEFAULT_PARAMS, GEAR)
    data = seeded(3 * c.buffer_size + 12345)
    expected = c.cut_points(data)
    got = list(c.chunks(ShortReads(data, random.Random(3), 1 << 20)))
    assert [len(x) for x in got] == [b - a for a, b in zip([0] + expected, expected)]
    assert b"".join(got) == data


def test_readinto_none_is_an_error():
    class NonBlocking:
        def readinto(self, b):
            return None

    with pytest.raises(TypeError, match="non-blocking"):
        list(Chunker(SMALL, GEAR).chunks(NonBlocking()))


# --- shift resistance ---------------------------------------------------------

def test_shift_resistance_insert_100_bytes_in_64_mib():
    rng = random.Random(42)
    data = rng.randbytes(64 * 1024 * 1024)
    mid = len(data) // 2
    changed = data[:mid] + rng.randbytes(100) + data[mid:]
    c = Chunker(DEFAULT_PARAMS, GEAR)
    before = {hashlib.sha256(x).digest() for x in c.chunks_of(data)}
    after = [hashlib.sha256(x).digest() for x in c.chunks_of(changed)]
    kept = sum(1 for h in after if h in before)
    assert kept >= 0.95 * len(before), (kept, len(before))


# --- golden boundaries --------------------------------------------------------

GOLDEN_PARAMS = [(64, 256, 1024), (1024, 4096, 16384), (4096, 8192, 65536),
                 (16384, 65536, 262144), (262144, 1048576, 4194304)]

# SHA-256 over the cut points (8-byte little-endian each, params grid in order)
# of seeded(8 MiB) under gear_table(b"\x00" * 32).
# DO NOT CHANGE: this digest pins the chunk boundaries.  If it changes, every
# existing repository loses deduplication against its stored chunks (all data
# is re-chunked, re-uploaded and stored twice).  A change needs a new gear
# domain / format version, not an updated constant.
GOLDEN_CUTS_SHA256 = "2e08a623ff9b3b4e20547fce2b0a049d94b5184f5065ad1bff1d9fcf373f83b6"


def test_golden_cut_points_unchanged():
    data = seeded(8 * 1024 * 1024)
    h = hashlib.sha256()
    for lo, avg, hi in GOLDEN_PARAMS:
        cuts = cdc.find_cuts(data, lo, avg, hi, GEAR, True)
        h.update(b"".join(x.to_bytes(8, "little") for x in cuts))
    assert h.hexdigest() == GOLDEN_CUTS_SHA256


def test_golden_grid_matches_reference_on_a_prefix():
    data = seeded(200_000)
    for lo, avg, hi in GOLDEN_PARAMS[:3]:
        assert cdc.find_cuts(data, lo, avg, hi, GEAR, True) == cdc_ref.cut_points(data, lo, avg, hi, GEAR)


@pytest.mark.parametrize("hint_delta", [None, 0, -1, -5000, 1, 10_000_000, "zero"])
def test_size_hint_never_changes_the_chunks(hint_delta):
    """A wrong size hint (file grew or shrank since stat) costs a buffer regrow, never other chunks."""
    import io
    import random

    params = ChunkerParams(min_size=1024, avg_size=4096, max_size=16384)
    chunker = Chunker(params, gear_table(bytes(range(32))))
    data = random.Random(9).randbytes(300_000)
    want = list(chunker.chunks_of(data))
    if hint_delta is None:
        hint = None
    elif hint_delta == "zero":
        hint = 0
    else:
        hint = max(0, len(data) + hint_delta)
    got = list(chunker.chunks(io.BytesIO(data), hint))
    assert got == want

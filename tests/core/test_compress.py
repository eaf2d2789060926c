"""compress/decompress: method choice, round trips, and refusal of bad payloads."""
from __future__ import annotations

import os

import pytest
import zstandard

from replicator.constants import COMPRESSION_NONE, COMPRESSION_ZSTD
from replicator.core.compress import SAMPLE_SIZE, compress, decompress

TEXT = b"".join(b"patient %06d admitted ward 7 observation normal\n" % i for i in range(5000))


def test_random_data_is_stored():
    data = os.urandom(100_000)
    method, payload = compress(data)
    assert method == COMPRESSION_NONE
    assert payload == data


def test_large_random_data_is_stored_after_sampling():
    data = os.urandom(5 * SAMPLE_SIZE)
    assert compress(data) == (COMPRESSION_NONE, data)


def test_text_is_compressed():
    method, payload = compress(TEXT)
    assert method == COMPRESSION_ZSTD
    assert len(payload) < len(TEXT) // 4


@pytest.mark.parametrize("data", [b"", b"x", TEXT, os.urandom(70_000), TEXT + os.urandom(300_000)])
def test_round_trip(data):
    method, payload = compress(data)
    assert decompress(method, payload, len(data)) == data


def test_memoryview_input():
    method, payload = compress(memoryview(TEXT))
    assert decompress(method, memoryview(payload), len(TEXT)) == TEXT


@pytest.mark.parametrize("delta", [-1, 1, 1000])
def test_wrong_raw_len_refused_zstd(delta):
    method, payload = compress(TEXT)
    assert method == COMPRESSION_ZSTD
    with pytest.raises(ValueError):
        decompress(method, payload, len(TEXT) + delta)


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_raw_len_refused_stored(delta):
    data = os.urandom(1000)
    with pytest.raises(ValueError):
        decompress(COMPRESSION_NONE, data, len(data) + delta)


def test_unknown_method_refused():
    with pytest.raises(ValueError):
        decompress(7, b"abc", 3)


def test_frame_claiming_more_than_raw_len_refused():
    """The cap: a frame whose header claims a larger size than recorded is not inflated."""
    big = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(10_000_000))
    with pytest.raises(ValueError):
        decompress(COMPRESSION_ZSTD, big, 100)


def test_corrupt_body_refused():
    method, payload = compress(TEXT)
    damaged = bytearray(payload)
    for i in range(len(damaged) // 2, len(damaged) // 2 + 16):
        damaged[i] ^= 0xFF
    with pytest.raises(ValueError):
        decompress(method, bytes(damaged), len(TEXT))


def test_truncated_body_refused():
    method, payload = compress(TEXT)
    with pytest.raises(ValueError):
        decompress(method, payload[: len(payload) // 2], len(TEXT))


@pytest.mark.parametrize("payload", [b"", b"\x28\xb5\x2f\xfd", b"not a zstd frame at all"])
def test_corrupt_header_refused_with_value_error(payload):
    with pytest.raises(ValueError):
        decompress(COMPRESSION_ZSTD, payload, 10)

"""Compression: zstd, or stored as-is when zstd does not help.

The only module that imports zstandard.  Decompression is capped at the
length recorded for the blob, so a crafted blob cannot exhaust memory; callers
check authenticity (AEAD) before calling decompress.
"""
from __future__ import annotations

import threading

import zstandard

from replicator.constants import COMPRESSION_NONE, COMPRESSION_ZSTD

DEFAULT_LEVEL = 1
# Compress only when it saves at least this fraction; below that the CPU spent
# on decompression at restore is not worth the bytes.
MIN_SAVING = 0.03
# Incompressible data (imaging, encrypted or already compressed files) is
# detected on a sample first, so it costs one small compression, not a full one.
SAMPLE_SIZE = 64 * 1024

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    comp = cache.get(level)
    if comp is None:
        comp = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return comp


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "decompressor", None)
    if d is None:
        d = _local.decompressor = zstandard.ZstdDecompressor()
    return d


def compress(data: bytes | memoryview, level: int = DEFAULT_LEVEL) -> tuple[int, bytes]:
    """:returns: (method, payload) with method COMPRESSION_ZSTD or COMPRESSION_NONE."""
    n = len(data)
    comp = _compressor(level)
    if n > 4 * SAMPLE_SIZE:
        sample = comp.compress(data[:SAMPLE_SIZE])
        if len(sample) > SAMPLE_SIZE * (1 - MIN_SAVING):
            return COMPRESSION_NONE, bytes(data)
    out = comp.compress(data)
    if len(out) > n * (1 - MIN_SAVING):
        return COMPRESSION_NONE, bytes(data)
    return COMPRESSION_ZSTD, out


def decompress(method: int, payload: bytes | memoryview, raw_len: int) -> bytes:
    """Reverse :func:`compress`, producing exactly ``raw_len`` bytes.

    :raises ValueError: unknown method, corrupt payload, or a length other than raw_len.
    """
    if method == COMPRESSION_NONE:
        if len(payload) != raw_len:
            raise ValueError("stored blob has the wrong length")
        return bytes(payload)
    if method != COMPRESSION_ZSTD:
        raise ValueError(f"unknown compression method {method}")
    try:
        params = zstandard.get_frame_parameters(payload)
    except zstandard.ZstdError as exc:
        raise ValueError(f"corrupt compressed blob: {exc}") from None
    if params.content_size != raw_len:
        raise ValueError("compressed blob declares the wrong length")
    try:
        out = _decompressor().decompress(payload, max_output_size=raw_len)
    except zstandard.ZstdError as exc:
        raise ValueError(f"corrupt compressed blob: {exc}") from None
    if len(out) != raw_len:
        raise ValueError("compressed blob has the wrong length")
    return out

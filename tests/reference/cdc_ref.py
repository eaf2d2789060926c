"""Plain-Python FastCDC reference: the executable spec of ext/cdc.pyx.

Slow on purpose (one Python step per byte) and written for reading, not speed.
Every rule here is normative for the on-disk chunk boundaries (docs/CHUNKING.md);
ext/cdc.pyx must stay bit-identical to it.
"""
from __future__ import annotations

from collections.abc import Sequence

U64 = (1 << 64) - 1
NC_LEVEL = 2  # normalization level: mask_s has log2(avg)+2 bits, mask_l log2(avg)-2


def top_bits(k: int) -> int:
    """Mask of the top ``k`` bits of a 64-bit word."""
    return ((1 << k) - 1) << (64 - k)


def masks(avg_size: int) -> tuple[int, int]:
    """:returns: ``(mask_s, mask_l)`` used below / above ``avg_size``."""
    bits = avg_size.bit_length() - 1
    assert avg_size == 1 << bits and avg_size >= 256
    return top_bits(bits + NC_LEVEL), top_bits(bits - NC_LEVEL)


def chunk_length(data: bytes, start: int, min_size: int, avg_size: int, max_size: int,
                 gear: Sequence[int], eof: bool = True) -> int:
    """Length of the chunk starting at ``data[start]``; 0 if more data is needed.

    Candidate lengths ``L = min_size .. min(n, max_size)``: hash byte ``L-1`` into
    ``fp`` (which starts at 0), cut at ``L`` if ``fp`` has no bit of the mask set;
    the mask is ``mask_s`` while ``L <= avg_size``, ``mask_l`` after.
    """
    n = len(data) - start
    if n <= min_size:
        return n if eof else 0
    limit = min(n, max_size)
    mask_s, mask_l = masks(avg_size)
    fp = 0
    for length in range(min_size, limit + 1):
        fp = ((fp << 1) + gear[data[start + length - 1]]) & U64
        mask = mask_s if length <= avg_size else mask_l
        if fp & mask == 0:
            return length
    if eof or n >= max_size:
        return limit
    return 0


def cut_points(data: bytes, min_size: int, avg_size: int, max_size: int,
               gear: Sequence[int], eof: bool = True) -> list[int]:
    """End offsets of the complete chunks of ``data`` (same contract as ``find_cuts``)."""
    data = bytes(data)
    cuts: list[int] = []
    pos = 0
    while pos < len(data):
        length = chunk_length(data, pos, min_size, avg_size, max_size, gear, eof)
        if length == 0:
            break
        pos += length
        cuts.append(pos)
    return cuts

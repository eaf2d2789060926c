# cython: language_level=3
"""FastCDC-2020-style cut-point scan (gear rolling hash, normalized chunking).

This module owns the byte scan and nothing else: buffering, file reading and
chunk objects live in ``replicator.core.chunker``.  It returns offsets, never
chunk objects.

Contract (the executable spec is ``tests/reference/cdc_ref.py``; the prose
spec is docs/CHUNKING.md).  For a chunk starting at ``p`` with ``n`` bytes
available:

* ``fp`` starts at 0; for each candidate length ``L = min_size .. limit``
  (``limit = min(n, max_size)``) the byte ``p[L-1]`` is hashed with
  ``fp = (fp << 1) + gear[p[L-1]]`` (mod 2**64), then the chunk is cut at ``L``
  if ``fp & mask == 0``, where ``mask = mask_s`` while ``L <= avg_size`` and
  ``mask = mask_l`` after it (normalized chunking, level 2).
* ``mask_s`` / ``mask_l`` are the top ``log2(avg_size) + 2`` /
  ``log2(avg_size) - 2`` bits of the 64-bit word (gear accumulates
  information in its high bits).
* No cut by ``max_size``: cut at ``max_size``.  Fewer than ``max_size`` bytes
  left and no cut: at EOF the rest is the last chunk, otherwise the caller
  must supply more bytes (the tail is carried over).

Invariants that must not change (they define every repository's chunk
boundaries, so changing any of them breaks deduplication against existing
data): bit-identical to the reference, the cut decision for a position
depends only on the bytes of the current chunk up to that position, and the
GIL is released around the scan, which touches no Python object.
"""
from libc.stdint cimport uint8_t, uint64_t

cdef extern from *:
    # Branch hint: a cut is rare (about once per avg_size bytes).
    bint unlikely "__builtin_expect"(bint, long) noexcept nogil

# How many cut offsets the nogil loop collects before re-taking the GIL to
# append them to the result list.  Bounds memory for tiny chunks.
cdef enum:
    BATCH = 1024

MIN_SIZE_FLOOR = 64
AVG_SIZE_FLOOR = 256
MAX_SIZE_CEIL = 64 * 1024 * 1024
NC_LEVEL = 2


cdef inline uint64_t _top_bits(unsigned int k) noexcept nogil:
    """The mask of the top ``k`` bits of a 64-bit word (1 <= k <= 63)."""
    return ((<uint64_t>1 << k) - 1) << (64 - k)


def masks(size_t avg_size):
    """:returns: ``(mask_s, mask_l)`` for ``avg_size`` (a power of two >= 256)."""
    if avg_size < AVG_SIZE_FLOOR or avg_size & (avg_size - 1):
        raise ValueError(f"avg_size must be a power of two >= {AVG_SIZE_FLOOR}, got {avg_size}")
    cdef unsigned int bits = avg_size.bit_length() - 1
    return _top_bits(bits + NC_LEVEL), _top_bits(bits - NC_LEVEL)


cdef inline const uint8_t* _scan(const uint8_t* q, const uint8_t* end, uint64_t* fpp,
                                 uint64_t mask, const uint64_t* gear) noexcept nogil:
    """Hash ``q[0] .. end[-1]`` into ``*fpp``; return the position just after
    the first byte whose hash has no bit of ``mask`` set, or NULL (``*fpp``
    then holds the hash after ``end[-1]``).

    Unrolled four bytes per bounds check; each byte is still hashed and
    tested in order, so it is bit-identical to the byte-at-a-time loop.  (A
    variant computing the four hashes from ``fp`` independently was measured
    slower on x86-64 with gcc -O3: the serial ``lea`` is already one cycle.)
    """
    cdef uint64_t fp = fpp[0]
    while q + 4 <= end:
        fp = (fp << 1) + gear[q[0]]
        if unlikely((fp & mask) == 0, 0):
            fpp[0] = fp
            return q + 1
        fp = (fp << 1) + gear[q[1]]
        if unlikely((fp & mask) == 0, 0):
            fpp[0] = fp
            return q + 2
        fp = (fp << 1) + gear[q[2]]
        if unlikely((fp & mask) == 0, 0):
            fpp[0] = fp
            return q + 3
        fp = (fp << 1) + gear[q[3]]
        if unlikely((fp & mask) == 0, 0):
            fpp[0] = fp
            return q + 4
        q += 4
    while q < end:
        fp = (fp << 1) + gear[q[0]]
        q += 1
        if (fp & mask) == 0:
            fpp[0] = fp
            return q
    fpp[0] = fp
    return NULL


cdef size_t _cut(const uint8_t* p, size_t n, size_t min_size, size_t avg_size,
                 size_t max_size, uint64_t mask_s, uint64_t mask_l,
                 const uint64_t* gear, bint eof) noexcept nogil:
    """Length of the chunk starting at ``p`` (``n`` bytes available), or 0 if
    more bytes are needed to decide.  Called once per chunk, never per byte."""
    cdef size_t limit, normal
    cdef uint64_t fp = 0
    cdef const uint8_t* q
    cdef const uint8_t* end
    if n <= min_size:
        return n if eof else 0
    limit = max_size if n > max_size else n
    normal = avg_size if avg_size < limit else limit
    q = p + min_size - 1
    q = _scan(q, p + normal, &fp, mask_s, gear)
    if q != NULL:
        return <size_t>(q - p)
    # normal >= min_size here, so the first scan ended exactly at p + normal.
    q = _scan(p + normal, p + limit, &fp, mask_l, gear)
    if q != NULL:
        return <size_t>(q - p)
    if eof or n >= max_size:
        return limit
    return 0


def find_cuts(const uint8_t[::1] buf, size_t min_size, size_t avg_size,
              size_t max_size, const uint64_t[::1] gear, bint eof):
    """End offsets of the complete chunks in ``buf``.

    :param buf: the bytes, starting at a chunk boundary.
    :param min_size: minimum chunk size (>= 64); the last chunk at EOF may be smaller.
    :param avg_size: normal chunk size, a power of two (>= 256).
    :param max_size: maximum chunk size (>= avg_size).
    :param gear: 256 uint64 gear table.
    :param eof: whether ``buf`` ends at the end of the stream.
    :returns: a list of strictly increasing end offsets.  With ``eof`` the last
        one is ``len(buf)`` (none for an empty buffer); without it the bytes
        after the last offset are an incomplete chunk the caller carries over.
    :raises ValueError: on invalid sizes or a gear table that is not 256 entries.
    """
    if gear.shape[0] != 256:
        raise ValueError(f"gear table must have 256 entries, got {gear.shape[0]}")
    if min_size < MIN_SIZE_FLOOR or not (min_size <= avg_size <= max_size) or max_size > MAX_SIZE_CEIL:
        raise ValueError(f"invalid chunk sizes min={min_size} avg={avg_size} max={max_size}")
    mask_s, mask_l = masks(avg_size)
    cdef uint64_t ms = mask_s
    cdef uint64_t ml = mask_l
    cdef size_t total = buf.shape[0]
    cdef size_t pos = 0
    cdef size_t length
    cdef size_t cuts[BATCH]
    cdef int count, i
    cdef bint more = total > 0
    cdef const uint8_t* base = &buf[0] if total > 0 else NULL
    cdef const uint64_t* g = &gear[0]
    result = []
    while more:
        count = 0
        with nogil:
            while count < BATCH:
                length = _cut(base + pos, total - pos, min_size, avg_size, max_size, ms, ml, g, eof)
                if length == 0:
                    more = False
                    break
                pos += length
                cuts[count] = pos
                count += 1
                if pos == total:
                    more = False
                    break
        for i in range(count):
            result.append(cuts[i])
    return result

# cython: language_level=3
"""Sorted id buffers: runs of 32-byte ids concatenated, ordered as bytes (memcmp).

This module owns set operations over such buffers and nothing else: what the
ids mean, and the lists' headers and proofs, live in ``replicator.format.idlist``
(the public place for these operations).  A snapshot's refs (200,000 ids for a
200,000-file tree) are held as one buffer of 32 bytes per id instead of a set or
list of bytes objects (~100 bytes each beside the table).

Contract (the executable spec is the pure-Python merge that
``format/idlist.py`` had before this module, kept in the tests):

* every buffer is a whole number of 32-byte ids, else ValueError;
* ``sort_unique`` / ``sort_unique_inplace``: ascending, each id once;
* ``difference(old, new)`` and ``apply_difference(base, dropped, added)`` take
  sorted, unique inputs and give sorted, unique outputs;
  ``apply_difference`` raises ValueError with the same messages as before
  (a dropped id not in the base, an added id already in it).

Invariants: no Python object is touched while the GIL is released, and the
order is memcmp's (the order of ``bytes`` comparison, which every list on disk
and on the wire uses).
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdlib cimport qsort
from libc.string cimport memcmp, memcpy

cdef enum:
    ID = 32


cdef int _cmp(const void* a, const void* b) noexcept nogil:
    return memcmp(a, b, ID)


cdef Py_ssize_t _count(Py_ssize_t size) except -1:
    if size % ID:
        raise ValueError(f"an id buffer of {size} bytes is not a whole number of 32-byte ids")
    return size // ID


cdef Py_ssize_t _unique_sorted(unsigned char* p, Py_ssize_t n) noexcept nogil:
    """Sort ``n`` ids at ``p`` in place and squeeze out duplicates: :returns: how many are left."""
    cdef Py_ssize_t i, k
    if n < 2:
        return n
    qsort(p, <size_t>n, ID, _cmp)
    k = 1
    for i in range(1, n):
        if memcmp(p + i * ID, p + (k - 1) * ID, ID) != 0:
            if i != k:
                memcpy(p + k * ID, p + i * ID, ID)
            k += 1
    return k


def sort_unique_inplace(unsigned char[::1] buf not None) -> int:
    """Sort the ids of writable ``buf`` in place, each once at the front.

    :returns: the byte length of the unique ids (``del buf[n:]`` on a bytearray keeps them alone).
    :raises ValueError: not a whole number of 32-byte ids.
    """
    cdef Py_ssize_t n = _count(buf.shape[0])
    if n == 0:
        return 0
    cdef unsigned char* p = &buf[0]
    with nogil:
        n = _unique_sorted(p, n)
    return n * ID


def sort_unique(const unsigned char[::1] buf not None) -> bytes:
    """:returns: the ids of ``buf`` sorted, each once (a new bytes object).  :raises ValueError:"""
    cdef Py_ssize_t n = _count(buf.shape[0])
    if n == 0:
        return b""
    out = PyBytes_FromStringAndSize(<const char*>&buf[0], n * ID)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    cdef Py_ssize_t k
    with nogil:
        k = _unique_sorted(p, n)  # a fresh object nobody else sees yet: safe to sort in place
    return out if k == n else out[: k * ID]


def is_sorted_unique(const unsigned char[::1] buf not None) -> bool:
    """Whether the ids of ``buf`` are strictly increasing.  :raises ValueError: not whole ids."""
    cdef Py_ssize_t n = _count(buf.shape[0])
    cdef Py_ssize_t i
    cdef bint ok = True
    if n < 2:
        return True
    cdef const unsigned char* p = &buf[0]
    with nogil:
        for i in range(1, n):
            if memcmp(p + (i - 1) * ID, p + i * ID, ID) >= 0:
                ok = False
                break
    return ok


cdef Py_ssize_t _difference(const unsigned char* o, Py_ssize_t no, const unsigned char* w, Py_ssize_t nw,
                            unsigned char* dropped, unsigned char* added, Py_ssize_t* nadded) noexcept nogil:
    """One merge of sorted ``o`` and ``w``: :returns: how many of ``o`` are not in ``w`` (``*nadded``: of
    ``w`` not in ``o``), copied out when ``dropped`` / ``added`` are not NULL."""
    cdef Py_ssize_t i = 0, j = 0, nd = 0, na = 0
    cdef int c
    while i < no and j < nw:
        c = memcmp(o + i * ID, w + j * ID, ID)
        if c == 0:
            i += 1
            j += 1
        elif c < 0:
            if dropped != NULL:
                memcpy(dropped + nd * ID, o + i * ID, ID)
            nd += 1
            i += 1
        else:
            if added != NULL:
                memcpy(added + na * ID, w + j * ID, ID)
            na += 1
            j += 1
    if dropped != NULL and i < no:
        memcpy(dropped + nd * ID, o + i * ID, (no - i) * ID)
    if added != NULL and j < nw:
        memcpy(added + na * ID, w + j * ID, (nw - j) * ID)
    nadded[0] = na + (nw - j)
    return nd + (no - i)


cdef const unsigned char* _ptr(const unsigned char[::1] buf):
    return &buf[0] if buf.shape[0] else NULL


def difference(const unsigned char[::1] old not None, const unsigned char[::1] new not None) -> tuple:
    """(dropped, added): the ids of sorted, unique ``old`` not in ``new``, and of ``new`` not in ``old``,
    each a sorted buffer.  :raises ValueError: a buffer is not whole ids."""
    cdef Py_ssize_t no = _count(old.shape[0]), nw = _count(new.shape[0])
    cdef const unsigned char* o = _ptr(old)
    cdef const unsigned char* w = _ptr(new)
    cdef Py_ssize_t nd, na
    with nogil:
        nd = _difference(o, no, w, nw, NULL, NULL, &na)
    dropped = PyBytes_FromStringAndSize(NULL, nd * ID)
    added = PyBytes_FromStringAndSize(NULL, na * ID)
    cdef unsigned char* dp = <unsigned char*>PyBytes_AS_STRING(dropped)
    cdef unsigned char* ap = <unsigned char*>PyBytes_AS_STRING(added)
    with nogil:
        _difference(o, no, w, nw, dp, ap, &na)
    return dropped, added


cdef Py_ssize_t _apply(const unsigned char* b, Py_ssize_t nb, const unsigned char* dr, Py_ssize_t nd,
                       const unsigned char* ad, Py_ssize_t na, unsigned char* out,
                       Py_ssize_t* missing) noexcept nogil:
    """``b`` without ``dr``, with ``ad`` (all sorted, unique), written to ``out`` when not NULL.

    :returns: how many ids come out, -1 when an added id is in ``b``, -2 when dropped ids are not in ``b``
        (``*missing``: how many).  The same walk as the Python merge it replaces, so the same failure wins.
    """
    cdef Py_ssize_t i, d = 0, a = 0, k = 0
    cdef const unsigned char* x
    cdef int c
    for i in range(nb):
        x = b + i * ID
        while a < na and memcmp(ad + a * ID, x, ID) < 0:
            if out != NULL:
                memcpy(out + k * ID, ad + a * ID, ID)
            k += 1
            a += 1
        if a < na and memcmp(ad + a * ID, x, ID) == 0:
            return -1
        if d < nd:
            c = memcmp(dr + d * ID, x, ID)
            if c == 0:
                d += 1
                continue
            if c < 0:
                break
        if out != NULL:
            memcpy(out + k * ID, x, ID)
        k += 1
    if d < nd:
        missing[0] = nd - d
        return -2
    if out != NULL and a < na:
        memcpy(out + k * ID, ad + a * ID, (na - a) * ID)
    return k + (na - a)


def apply_difference(const unsigned char[::1] base not None, const unsigned char[::1] dropped not None,
                     const unsigned char[::1] added not None) -> bytes:
    """``base`` (sorted, unique) without ``dropped``, with ``added`` (both sorted, unique), as a sorted buffer.

    :raises ValueError: a buffer is not whole ids, a dropped id is not in ``base``, or an added one already is.
    """
    cdef Py_ssize_t nb = _count(base.shape[0]), nd = _count(dropped.shape[0]), na = _count(added.shape[0])
    cdef const unsigned char* b = _ptr(base)
    cdef const unsigned char* dr = _ptr(dropped)
    cdef const unsigned char* ad = _ptr(added)
    cdef Py_ssize_t n, missing = 0
    with nogil:
        n = _apply(b, nb, dr, nd, ad, na, NULL, &missing)
    if n == -1:
        raise ValueError("an added ref is in the base refs already")
    if n == -2:
        raise ValueError(f"{missing} dropped ref(s) not in the base refs")
    out = PyBytes_FromStringAndSize(NULL, n * ID)
    cdef unsigned char* op = <unsigned char*>PyBytes_AS_STRING(out)
    with nogil:
        _apply(b, nb, dr, nd, ad, na, op, &missing)
    return out

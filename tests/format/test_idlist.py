"""Sorted id buffers (issue 11, memory): a snapshot's refs are one buffer of 32 bytes per id, sorted and
merged in C (replicator._ext.ids) behind format/idlist.py.  The pure-Python merges below are the ones
idlist.py had before; the C ones must give the same buffers and fail with the same messages, since a
receiver's refusal of a refs difference quotes them."""
from __future__ import annotations

import random

import pytest

from replicator._ext import ids as X
from replicator.format import idlist as I


def ids(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(n)]


def ref_difference(old: list[bytes], new: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    return sorted(set(old) - set(new)), sorted(set(new) - set(old))


def ref_apply(base: list[bytes], dropped: list[bytes], added: list[bytes]) -> list[bytes]:
    """The merge idlist.apply_difference did in Python (its error checks in the same order)."""
    out: list[bytes] = []
    d = a = 0
    for x in base:
        while a < len(added) and added[a] < x:
            out.append(added[a])
            a += 1
        if a < len(added) and added[a] == x:
            raise ValueError("an added ref is in the base refs already")
        if d < len(dropped) and dropped[d] == x:
            d += 1
            continue
        if d < len(dropped) and dropped[d] < x:
            break
        out.append(x)
    if d < len(dropped):
        raise ValueError(f"{len(dropped) - d} dropped ref(s) not in the base refs")
    out.extend(added[a:])
    return out


J = b"".join


@pytest.mark.parametrize("n", [0, 1, 2, 3, 1000, 20_000])
def test_sort_unique_equals_sorted_set(n):
    some = ids(n, n)
    with_dups = some + random.Random(1).sample(some, n // 3) + some[: n // 5]
    random.Random(2).shuffle(with_dups)
    assert X.sort_unique(J(with_dups)) == J(sorted(set(some)))
    assert X.sort_unique(bytearray(J(with_dups))) == J(sorted(set(some)))
    buf = bytearray(J(with_dups))
    assert I.sort_unique_inplace(buf) == J(sorted(set(some)))
    assert X.is_sorted_unique(J(sorted(set(some))))


def test_ids_differing_in_the_last_byte_only_and_all_equal():
    same = [b"\x07" * 32] * 50
    assert X.sort_unique(J(same)) == b"\x07" * 32
    close = [b"\x00" * 31 + bytes([i]) for i in (5, 3, 255, 0, 3)]
    assert X.sort_unique(J(close)) == J(sorted(set(close)))
    assert not X.is_sorted_unique(J(close)) and not X.is_sorted_unique(J(same[:2]))


@pytest.mark.parametrize("fn", [X.sort_unique, X.is_sorted_unique, I.is_sorted_unique,
                                lambda b: X.difference(b, b""), lambda b: X.difference(b"", b),
                                lambda b: X.apply_difference(b, b"", b""), lambda b: I.difference(b, b""),
                                lambda b: I.apply_difference(b"", b"", b), lambda b: X.sort_unique_inplace(bytearray(b))])
@pytest.mark.parametrize("size", [1, 31, 33, 64 + 5])
def test_a_buffer_that_is_not_whole_ids_is_refused(fn, size):
    with pytest.raises(ValueError, match="not a whole number of 32-byte ids"):
        fn(bytes(size))


def test_sort_unique_inplace_needs_a_writable_buffer():
    with pytest.raises((TypeError, ValueError, BufferError)):
        X.sort_unique_inplace(bytes(64))


@pytest.mark.parametrize("seed", range(8))
def test_difference_and_apply_difference_round_trip(seed):
    rng = random.Random(seed)
    pool = ids(3000, 100 + seed)
    old = sorted(set(rng.sample(pool, rng.randrange(0, 2000))))
    new = sorted(set(rng.sample(pool, rng.randrange(0, 2000))))
    dropped, added = I.difference(J(old), J(new))
    want_d, want_a = ref_difference(old, new)
    assert (dropped, added) == (J(want_d), J(want_a))
    assert I.apply_difference(J(old), dropped, added) == J(new) == J(ref_apply(old, want_d, want_a))
    # lists of ids are still accepted (callers holding a few)
    assert I.difference(old, new) == (dropped, added)
    assert I.apply_difference(old, want_d, want_a) == J(new)


def test_empty_inputs():
    some = J(sorted(ids(5, 9)))
    assert X.difference(b"", b"") == (b"", b"")
    assert X.difference(some, b"") == (some, b"") and X.difference(b"", some) == (b"", some)
    assert X.apply_difference(b"", b"", b"") == b""
    assert X.apply_difference(b"", b"", some) == some and X.apply_difference(some, some, b"") == b""
    assert X.sort_unique(b"") == b"" and X.is_sorted_unique(b"") and X.is_sorted_unique(memoryview(some)[:32])


@pytest.mark.parametrize("case", ["dropped_missing", "dropped_after_end", "dropped_before_start",
                                  "added_present", "added_present_first", "both"])
def test_apply_difference_refuses_what_python_refused_with_its_message(case):
    base = sorted(ids(10, 3))
    other = sorted(set(ids(4, 4)))
    dropped, added = {
        "dropped_missing": ([base[2], other[0], base[7]], []),
        "dropped_after_end": ([base[9], b"\xff" * 32], []),
        "dropped_before_start": ([b"\x00" * 32], []),
        "added_present": ([], [base[4]]),
        "added_present_first": ([], [base[0]]),
        "both": (sorted([base[1], other[1]]), [base[5]]),
    }[case]
    with pytest.raises(ValueError) as want:
        ref_apply(base, dropped, added)
    with pytest.raises(ValueError) as got:
        I.apply_difference(J(base), J(dropped), J(added))
    assert str(got.value) == str(want.value)


def test_encode_ids_takes_a_buffer_or_ids_and_gives_the_same_bytes():
    some = ids(500, 5)
    assert I.encode_ids(J(some + some[:9])) == I.encode_ids(some) == J(sorted(set(some)))
    assert I.encode_ids(bytearray(J(sorted(some)))) == J(sorted(some))
    with pytest.raises(ValueError, match="an id is not 32 bytes"):
        I.encode_ids([b"short"])


def test_iter_ids_and_count_views_of_a_buffer():
    some = sorted(ids(7, 6))
    assert list(I.iter_ids(J(some))) == some and I.id_count(J(some)) == 7
    assert list(I.decode_ids(J(some), "refs/x")) == some

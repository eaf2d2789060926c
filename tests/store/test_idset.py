"""IdSet against a Python set model: adds across merges, reopen, damaged caches, shared 8-byte prefixes."""
from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.store.idset import MANIFEST, IdSet


def _id(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(8, "little")).digest()


def _twin(blob_id: bytes, k: int) -> bytes:
    """Another id with the same first 8 bytes (a prefix collision)."""
    return blob_id[:8] + hashlib.sha256(blob_id + bytes([k])).digest()[:24]


ids_st = st.binary(min_size=32, max_size=32)
# Ids drawn from a few 8-byte prefixes, so collisions are the rule, not the exception.
colliding_st = st.tuples(st.sampled_from([b"\x00" * 8, b"\xff" * 8, b"abcdefgh"]),
                         st.binary(min_size=24, max_size=24)).map(lambda t: t[0] + t[1])


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(st.one_of(ids_st, colliding_st), max_size=20), max_size=12),
       probes=st.lists(st.one_of(ids_st, colliding_st), max_size=30))
def test_matches_a_set_across_merges(tmp_path_factory, batches, probes):
    model: set[bytes] = set()
    with IdSet(str(tmp_path_factory.mktemp("ids")), delta_max=3) as ids:  # tiny delta: many runs and merges
        for batch in batches:
            ids.add_many(batch)
            model.update(batch)
            assert len(ids) == len(model)
        everything = list(model) + probes
        assert ids.contains_many(everything) == [i in model for i in everything]
        assert all((i in ids) == (i in model) for i in everything)
        assert list(ids) == sorted(model)


def test_no_false_positive_on_a_shared_prefix(tmp_path):
    base = [_id(n) for n in range(200)]
    with IdSet(str(tmp_path), delta_max=16) as ids:
        ids.add_many(base)
        ids.add_many(_twin(b, 1) for b in base[::2])
        for n, b in enumerate(base):
            assert b in ids
            assert (_twin(b, 1) in ids) == (n % 2 == 0)
            assert _twin(b, 2) not in ids  # same prefix as held ids, never added
        assert len(ids) == 300
        assert b"short" not in ids and None not in ids  # type: ignore[operator]


def test_reopen_from_disk(tmp_path):
    d = str(tmp_path)
    ids = IdSet(d, delta_max=10)
    ids.add_many(_id(n) for n in range(95))
    ids.save("lists-A")
    ids.close()
    assert IdSet.load(d, "lists-B") is None  # another fingerprint: the caller rebuilds
    ids = IdSet(d, delta_max=10)
    ids.add_many(_id(n) for n in range(95))
    ids.save("lists-A")
    ids.close()
    again = IdSet.load(d, "lists-A", delta_max=10)
    assert again is not None
    with again:
        assert len(again) == 95
        assert all(_id(n) in again for n in range(95))
        assert _id(95) not in again
        again.add_many(_id(n) for n in range(95, 130))  # merges replace the saved runs
        assert len(again) == 130 and _id(129) in again
        assert not os.path.exists(os.path.join(d, MANIFEST))  # the saved set no longer describes it
        again.save("lists-C")
    third = IdSet.load(d, "lists-C")
    assert third is not None and len(third) == 130
    third.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest", "order"])
def test_damaged_cache_is_rebuilt(tmp_path, damage):
    d = str(tmp_path)
    with IdSet(d, delta_max=1000) as ids:
        ids.add_many(_id(n) for n in range(50))
        ids.save("fp")
    runs = [os.path.join(d, n) for n in os.listdir(d) if n.startswith("run-")]
    assert len(runs) == 1
    run = runs[0]
    data = bytearray(open(run, "rb").read())
    if damage == "flip":
        data[16 + 32 * 7 + 3] ^= 1
        open(run, "wb").write(data)
    elif damage == "truncate":
        open(run, "wb").write(data[:-5])
    elif damage == "delete":
        os.unlink(run)
    elif damage == "manifest":
        open(os.path.join(d, MANIFEST), "wb").write(b"{not json")
    else:  # two ids swapped: sorted order broken (the digest catches it too)
        data[16:48], data[48:80] = data[48:80], data[16:48]
        open(run, "wb").write(data)
    assert IdSet.load(d, "fp") is None
    assert not any(n.startswith("run-") or n == MANIFEST for n in os.listdir(d))  # removed for the rebuild


def test_rebuild_drops_what_is_gone(tmp_path):
    with IdSet(str(tmp_path), delta_max=4) as ids:
        ids.add_many(_id(n) for n in range(20))
        ids.rebuild(_id(n) for n in range(10, 25))
        assert len(ids) == 15
        assert _id(5) not in ids and _id(12) in ids and _id(24) in ids


def test_private_directory_is_removed(tmp_path):
    ids = IdSet()
    ids.add_many(_id(n) for n in range(5))
    ids.save("x")
    where = ids.directory
    ids.close()
    assert not os.path.exists(where)


def test_wrong_length_refused(tmp_path):
    with IdSet(str(tmp_path)) as ids, pytest.raises(ValueError, match="32 bytes"):
        ids.add(b"x" * 31)


@settings(max_examples=40, deadline=None)
@given(ids=st.lists(st.one_of(ids_st, colliding_st), max_size=60), probes=st.lists(ids_st, max_size=10))
def test_bulk_rebuild_with_repeats_matches_a_set(tmp_path_factory, ids, probes):
    """A bulk load checks only the delta, so runs overlap until the final merge: still exact."""
    with IdSet(str(tmp_path_factory.mktemp("bulk")), delta_max=4) as held:
        held.add_many(probes)  # dropped by the rebuild
        held.rebuild(ids + ids[::3])  # repeats in different runs
        model = set(ids)
        assert len(held) == len(model)
        assert list(held) == sorted(model)
        assert held.contains_many(probes) == [p in model for p in probes]
        held.add_many(probes)
        assert len(held) == len(model | set(probes))

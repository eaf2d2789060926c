"""The receiver's held ids (LocalSink): an IdSet cached beside the index, reused at the next writable open,
and never trusted over the ids/ lists (a list gone or changed since makes it rebuild)."""
from __future__ import annotations

import os

from replicator.format import layout as L
from replicator.repo.local_sink import HELD_CACHE_DIR, LocalSink
from replicator.store.idset import MANIFEST, IdSet
from tests.conformance.test_sink import keyring_of, make_pack


def _store_two(path):
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:
        kr = keyring_of(sink)
        first = make_pack(kr, b"first pack" * 100)
        second = make_pack(kr, b"second pack" * 100)
        for name, data, ids, proof in (first, second):
            sink.put_pack(name, data, ids, proof)
    return first, second


def test_held_ids_are_saved_beside_the_index_and_reused(path):
    (_n1, _d1, ids1, _p1), (_n2, _d2, ids2, _p2) = _store_two(path)
    cache = path / HELD_CACHE_DIR
    assert (cache / MANIFEST).exists()
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:
        assert sink.stats["held_from"] == "cache"
        assert isinstance(sink._held, IdSet) and len(sink._held) == len(ids1) + len(ids2)
        assert all(sink.has(i) for i in ids1 + ids2)
        assert not (cache / MANIFEST).exists()  # a writable session invalidates it until it closes


def test_a_list_gone_since_the_cache_was_saved_is_not_held(path):
    (name1, _d1, ids1, _p1), (_n2, _d2, ids2, _p2) = _store_two(path)
    os.unlink(path / L.ids_name(L.digest_of(name1)))  # out of band: the cache still names those ids
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:
        assert sink.stats["held_from"] == "lists"
        assert not any(sink.has(i) for i in ids1) and all(sink.has(i) for i in ids2)


def test_a_damaged_cache_is_rebuilt_from_the_lists(path):
    (_n1, _d1, ids1, _p1), (_n2, _d2, ids2, _p2) = _store_two(path)
    cache = path / HELD_CACHE_DIR
    for run in cache.glob("run-*"):
        run.write_bytes(run.read_bytes()[:-1])
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:
        assert sink.stats["held_from"] == "lists"
        assert all(sink.has(i) for i in ids1 + ids2)


def test_a_crashed_session_leaves_no_cache_to_trust(path):
    _store_two(path)
    sink = LocalSink.open(str(path), writable=True, untrusted=True)
    assert not (path / HELD_CACHE_DIR / MANIFEST).exists()  # were it to crash now, the next open rebuilds
    sink.close()
    assert (path / HELD_CACHE_DIR / MANIFEST).exists()


def test_a_list_rewritten_since_the_cache_was_saved_is_read_again(path):
    (name1, _d1, ids1, _p1), _second = _store_two(path)
    listed = path / L.ids_name(L.digest_of(name1))
    data = listed.read_bytes()
    os.unlink(listed)
    listed.write_bytes(data)  # the same bytes written again out of band: not the list the cache saw
    os.utime(listed, ns=(1, 1))
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:
        assert sink.stats["held_from"] == "lists"


def test_two_writers_at_once_each_hold_their_ids_and_the_next_open_holds_both(path):
    # Writers share a repository (store/lock.py RepositoryLock): two sessions open at the same time must
    # not share the cache's run files, and the cache saved last must not claim the other's lists.
    first = LocalSink.open(str(path), writable=True, untrusted=True)
    second = LocalSink.open(str(path), writable=True, untrusted=True)
    kr = keyring_of(first)
    n1, d1, ids1, p1 = make_pack(kr, b"first writer" * 200)
    n2, d2, ids2, p2 = make_pack(kr, b"second writer" * 200)
    first.put_pack(n1, d1, ids1, p1)
    second.put_pack(n2, d2, ids2, p2)
    assert all(first.has(i) for i in ids1) and all(second.has(i) for i in ids2)
    first.close()  # first closes while second still writes
    second.close()
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:
        assert all(sink.has(i) for i in ids1 + ids2)
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:  # and again, from what was saved
        assert all(sink.has(i) for i in ids1 + ids2)


def test_a_writer_closing_after_another_stored_a_list_does_not_save_a_cache_without_it(path):
    long_lived = LocalSink.open(str(path), writable=True, untrusted=True)
    kr = keyring_of(long_lived)
    n1, d1, ids1, p1 = make_pack(kr, b"other host" * 200)
    with LocalSink.open(str(path), writable=True, untrusted=True) as other:
        other.put_pack(n1, d1, ids1, p1)
    long_lived.close()  # its held ids never saw the other's list
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:
        assert all(sink.has(i) for i in ids1)


def test_a_read_only_session_reads_the_lists_only_when_asked(path):
    """A restore from the other site never asks what is held: its session must not read every ids/ list."""
    (_n1, _d1, ids1, _p1), (_n2, _d2, ids2, _p2) = _store_two(path)
    with LocalSink.open(str(path), writable=False, untrusted=True) as sink:
        assert "held_from" not in sink.stats
        assert all(sink.has(i) for i in ids1 + ids2)  # asked: read then
        assert "held_from" in sink.stats

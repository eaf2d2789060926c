"""Quarantine rules of the local sink (docs/FORMAT.md 2.2): a quarantined pack's ids stop counting as held,
are not listed to a writer, block a commit that names them, and a writer re-sending the pack restores it."""
from __future__ import annotations

import os

import pytest

from replicator.errors import MissingChunks, ReadOnly
from replicator.format import layout as L
from replicator.format.head import Claim
from replicator.repo.local_sink import LocalSink
from replicator.repo.repository import Repository
from tests.conformance.test_sink import PW, keyring_of, make_pack, make_snapshot


def test_quarantined_ids_are_not_held_listed_or_committable(path):
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:
        kr = keyring_of(sink)
        name, data, ids, name_proof = make_pack(kr, b"only here" * 100)
        other, odata, oids, other_proof = make_pack(kr, b"elsewhere" * 100)
        sink.put_pack(name, data, ids, name_proof)
        sink.put_pack(other, odata, oids, other_proof)
        assert sink.quarantine(L.digest_of(name), "test damage", "test")
        assert not sink.quarantine(L.digest_of(name), "again", "test")  # once
        assert not any(sink.has(i) for i in ids) and all(sink.has(i) for i in oids)
        assert sink.list(L.IDS) == [L.ids_name(L.digest_of(other))]
        sname, sdata, sproof = make_snapshot(kr)
        with pytest.raises(MissingChunks):
            sink.commit(sname, sdata, ids, sproof, Claim(os.urandom(16), None))
        assert sink.list(L.SNAPSHOTS) == []
    with LocalSink.open(str(path), writable=False, untrusted=True) as again:  # the quarantine is durable
        assert again.quarantined == {L.digest_of(name)} and not any(again.has(i) for i in ids)
        with pytest.raises(ReadOnly):
            again.quarantine(L.digest_of(other), "x", "test")


def test_a_quarantined_pack_sent_again_is_restored(path):
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:
        kr = keyring_of(sink)
        name, data, ids, name_proof = make_pack(kr, b"healing" * 100)
        sink.put_pack(name, data, ids, name_proof)
    stored = path / name
    damaged = bytearray(stored.read_bytes())
    damaged[50] ^= 1
    stored.write_bytes(bytes(damaged))
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:
        sink.quarantine(L.digest_of(name), "bit rot", "test")
        sink.put_pack(name, data, ids, name_proof)  # the writer still had this exact pack (a resumed upload)
        assert sink.quarantined == frozenset() and all(sink.has(i) for i in ids)
    assert stored.read_bytes() == data and not (path / L.quarantine_name(L.digest_of(name))).exists()


def test_a_reader_prefers_intact_copies_and_still_reads_what_is_intact_in_a_quarantined_pack(path):
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:
        kr = keyring_of(sink)
        name, data, ids, name_proof = make_pack(kr, b"read me" * 100, b"also here" * 100)
        sink.put_pack(name, data, ids, name_proof)
        sink.quarantine(L.digest_of(name), "bit rot", "test")
        healed, hdata, hids, healed_proof = make_pack(kr, b"read me" * 100)  # one chunk stored again by a later sync
        sink.put_pack(healed, hdata, hids, healed_proof)
    for index in [p for p in path.iterdir() if p.name.startswith("index.sqlite")]:
        index.unlink()  # a fresh index: the order in which packs are indexed must not matter
    with Repository.open(str(path), PW) as repo:
        assert repo.index.lookup(hids[0])[0] == healed  # the intact copy wins
        other = next(i for i in ids if i not in hids)
        assert repo.index.lookup(other)[0] == name  # the only copy: readable as a last resort
        assert repo.read_blob(other) == b"also here" * 100

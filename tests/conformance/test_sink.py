"""Sink conformance: one suite, run against every sink (repo/sink.py states the obligations).

Local (a repository directory), memory (a LocalSink over MemoryStorage) and remote (the protocol client
against a real ``replicator serve`` on loopback) must behave the same to the one writer: the writer
never knows which one it has.  An object-store sink later only has to pass this suite too.
"""
from __future__ import annotations

import hashlib
import os

import pytest

from replicator import constants as C
from replicator.core.compress import compress
from replicator.core.params import DEFAULT_PARAMS
from replicator.errors import ReplicatorError
from replicator.format import keyfile as K
from replicator.format import layout as L
from replicator.format.entry import KIND_FILE, Entry
from replicator.format.head import Claim
from replicator.format.idlist import decode_ids
from replicator.format.pack import PackWriter
from replicator.format.repoconfig import make_config
from replicator.format.snapshot import Snapshot, seal_snapshot
from replicator.format.tree import TreeItem
from replicator.repo.keyring import Keyring
from replicator.repo.local_sink import LocalSink
from replicator.repo.repository import Repository
from replicator.repo.writer import Writer
from replicator.store.memory import MemoryStorage
from tests.conftest import PASSPHRASE
from tests.transport.conftest import site  # noqa: F401 - fixture for the remote sink

PW = PASSPHRASE.encode()


def memory_repository() -> MemoryStorage:
    storage = MemoryStorage()
    repo_id = os.urandom(32)
    master = os.urandom(C.KEY_SIZE)
    storage.put(L.KEY, K.make_keyfile(master, repo_id, PW, C.SCRYPT_LOG2N_MIN))
    storage.put(L.CONFIG, make_config(repo_id, DEFAULT_PARAMS, 1, 0))
    return storage


@pytest.fixture(params=["local", "memory", "remote"])
def sink(request, tmp_path):
    if request.param == "local":
        path = tmp_path / "repo"
        Repository.init(str(path), PW, log2n=C.SCRYPT_LOG2N_MIN).close()
        s = LocalSink.open(str(path), writable=True, untrusted=True)
    elif request.param == "memory":
        s = LocalSink(memory_repository(), untrusted=True)
    else:
        from replicator.transport.client import RemoteSink
        from replicator.transport.url import parse_url

        site = request.getfixturevalue("site")
        site.pin()
        s = RemoteSink(parse_url(site.url()), identity=str(site.keys["writer"]), known_hosts=str(site.known_hosts),
                       cache_dir=str(tmp_path / "cache"))
    s.trust(keyring_of(s).verifier)  # what the writer does first
    yield s
    s.close()


def keyring_of(sink) -> Keyring:
    return Keyring.unlock(*sink.describe(), PW, sink.location)


def make_pack(keyring: Keyring, *payloads: bytes) -> tuple[str, bytes, list[bytes], bytes]:
    """A sealed pack, its sorted ids and the key holder's proof of that declaration."""
    w = PackWriter(keyring.keys.encrypt)
    for p in payloads:
        w.add(C.BLOB_DATA, keyring.chunk_hasher(p), C.COMPRESSION_NONE, p, len(p))
    name, data, entries = w.finish()
    ids = sorted(e.id for e in entries)
    return name, data, ids, keyring.declarer.pack(L.digest_of(name), b"".join(ids))


def make_snapshot(keyring: Keyring, tree: bytes = bytes(32)) -> tuple[str, bytes, bytes]:
    snap = Snapshot(id="", repository=keyring.id, source="s", generation=1, time_ns=1, tree=tree, hostname="h")
    name, data = seal_snapshot(snap, keyring.keys.encrypt, keyring.signer)
    return name, data, keyring.declarer.snapshot(L.digest_of(name))


def stranger() -> Keyring:
    """A key holder of another repository: what someone with an SSH key but not the passphrase can sign with."""
    storage = memory_repository()
    return Keyring.unlock(storage.get(L.CONFIG), storage.get(L.KEY), PW, "elsewhere")


def test_describe_hands_out_config_and_sealed_key(sink):
    config, keyfile = sink.describe()
    assert b"replicator-repository" in config
    assert Keyring.unlock(config, keyfile, PW, sink.location).id == keyring_of(sink).id


def test_put_pack_makes_its_ids_held_and_listed(sink):
    kr = keyring_of(sink)
    name, data, ids, proof = make_pack(kr, b"alpha" * 100, b"beta" * 100)
    assert not any(sink.has(i) for i in ids)
    sink.put_pack(name, data, ids, proof)
    assert all(sink.has(i) for i in ids)  # also while in flight
    sink.flush()
    assert sink.list(L.PACKS) == [name]
    assert sink.list(L.IDS) == [L.ids_name(L.digest_of(name))]
    got = dict(sink.get_many(sink.list(L.IDS)))[L.ids_name(L.digest_of(name))]
    assert list(decode_ids(got, "ids")) == ids and kr.verifier.ids_object(L.digest_of(name), got) is not None


def test_putting_a_pack_twice_is_not_an_error(sink):
    name, data, ids, proof = make_pack(keyring_of(sink), b"twice" * 50)
    sink.put_pack(name, data, ids, proof)
    sink.put_pack(name, data, ids, proof)
    sink.flush()
    assert sink.list(L.PACKS) == [name]


def test_get_many_keeps_the_order_asked(sink):
    kr = keyring_of(sink)
    names = []
    for i in range(5):
        name, data, ids, proof = make_pack(kr, os.urandom(100 + i))
        sink.put_pack(name, data, ids, proof)
        names.append(L.ids_name(L.digest_of(name)))
    sink.flush()
    order = sorted(names, reverse=True)
    assert [n for n, _ in sink.get_many(order)] == order


def test_commit_stores_refs_then_the_snapshot(sink):
    kr = keyring_of(sink)
    name, data, ids, proof = make_pack(kr, b"chunk" * 100)
    sink.put_pack(name, data, ids, proof)
    sink.flush()
    sname, sdata, sproof = make_snapshot(kr)
    sink.commit(sname, sdata, ids, sproof, Claim(os.urandom(16), None))
    assert sink.list(L.SNAPSHOTS) == [sname]
    assert dict(sink.get_many([sname]))[sname] == sdata


def test_commit_with_a_ref_not_held_is_refused_and_nothing_is_committed(sink, tmp_path):
    kr = keyring_of(sink)
    sname, sdata, sproof = make_snapshot(kr)
    with pytest.raises(ReplicatorError) as info:
        sink.commit(sname, sdata, [b"\x01" * 32], sproof, Claim(os.urandom(16), None))
    assert info.value.exit_code == C.EXIT_INTEGRITY and "missing chunks" in str(info.value)


def test_a_pack_that_is_not_its_name_is_refused(sink):
    kr = keyring_of(sink)
    name, data, ids, proof = make_pack(kr, b"genuine" * 100)
    forged = bytearray(data)
    forged[60] ^= 1
    with pytest.raises(ReplicatorError) as info:
        sink.put_pack(name, bytes(forged), ids, proof)
        sink.flush()
    assert info.value.exit_code == C.EXIT_INTEGRITY and "does not match its name" in str(info.value)


def test_the_writer_round_trips_through_the_sink(sink):
    """The one writer over this sink: blobs, a tree, a commit; then a second writer deduplicates."""
    kr = keyring_of(sink)
    w = Writer(kr, sink)
    data = os.urandom(5000)
    cid = kr.chunk_hasher(data)
    assert w.store_blob(C.BLOB_DATA, cid, *compress(data), len(data))
    root = w.store_tree([TreeItem(Entry("f", KIND_FILE, 0o644, 0, 0, 1, len(data), chunks=(cid,)))])
    snap = w.commit_snapshot("ward", root, {"files": 1})
    assert snap.generation == 1 and snap.tree == root
    assert w.stats["blobs_written"] == 2 and w.stats["packs_written"] == 1
    snap2 = w.commit_snapshot("ward", root, {"files": 1})
    assert snap2.generation == 2 and snap2.parent == snap.id
    assert not w.store_blob(C.BLOB_DATA, cid, *compress(data), len(data))  # held: nothing stored
    assert sorted(sink.list(L.SNAPSHOTS)) == sorted([f"snapshots/{snap.id}", f"snapshots/{snap2.id}"])


def test_a_declaration_not_signed_by_the_key_holder_is_refused(sink):
    """Someone with an SSH key but not the passphrase: a real pack of ids it may not claim, a proof of its own."""
    kr = keyring_of(sink)
    name, data, ids, _proof = make_pack(kr, b"victim" * 100)
    forged_ids = sorted(ids + [b"\xee" * 32])
    for bad_ids, bad_proof in ((ids, stranger().declarer.pack(L.digest_of(name), b"".join(ids))),
                               (forged_ids, kr.declarer.pack(L.digest_of(name), b"".join(ids)))):
        with pytest.raises(ReplicatorError) as info:
            sink.put_pack(name, data, bad_ids, bad_proof)
            sink.flush()
        assert info.value.exit_code == C.EXIT_INTEGRITY and "not signed by this repository's key" in str(info.value)
        if sink.location.startswith("ssh://"):
            return  # a refusal ends the remote session; the local sinks go on to the second case
    assert sink.list(L.PACKS) == []


def test_a_snapshot_not_made_by_the_key_holder_is_refused(sink):
    kr = keyring_of(sink)
    name, data, ids, proof = make_pack(kr, b"held" * 100)
    sink.put_pack(name, data, ids, proof)
    sink.flush()
    junk = b"RPLSNAP\x00\x01\x00\x00\x00" + os.urandom(100)  # shaped like a snapshot, made without the key
    jname = L.snapshot_name(hashlib.sha256(junk).hexdigest())
    with pytest.raises(ReplicatorError) as info:
        sink.commit(jname, junk, ids, stranger().declarer.snapshot(L.digest_of(jname)), Claim(os.urandom(16), None))
    assert info.value.exit_code == C.EXIT_INTEGRITY and "not made by a key holder" in str(info.value)


def test_get_ranges_gives_the_size_and_the_bytes(sink):
    kr = keyring_of(sink)
    name, data, ids, proof = make_pack(kr, os.urandom(3000))
    sink.put_pack(name, data, ids, proof)
    sink.flush()
    got = sink.get_ranges([(name, 0, 8), (name, len(data) - 8, 8), (name, 100, 10 ** 6)])
    assert got == [(len(data), data[:8]), (len(data), data[-8:]), (len(data), data[100:])]


def test_declare_pack_keeps_a_signed_list_and_refuses_a_strangers(sink):
    """The upgrade's request (repo/test_declarations.py shows a list without proof giving way)."""
    kr = keyring_of(sink)
    name, data, ids, proof = make_pack(kr, b"declared" * 100)
    sink.put_pack(name, data, ids, proof)
    sink.declare_pack(name, ids, proof)  # already signed: stays as it is
    with pytest.raises(ReplicatorError):
        sink.declare_pack(name, ids, stranger().declarer.pack(L.digest_of(name), b"".join(ids)))
        sink.flush()

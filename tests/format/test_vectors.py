"""Golden on-disk format vectors (tests/vectors/*.json, docs/FORMAT.md "Test vectors").

GOLDEN TEST.  A failing vector means the on-disk format changed: existing
repositories would no longer read, or would read differently.  Do NOT
regenerate the vectors to make this pass.  If the change is intended, bump
FORMAT_VERSION_CURRENT (and MAX) in replicator/constants.py, document the
change in docs/FORMAT.md "Changes", regenerate with scripts/gen_vectors.py and
have the diff of tests/vectors/ reviewed, all in one commit.

Each test rebuilds a vector from its recorded inputs with the current code and
compares byte for byte, then checks that the current readers (read_table,
open_blob, decode_tree, open_snapshot, unlock) accept the recorded objects.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from replicator import constants as C
from replicator.core import crypto
from replicator.core.chunker import GEAR_DOMAIN, gear_table
from replicator.core.compress import decompress
from replicator.core.ids import IdHasher
from replicator.errors import IntegrityError
from replicator.format import keyfile as K
from replicator.format import pack as packs
from replicator.format.entry import Entry
from replicator.format.snapshot import SNAPSHOT_INFO, Snapshot, canonical_json, open_snapshot, seal_snapshot
from replicator.format.tree import TreeItem, decode_tree, encode_tree

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
VECTOR_FILES = ("keys.json", "ids.json", "gear.json", "tree.json", "pack.json", "snapshot.json", "lists.json")

PURPOSE_ATTRS = {
    "chunk-id": "chunk_id",
    "tree-id": "tree_id",
    "gear": "gear",
    "encrypt": "encrypt",
    "sign": "sign_seed",
    "prefilter": "prefilter",
    "source-tag": "source_tag",
}


def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def h(text: str) -> bytes:
    return bytes.fromhex(text)


@pytest.fixture(scope="module")
def keyset() -> K.KeySet:
    v = load("keys.json")
    return K.KeySet.derive(h(v["master_key"]), h(v["repository_id"]))


class FixedRandom:
    """Replaces crypto.random_bytes with fixed values, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *values: bytes) -> None:
        self.values = list(values)
        monkeypatch.setattr(crypto, "random_bytes", self)

    def __call__(self, n: int) -> bytes:
        value = self.values.pop(0)
        assert len(value) == n
        return value


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_vector_file_is_for_this_format_version(name):
    assert load(name)["format_version"] == C.FORMAT_VERSION_CURRENT


# --- keys ---------------------------------------------------------------------
def test_subkeys_unchanged(keyset):
    v = load("keys.json")
    assert v["hkdf_salt"] == v["repository_id"]
    assert set(v["subkeys"]) == set(PURPOSE_ATTRS)
    for purpose, expected in v["subkeys"].items():
        info = C.HKDF_INFO_PREFIX + purpose.encode()
        assert info.hex() == expected["info"]
        assert getattr(keyset, PURPOSE_ATTRS[purpose]).hex() == expected["key"], purpose
        assert crypto.hkdf(h(v["master_key"]), salt=h(v["repository_id"]), info=info).hex() == expected["key"]
    assert crypto.SigningKey(keyset.sign_seed).public_bytes().hex() == v["signing_public_key"]


def test_keyfile_unchanged(monkeypatch):
    v = load("keys.json")
    kf = v["keyfile"]
    master, repo_id, passphrase = h(v["master_key"]), h(v["repository_id"]), h(kf["passphrase"])
    kdf = kf["kdf"]
    kek = crypto.scrypt(passphrase, h(kdf["salt"]), kdf["log2n"], kdf["r"], kdf["p"])
    assert kek.hex() == kf["kek"]
    assert (C.KEY_AAD_PREFIX + repo_id).hex() == kf["aad"]
    assert crypto.Aead(kek).seal(h(kf["nonce"]), master, h(kf["aad"])).hex() == kf["sealed_master_key"]
    FixedRandom(monkeypatch, h(kdf["salt"]), h(kf["nonce"]))
    assert K.make_keyfile(master, repo_id, passphrase, kdf["log2n"]).hex() == kf["object"]


def test_keyfile_opens_with_current_reader():
    v = load("keys.json")
    kf = v["keyfile"]
    obj = h(kf["object"])
    doc = K.parse_keyfile(obj)
    assert doc["signing_public_key"] == v["signing_public_key"]
    assert doc["sealed_master_key"] == kf["sealed_master_key"]
    assert K.unlock(obj, h(v["repository_id"]), h(kf["passphrase"]), "vector").hex() == v["master_key"]


# --- ids and gear -----------------------------------------------------------------
def test_ids_unchanged(keyset):
    v = load("ids.json")
    assert v["chunk_id_key"] == keyset.chunk_id.hex()
    assert v["tree_id_key"] == keyset.tree_id.hex()
    chunk, tree = IdHasher(keyset.chunk_id), IdHasher(keyset.tree_id)
    for case in v["cases"]:
        assert chunk(h(case["data"])).hex() == case["chunk_id"]
        assert tree(h(case["data"])).hex() == case["tree_id"]


def test_gear_table_unchanged(keyset):
    v = load("gear.json")
    assert GEAR_DOMAIN.hex() == v["domain"]
    labels = {c["label"]: c for c in v["cases"]}
    assert labels["derived"]["gear_key"] == keyset.gear.hex()
    for case in v["cases"]:
        table = gear_table(h(case["gear_key"]))
        assert [f"{x:016x}" for x in table[:4]] == case["first_entries"]
        assert f"{table[255]:016x}" == case["last_entry"]
        assert hashlib.sha256(struct.pack("<256Q", *table)).hexdigest() == case["table_sha256"]


# --- trees --------------------------------------------------------------------------
def item_from_json(d: dict) -> TreeItem:
    def s(x: str) -> str:
        return os.fsdecode(h(x))

    entry = Entry(
        path=s(d["name"]), kind=d["kind"], mode=d["mode"], uid=d["uid"], gid=d["gid"], mtime_ns=d["mtime_ns"],
        size=d["size"], chunks=tuple(h(c) for c in d["chunks"]), target=s(d["target"]),
        xattrs=tuple((s(n), h(val)) for n, val in d["xattrs"]), link_to=s(d["link_to"]),
    )
    return TreeItem(entry, h(d["subtree"]))


def test_tree_encoding_unchanged(keyset):
    v = load("tree.json")
    items = [item_from_json(d) for d in v["items"]]
    encoded = encode_tree(items)
    assert encoded.hex() == v["encoding"]
    assert IdHasher(keyset.tree_id)(encoded).hex() == v["tree_id"]


def test_tree_decodes_with_current_reader():
    v = load("tree.json")
    decoded = decode_tree(h(v["encoding"]), "")
    expected = sorted((item_from_json(d) for d in v["items"]), key=lambda it: os.fsencode(it.entry.name))
    assert decoded == expected


# --- packs ----------------------------------------------------------------------------
def test_pack_unchanged(keyset, monkeypatch):
    v = load("pack.json")
    assert v["encrypt_key"] == keyset.encrypt.hex()
    assert packs.PACK_INFO.hex() == v["pack_key_info"]
    assert crypto.hkdf(keyset.encrypt, salt=h(v["salt"]), info=packs.PACK_INFO).hex() == v["pack_key"]
    FixedRandom(monkeypatch, h(v["salt"]))  # one salt per pack, whenever the writer draws it
    writer = packs.PackWriter(keyset.encrypt)
    for b in v["blobs"]:
        assert packs.nonce(C.NONCE_DOMAIN_BLOB, b["seq"]).hex() == b["nonce"]
        assert packs.blob_aad(b["type"], h(b["id"])).hex() == b["aad"]
        writer.add(b["type"], h(b["id"]), b["method"], h(b["payload"]), b["raw_len"])
    name, data, entries = writer.finish()
    assert [(e.type, e.id.hex(), e.offset, e.length, e.raw_len, e.seq) for e in entries] == [
        (b["type"], b["id"], b["offset"], b["length"], b["raw_len"], b["seq"]) for b in v["blobs"]]
    assert data.hex() == v["pack"]
    assert name == v["name"] == packs.pack_name(data)
    assert len(data) == v["size"]
    assert packs.nonce(C.NONCE_DOMAIN_TABLE, 0).hex() == v["table_nonce"]
    assert (C.TABLE_AAD_PREFIX + h(v["salt"])).hex() == v["table_aad"]


def test_pack_reads_with_current_reader(keyset):
    v = load("pack.json")
    data = h(v["pack"])
    assert v["name"] == f"data/{hashlib.sha256(data).hexdigest()[:2]}/{hashlib.sha256(data).hexdigest()}"
    assert packs.parse_header(data, v["name"]) == h(v["salt"])
    entries = packs.read_table(data, v["name"], keyset.encrypt)
    assert len(entries) == len(v["blobs"])
    aead = packs.pack_key(keyset.encrypt, h(v["salt"]))
    # The table decrypts, independently of read_table, to the recorded plaintext.
    start, length = v["table_offset"], v["table_length"]
    assert aead.open(h(v["table_nonce"]), data[start : start + length], h(v["table_aad"])).hex() == v["table_plaintext"]
    for e, b in zip(entries, v["blobs"]):
        assert (e.type, e.id.hex(), e.offset, e.length, e.raw_len, e.seq) == (
            b["type"], b["id"], b["offset"], b["length"], b["raw_len"], b["seq"])
        sealed = data[e.offset : e.offset + e.length]
        plain = aead.open(h(b["nonce"]), sealed, h(b["aad"]))
        assert plain == bytes((b["method"],)) + h(b["payload"])
        assert decompress(b["method"], h(b["payload"]), b["raw_len"]).hex() == b["plaintext"]
        hasher = IdHasher(keyset.chunk_id if e.type == C.BLOB_DATA else keyset.tree_id)
        assert packs.open_blob(aead, e, sealed, hasher, v["name"]).hex() == b["plaintext"]


def test_pack_holds_the_tree_vector():
    pack, tree = load("pack.json"), load("tree.json")
    trees = [b for b in pack["blobs"] if b["type"] == C.BLOB_TREE]
    assert [(b["id"], b["plaintext"]) for b in trees] == [(tree["tree_id"], tree["encoding"])]


def test_pack_vector_rejects_a_flipped_byte(keyset):
    v = load("pack.json")
    data = bytearray(h(v["pack"]))
    data[v["table_offset"] + 3] ^= 1
    with pytest.raises(IntegrityError):
        packs.read_table(bytes(data), v["name"], keyset.encrypt)


# --- snapshots ----------------------------------------------------------------------------
def test_snapshot_unchanged(keyset, monkeypatch):
    v = load("snapshot.json")
    body = v["body"]
    signer = crypto.SigningKey(keyset.sign_seed)
    assert signer.public_bytes().hex() == v["signing_public_key"]
    assert canonical_json(body).decode() == v["body_json"]
    assert signer.sign(canonical_json(body)).hex() == v["signature"]
    assert canonical_json({"body": body, "signature": v["signature"]}).decode() == v["document"]
    assert SNAPSHOT_INFO.hex() == v["snapshot_key_info"]
    assert crypto.hkdf(keyset.encrypt, salt=h(v["salt"]), info=SNAPSHOT_INFO).hex() == v["snapshot_key"]
    assert (C.SNAPSHOT_AAD_PREFIX + h(v["header"])).hex() == v["aad"]
    snap = Snapshot(
        id="", repository=body["repository"], source=body["source"], generation=body["generation"],
        time_ns=body["time_ns"], tree=h(body["tree"]), hostname=body["hostname"], stats=body["stats"],
        parent=body["parent"],
    )
    assert snap.body() == body
    FixedRandom(monkeypatch, h(v["salt"]))
    name, data = seal_snapshot(snap, keyset.encrypt, signer)
    assert data.hex() == v["object"]
    assert name == v["name"] == "snapshots/" + hashlib.sha256(data).hexdigest()


def test_snapshot_opens_with_current_reader(keyset):
    v = load("snapshot.json")
    data = h(v["object"])
    header = data[: C.PACK_HEADER_SIZE]
    assert header.hex() == v["header"]
    aead = crypto.Aead(h(v["snapshot_key"]))
    assert aead.open(h(v["nonce"]), data[len(header) :], h(v["aad"])).decode() == v["document"]
    snap = open_snapshot(v["name"], data, keyset.encrypt, h(v["signing_public_key"]), v["body"]["repository"])
    body = v["body"]
    assert snap.id == v["name"].rsplit("/", 1)[-1]
    assert (snap.repository, snap.source, snap.generation, snap.time_ns, snap.tree.hex(), snap.hostname,
            snap.stats, snap.parent) == (body["repository"], body["source"], body["generation"], body["time_ns"],
                                         body["tree"], body["hostname"], body["stats"], body["parent"])
    assert snap.tree.hex() == load("tree.json")["tree_id"]


def test_signed_lists_unchanged(keyset):
    """lists.json: declaration proofs and version 2 list objects (FORMAT.md 2.1), from the other vectors."""
    from replicator.format import idlist as I

    v, pack, snap = load("lists.json"), load("pack.json"), load("snapshot.json")
    assert v["pack_digest"] == pack["name"].rsplit("/", 1)[1] and v["snapshot_digest"] == snap["name"][10:]
    declarer = I.Declarer(v["repository_id"], crypto.SigningKey(keyset.sign_seed))
    assert crypto.SigningKey(keyset.sign_seed).public_bytes().hex() == v["signing_public_key"]
    ids = I.encode_ids(h(b["id"]) for b in pack["blobs"])
    assert ids.hex() == v["ids"]
    assert I.pack_statement(h(v["repository_id"]), v["pack_digest"], ids).hex() == v["pack_statement"]
    assert declarer.pack(v["pack_digest"], ids).hex() == v["pack_proof"]
    assert I.encode_list(I.IDS_MAGIC, ids, h(v["pack_proof"])).hex() == v["ids_object"]
    assert I.snapshot_statement(h(v["repository_id"]), v["snapshot_digest"]).hex() == v["snapshot_statement"]
    assert declarer.snapshot(v["snapshot_digest"]).hex() == v["snapshot_proof"]
    assert I.encode_list(I.REFS_MAGIC, h(v["refs"]), h(v["snapshot_proof"])).hex() == v["refs_object"]
    verifier = I.Verifier(v["repository_id"], h(v["signing_public_key"]))
    assert verifier.ids_object(v["pack_digest"], h(v["ids_object"])) is not None
    parsed = I.parse_list(h(v["refs_object"]), "refs")
    assert verifier.snapshot(v["snapshot_digest"], parsed.proof) and bytes(parsed.ids) == h(v["refs"])

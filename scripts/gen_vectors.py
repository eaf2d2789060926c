"""Generate the on-disk format test vectors in tests/vectors/ (docs/FORMAT.md "Test vectors").

Every input is fixed (master key, repository id, salts, nonces, plaintexts),
so the output is byte-for-byte reproducible.  The vectors are built with the
lower-level functions of the format code (KeySet.derive, crypto.hkdf,
IdHasher, chunker.gear_table, packs.PackWriter, tree.encode_tree,
snapshot.seal_snapshot, keys.make_keyfile); where the code draws random bytes
(pack and snapshot salts, key file salt and nonce), ``crypto.random_bytes`` is
replaced for the duration of that call by a function returning the fixed
values, in order.

The zstd payload of the compressed blob is a fixed constant (ZSTD_PAYLOAD), not
the output of the compressor: zstd's output may change between library
versions, and the format does not depend on it (readers only decompress).

Usage::

    .venv/bin/python scripts/gen_vectors.py           # write tests/vectors/*.json
    .venv/bin/python scripts/gen_vectors.py --check   # exit 1 if a file would change

A changed vector means the on-disk format changed.  Never regenerate to make
tests/repo/test_vectors.py pass: bump the format version (replicator/constants.py),
document the change in docs/FORMAT.md "Changes", and commit spec, constants,
code and vectors together.  The diff of tests/vectors/ is reviewed by a human.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from replicator import constants as C  # noqa: E402
from replicator.core import crypto  # noqa: E402
from replicator.core.chunker import GEAR_DOMAIN, gear_table  # noqa: E402
from replicator.core.compress import decompress  # noqa: E402
from replicator.core.ids import IdHasher  # noqa: E402
from replicator.format import keyfile as K  # noqa: E402
from replicator.format import pack as packs  # noqa: E402
from replicator.format.entry import KIND_DIR, KIND_FILE, KIND_SYMLINK, Entry  # noqa: E402
from replicator.format.snapshot import SNAPSHOT_INFO, ZERO_NONCE, Snapshot, canonical_json, seal_snapshot  # noqa: E402
from replicator.format.tree import TreeItem, encode_tree  # noqa: E402

VECTOR_DIR = ROOT / "tests" / "vectors"

# --- fixed inputs --------------------------------------------------------------
MASTER_KEY = bytes(range(0x00, 0x20))  # 00 01 .. 1f
REPO_ID = bytes(range(0x20, 0x40))  # 20 21 .. 3f
PACK_SALT = bytes(range(0x40, 0x60))  # 40 41 .. 5f
SNAPSHOT_SALT = bytes(range(0x60, 0x80))  # 60 61 .. 7f
KEYFILE_SALT = bytes(range(0x80, 0xA0))  # 80 81 .. 9f
KEYFILE_NONCE = bytes(range(0xA0, 0xAC))  # a0 a1 .. ab
KEYFILE_PASSPHRASE = b"correct horse battery staple"
KEYFILE_LOG2N = C.SCRYPT_LOG2N_MIN  # cheap enough for a unit test; the format allows any value in range
GEAR_KEY_ZERO = bytes(32)
GEAR_KEY_SEQ = bytes(range(32))

ID_INPUTS = [
    b"",
    b"abc",
    bytes(i % 251 for i in range(1000)),
]

CHUNK_STORED = b"hello, hospital\n"
CHUNK_COMPRESSED = b"Patient record 0001: " + b"normal sinus rhythm; " * 12
# zstd frame of CHUNK_COMPRESSED (content size recorded in the frame header), made once with level 3.
ZSTD_PAYLOAD = bytes.fromhex(
    "28b52ffd6011008d0100940250617469656e74207265636f726420303030313a206e6f726d616c2073696e7573207268"
    "7974686d3b0100292335cb"
)

SNAPSHOT_FIELDS = {
    "source": "ward-a",
    "generation": 1,
    "time_ns": 1_700_000_000_123_456_789,
    "hostname": "primary.example.org",
    "stats": {"bytes": len(CHUNK_STORED) + len(CHUNK_COMPRESSED), "dirs": 1, "files": 3, "symlinks": 1},
    "parent": None,
}

PURPOSES = {
    "chunk-id": "chunk_id",
    "tree-id": "tree_id",
    "gear": "gear",
    "encrypt": "encrypt",
    "sign": "sign_seed",
    "prefilter": "prefilter",
    "source-tag": "source_tag",
}


@contextlib.contextmanager
def fixed_random(*values: bytes) -> Iterator[None]:
    """Make ``crypto.random_bytes`` return ``values`` in order (each of the requested length)."""
    queue = list(values)
    original = crypto.random_bytes

    def fake(n: int) -> bytes:
        if not queue:
            raise AssertionError("unexpected extra call to random_bytes")
        value = queue.pop(0)
        if len(value) != n:
            raise AssertionError(f"random_bytes({n}) but the fixed value has {len(value)} bytes")
        return value

    crypto.random_bytes = fake
    try:
        yield
        if queue:
            raise AssertionError("fixed random values left unused")
    finally:
        crypto.random_bytes = original


def keyset() -> K.KeySet:
    return K.KeySet.derive(MASTER_KEY, REPO_ID)


# --- keys -------------------------------------------------------------------------
def keys_vector() -> dict:
    ks = keyset()
    subkeys = {}
    for purpose, attr in PURPOSES.items():
        info = C.HKDF_INFO_PREFIX + purpose.encode()
        value = crypto.hkdf(MASTER_KEY, salt=REPO_ID, info=info)
        assert value == getattr(ks, attr)
        subkeys[purpose] = {"info": info.hex(), "key": value.hex()}
    signer = crypto.SigningKey(ks.sign_seed)
    with fixed_random(KEYFILE_SALT, KEYFILE_NONCE):
        keyfile = K.make_keyfile(MASTER_KEY, REPO_ID, KEYFILE_PASSPHRASE, KEYFILE_LOG2N)
    kek = crypto.scrypt(KEYFILE_PASSPHRASE, KEYFILE_SALT, KEYFILE_LOG2N, C.SCRYPT_R, C.SCRYPT_P)
    aad = C.KEY_AAD_PREFIX + REPO_ID
    return {
        "description": "Subkeys: HKDF-SHA256(ikm=master key, salt=repository id, info='replicator/v1/'+purpose, 32 bytes). "
        "Key file: scrypt(passphrase, salt, N=2**log2n, r, p) -> key-encryption key; "
        "AES-256-GCM(kek, nonce, master key, aad='replicator/key/v1\\0'||repository id).",
        "master_key": MASTER_KEY.hex(),
        "repository_id": REPO_ID.hex(),
        "hkdf_salt": REPO_ID.hex(),
        "subkeys": subkeys,
        "signing_public_key": signer.public_bytes().hex(),
        "keyfile": {
            "passphrase": KEYFILE_PASSPHRASE.hex(),
            "kdf": {"name": "scrypt", "log2n": KEYFILE_LOG2N, "r": C.SCRYPT_R, "p": C.SCRYPT_P,
                    "salt": KEYFILE_SALT.hex()},
            "nonce": KEYFILE_NONCE.hex(),
            "aad": aad.hex(),
            "kek": kek.hex(),
            "sealed_master_key": crypto.Aead(kek).seal(KEYFILE_NONCE, MASTER_KEY, aad).hex(),
            "object": keyfile.hex(),
        },
    }


# --- ids ----------------------------------------------------------------------------
def ids_vector() -> dict:
    ks = keyset()
    chunk, tree = IdHasher(ks.chunk_id), IdHasher(ks.tree_id)
    return {
        "description": "id = BLAKE3 keyed mode (key = the 'chunk-id' or 'tree-id' subkey of keys.json), 32-byte output.",
        "chunk_id_key": ks.chunk_id.hex(),
        "tree_id_key": ks.tree_id.hex(),
        "cases": [{"data": d.hex(), "chunk_id": chunk(d).hex(), "tree_id": tree(d).hex()} for d in ID_INPUTS],
    }


# --- gear table -----------------------------------------------------------------------
def gear_vector() -> dict:
    cases = []
    for label, key in (("zero", GEAR_KEY_ZERO), ("sequence", GEAR_KEY_SEQ), ("derived", keyset().gear)):
        table = gear_table(key)
        cases.append({
            "label": label,
            "gear_key": key.hex(),
            "first_entries": [f"{v:016x}" for v in table[:4]],
            "last_entry": f"{table[255]:016x}",
            "table_sha256": hashlib.sha256(struct.pack("<256Q", *table)).hexdigest(),
        })
    return {
        "description": "stream = SHAKE-256(domain || gear_key) (2048 bytes); table[i] = little-endian uint64 of "
        "stream[8i:8i+8].  Entries are 16 hex digits (big-endian number notation); table_sha256 is over the 256 "
        "entries serialised as little-endian uint64 (= the SHAKE stream).",
        "domain": GEAR_DOMAIN.hex(),
        "cases": cases,
    }


# --- tree ---------------------------------------------------------------------------------
def tree_items(chunk_ids: list[bytes]) -> tuple[list[TreeItem], bytes]:
    """The entries of the vector's root directory (deliberately not in sorted order) and the subtree id."""
    sub_tree_id = bytes(range(0xC0, 0xE0))  # stands for the tree id of "scans" (its blob is not in the vector)
    non_utf8 = os.fsdecode(b"caf\xe9.txt")  # a Latin-1 name: not UTF-8, round-trips via surrogateescape
    return [
        TreeItem(Entry("report.txt", KIND_FILE, 0o640, 1000, 1000, 1_700_000_000_000_000_000,
                       size=len(CHUNK_STORED) + len(CHUNK_COMPRESSED), chunks=tuple(chunk_ids),
                       xattrs=(("user.mime_type", b"text/plain"),))),
        TreeItem(Entry("scans", KIND_DIR, 0o750, 1000, 100, 1_699_999_999_000_000_001)),
        TreeItem(Entry("latest", KIND_SYMLINK, 0o777, 0, 0, -1, target="report.txt")),
        TreeItem(Entry(non_utf8, KIND_FILE, 0o600, 1000, 1000, 0, size=0)),
        TreeItem(Entry("report.txt.1", KIND_FILE, 0o640, 1000, 1000, 1_700_000_000_000_000_000,
                       size=len(CHUNK_STORED) + len(CHUNK_COMPRESSED), chunks=tuple(chunk_ids),
                       link_to="report.txt")),
    ], sub_tree_id


def item_to_json(item: TreeItem) -> dict:
    e = item.entry
    return {
        "name": os.fsencode(e.name).hex(),
        "kind": e.kind,
        "mode": e.mode,
        "uid": e.uid,
        "gid": e.gid,
        "mtime_ns": e.mtime_ns,
        "size": e.size,
        "xattrs": [[os.fsencode(n).hex(), v.hex()] for n, v in e.xattrs],
        "link_to": os.fsencode(e.link_to).hex(),
        "chunks": [c.hex() for c in e.chunks],
        "subtree": item.subtree.hex(),
        "target": os.fsencode(e.target).hex(),
    }


def tree_vector() -> dict:
    ks = keyset()
    chunk = IdHasher(ks.chunk_id)
    items, sub_tree_id = tree_items([chunk(CHUNK_STORED), chunk(CHUNK_COMPRESSED)])
    items = [TreeItem(it.entry, sub_tree_id) if it.entry.kind == KIND_DIR else it for it in items]
    encoded = encode_tree(items)
    return {
        "description": "Root directory tree blob (docs/FORMAT.md 'Trees').  'items' are in input order (unsorted); "
        "the encoding sorts them by name bytes.  Strings are hex of their file-system bytes.",
        "tree_id_key": ks.tree_id.hex(),
        "items": [item_to_json(it) for it in items],
        "encoding": encoded.hex(),
        "tree_id": IdHasher(ks.tree_id)(encoded).hex(),
    }


# --- pack -----------------------------------------------------------------------------------
def pack_vector() -> dict:
    ks = keyset()
    chunk, tree = IdHasher(ks.chunk_id), IdHasher(ks.tree_id)
    assert decompress(C.COMPRESSION_ZSTD, ZSTD_PAYLOAD, len(CHUNK_COMPRESSED)) == CHUNK_COMPRESSED
    tree_blob = bytes.fromhex(tree_vector()["encoding"])
    blobs = [
        (C.BLOB_DATA, chunk(CHUNK_STORED), C.COMPRESSION_NONE, CHUNK_STORED, CHUNK_STORED),
        (C.BLOB_DATA, chunk(CHUNK_COMPRESSED), C.COMPRESSION_ZSTD, ZSTD_PAYLOAD, CHUNK_COMPRESSED),
        (C.BLOB_TREE, tree(tree_blob), C.COMPRESSION_NONE, tree_blob, tree_blob),
    ]
    # The salt is drawn once per pack (at construction or at finish, depending on
    # the PackWriter version): keep the fixed value in place for the whole pack.
    with fixed_random(PACK_SALT):
        writer = packs.PackWriter(ks.encrypt)
        for blob_type, blob_id, method, payload, plain in blobs:
            writer.add(blob_type, blob_id, method, payload, len(plain))
        name, data, entries = writer.finish()
    out = []
    for e, (blob_type, blob_id, method, payload, plain) in zip(entries, blobs, strict=True):
        assert (e.type, e.id, e.raw_len) == (blob_type, blob_id, len(plain))
        out.append({
            "type": blob_type,
            "id": blob_id.hex(),
            "offset": e.offset,
            "length": e.length,
            "raw_len": e.raw_len,
            "seq": e.seq,
            "method": method,
            "payload": payload.hex(),
            "plaintext": plain.hex(),
            "nonce": packs.nonce(C.NONCE_DOMAIN_BLOB, e.seq).hex(),
            "aad": packs.blob_aad(blob_type, blob_id).hex(),
        })
    table = struct.pack("<I", len(entries)) + b"".join(
        struct.pack("<B32sQII", e.type, e.id, e.offset, e.length, e.raw_len) for e in entries
    )
    table_len = struct.unpack_from("<I", data, len(data) - C.PACK_FOOTER_SIZE)[0]
    return {
        "description": "A complete pack (docs/FORMAT.md 'Packs') with two data blobs (stored, zstd) and the tree "
        "blob of tree.json, encrypted under the 'encrypt' subkey of keys.json with a fixed pack salt.",
        "encrypt_key": ks.encrypt.hex(),
        "salt": PACK_SALT.hex(),
        "pack_key": crypto.hkdf(ks.encrypt, salt=PACK_SALT, info=packs.PACK_INFO).hex(),
        "pack_key_info": packs.PACK_INFO.hex(),
        "blobs": out,
        "table_plaintext": table.hex(),
        "table_nonce": packs.nonce(C.NONCE_DOMAIN_TABLE, 0).hex(),
        "table_aad": (C.TABLE_AAD_PREFIX + PACK_SALT).hex(),
        "table_offset": len(data) - C.PACK_FOOTER_SIZE - table_len,
        "table_length": table_len,
        "name": name,
        "size": len(data),
        "pack": data.hex(),
    }


# --- snapshot ---------------------------------------------------------------------------------
def snapshot_vector() -> dict:
    ks = keyset()
    signer = crypto.SigningKey(ks.sign_seed)
    tree_id = bytes.fromhex(tree_vector()["tree_id"])
    snap = Snapshot(id="", repository=REPO_ID.hex(), tree=tree_id, **SNAPSHOT_FIELDS)
    with fixed_random(SNAPSHOT_SALT):
        name, data = seal_snapshot(snap, ks.encrypt, signer)
    body = snap.body()
    body_json = canonical_json(body)
    signature = signer.sign(body_json)
    document = canonical_json({"body": body, "signature": signature.hex()})
    header = data[: C.PACK_HEADER_SIZE]  # same 44-byte header layout as packs
    return {
        "description": "A snapshot object (docs/FORMAT.md 'Snapshots') naming the tree of tree.json, sealed under "
        "the 'encrypt' subkey and signed with the 'sign' subkey (Ed25519 seed) of keys.json.",
        "encrypt_key": ks.encrypt.hex(),
        "signing_public_key": signer.public_bytes().hex(),
        "salt": SNAPSHOT_SALT.hex(),
        "snapshot_key": crypto.hkdf(ks.encrypt, salt=SNAPSHOT_SALT, info=SNAPSHOT_INFO).hex(),
        "snapshot_key_info": SNAPSHOT_INFO.hex(),
        "body": body,
        "body_json": body_json.decode("ascii"),
        "signature": signature.hex(),
        "document": document.decode("ascii"),
        "header": header.hex(),
        "nonce": ZERO_NONCE.hex(),
        "aad": (C.SNAPSHOT_AAD_PREFIX + header).hex(),
        "name": name,
        "object": data.hex(),
    }


# --- signed id lists --------------------------------------------------------------------------
def lists_vector() -> dict:
    """The ids/ object of pack.json's pack and the refs/ object of snapshot.json's snapshot (list version 2)."""
    from replicator.format import idlist as I

    ks = keyset()
    declarer = I.Declarer(REPO_ID.hex(), crypto.SigningKey(ks.sign_seed))
    pack, snap = pack_vector(), snapshot_vector()
    pack_digest, snap_digest = pack["name"].rsplit("/", 1)[1], snap["name"].rsplit("/", 1)[1]
    held = I.encode_ids(bytes.fromhex(b["id"]) for b in pack["blobs"])
    refs = held  # what the vector snapshot references in the vector pack (its placeholder subtree aside)
    pack_proof, snap_proof = declarer.pack(pack_digest, held), declarer.snapshot(snap_digest)
    return {
        "description": "Key-less lists with declaration proofs (docs/FORMAT.md 2.1): the id list of the pack of "
        "pack.json and the refs of the snapshot of snapshot.json, signed with the 'sign' subkey of keys.json "
        "(Ed25519 is deterministic: the proofs are reproducible).",
        "signing_public_key": crypto.SigningKey(ks.sign_seed).public_bytes().hex(),
        "repository_id": REPO_ID.hex(),
        "pack_digest": pack_digest,
        "ids": held.hex(),
        "pack_statement": I.pack_statement(REPO_ID, pack_digest, held).hex(),
        "pack_proof": pack_proof.hex(),
        "ids_object": I.encode_list(I.IDS_MAGIC, held, pack_proof).hex(),
        "snapshot_digest": snap_digest,
        "refs": refs.hex(),
        "snapshot_statement": I.snapshot_statement(REPO_ID, snap_digest).hex(),
        "snapshot_proof": snap_proof.hex(),
        "refs_object": I.encode_list(I.REFS_MAGIC, refs, snap_proof).hex(),
    }


def all_vectors() -> dict[str, dict]:
    common = {"format_version": C.FORMAT_VERSION_CURRENT, "generator": "scripts/gen_vectors.py"}
    return {
        name: {**common, **build()}
        for name, build in (
            ("keys.json", keys_vector),
            ("ids.json", ids_vector),
            ("gear.json", gear_vector),
            ("tree.json", tree_vector),
            ("pack.json", pack_vector),
            ("snapshot.json", snapshot_vector),
            ("lists.json", lists_vector),
        )
    }


def render(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files; write nothing")
    args = parser.parse_args(argv)
    VECTOR_DIR.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, doc in all_vectors().items():
        path = VECTOR_DIR / name
        text = render(doc)
        old = path.read_text() if path.exists() else None
        if old == text:
            continue
        changed.append(name)
        if not args.check:
            path.write_text(text)
    for name in changed:
        print(f"{'differs' if args.check else 'wrote'}: tests/vectors/{name}")
    if not changed:
        print("tests/vectors: unchanged")
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())

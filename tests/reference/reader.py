"""An independent reader of the replicator repository format, written from docs/FORMAT.md only.

Nothing here comes from the ``replicator`` package (tests/reference/test_reader.py checks the
imports mechanically): every constant, layout and rule is taken from the text of FORMAT.md, with
the section number next to it.  It proves the spec is exact enough for a second implementation.
Where the bytes the program writes and the prose differ, the reader follows the bytes and the
place is listed in the report of the engineer who wrote it (so the spec can be fixed).

Scope: open a repository with a passphrase (config, key file, subkeys), list and open snapshots,
read pack tables, open blobs, decode trees, walk a snapshot to a path and return a file's bytes.
It is slow and simple on purpose: whole packs are read to build an in-memory id -> blob map.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import struct

import blake3
import zstandard
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

# --- constants (FORMAT.md sections 4, 5, 6, 9, 11, 12, 15) ---------------------------------
VERSION_MIN = VERSION_MAX = 1
REPO_MAGIC = "replicator-repository"
KEYFILE_MAGIC = "replicator-key"
KEY_AAD_PREFIX = b"replicator/key/v1\0"
HKDF_INFO_PREFIX = b"replicator/v1/"
PURPOSES = ("chunk-id", "tree-id", "gear", "encrypt", "sign", "prefilter", "source-tag")
PACK_MAGIC, PACK_FOOTER_MAGIC = b"RPLPACK\0", b"RPLPEND\0"
PACK_HEADER_SIZE, PACK_TABLE_ENTRY_SIZE, PACK_MAX_BLOBS = 44, 49, 1 << 20
MAX_BLOB_SIZE = 64 << 20
BLOB_AAD, TABLE_AAD = b"replicator/blob/v1\0", b"replicator/table/v1\0"
BLOB_DATA, BLOB_TREE = 0, 1
TREE_MAGIC = b"RTREE001"
KIND_FILE, KIND_DIR, KIND_SYMLINK = 0, 1, 2
SNAPSHOT_MAGIC, SNAPSHOT_AAD = b"RPLSNAP\0", b"replicator/snapshot/v1\0"
MAX_SNAPSHOT_SIZE = 1 << 20
TAG = 16
HEX64 = re.compile(r"[0-9a-f]{64}\Z")


class ReaderError(Exception):
    """Base class of everything the reader refuses."""


class IntegrityError(ReaderError):
    """The object is damaged or forged."""


class UnsupportedVersion(ReaderError):
    """A version outside VERSION_MIN..VERSION_MAX (section 15)."""


class WrongPassphrase(ReaderError):
    """The key file's seal did not open (section 5)."""


def check(cond: bool, what: str) -> None:
    if not cond:
        raise IntegrityError(what)


def check_version(v: object, what: str) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or not VERSION_MIN <= v <= VERSION_MAX:
        raise UnsupportedVersion(f"unsupported version of {what}: {v!r}")


def unhex(value: object, size: int, what: str) -> bytes:
    check(isinstance(value, str) and re.fullmatch(r"(?:[0-9a-f]{2})*", value) is not None, f"{what}: not hex")
    raw = bytes.fromhex(value)
    check(len(raw) == size, f"{what}: {len(raw)} bytes, expected {size}")
    return raw


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# --- keys (sections 5, 6) ------------------------------------------------------------------
def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def derive_subkeys(master_key: bytes, repository_id: bytes) -> dict[str, bytes]:
    return {p: hkdf(master_key, repository_id, HKDF_INFO_PREFIX + p.encode("ascii")) for p in PURPOSES}


def signing_public_key(sign_seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(sign_seed).public_key().public_bytes_raw()


def parse_keyfile(keyfile: dict) -> dict:
    """Checks of section 5 that come *before* scrypt; returns the decoded fields."""
    check(isinstance(keyfile, dict) and keyfile.get("magic") == KEYFILE_MAGIC, "not a key file")
    check_version(keyfile.get("version"), "key file")
    kdf = keyfile.get("kdf")
    check(isinstance(kdf, dict) and kdf.get("name") == "scrypt", "key file: kdf is not scrypt")
    log2n, r, p = kdf.get("log2n"), kdf.get("r"), kdf.get("p")
    check(all(is_int(v) for v in (log2n, r, p)), "key file: scrypt parameters not integers")
    check(14 <= log2n <= 22 and r == 8 and p == 1, "key file: scrypt parameters out of bounds")
    check(keyfile.get("aead") == "aes-256-gcm", "key file: aead is not aes-256-gcm")
    return {"log2n": log2n, "r": r, "p": p, "salt": unhex(kdf.get("salt"), 32, "kdf salt"),
            "nonce": unhex(keyfile.get("nonce"), 12, "nonce"),
            "sealed": unhex(keyfile.get("sealed_master_key"), 48, "sealed_master_key"),
            "public": unhex(keyfile.get("signing_public_key"), 32, "signing_public_key")}


def kek(passphrase: bytes, kf: dict) -> bytes:
    return Scrypt(salt=kf["salt"], length=32, n=2 ** kf["log2n"], r=kf["r"], p=kf["p"]).derive(passphrase)


def unseal_master_key(keyfile: dict, passphrase: bytes, repository_id: bytes) -> bytes:
    kf = parse_keyfile(keyfile)
    try:
        return AESGCM(kek(passphrase, kf)).decrypt(kf["nonce"], kf["sealed"], KEY_AAD_PREFIX + repository_id)
    except InvalidTag:
        raise WrongPassphrase("wrong passphrase") from None


# --- ids, canonical JSON (sections 8, 12.2) ------------------------------------------------
def keyed_id(key: bytes, data: bytes) -> bytes:
    return blake3.blake3(data, key=key).digest(32)


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def gear_table(gear_key: bytes) -> list[int]:
    """Section 14: the repository's keyed gear table (not needed to restore; checked by the vectors)."""
    stream = hashlib.shake_256(b"replicator/gear/v1\0" + gear_key).digest(2048)
    return list(struct.unpack("<256Q", stream))


# --- packs (section 9) ---------------------------------------------------------------------
def pack_key(encrypt_key: bytes, salt: bytes) -> bytes:
    return hkdf(encrypt_key, salt, b"replicator/v1/pack")


def blob_nonce(i: int) -> bytes:
    return struct.pack(">IQ", 0, i)


TABLE_NONCE = struct.pack(">IQ", 0xFFFFFFFF, 0)


def check_pack_header(header: bytes) -> bytes:
    """Rules 1-2 of 9.4; returns the pack salt."""
    check(len(header) >= PACK_HEADER_SIZE and header[:8] == PACK_MAGIC, "not a pack")
    version, reserved = struct.unpack_from("<HH", header, 8)
    check_version(version, "pack")
    check(reserved == 0, "pack: reserved field not 0")
    return header[12:44]


def read_pack_table(pack: bytes, encrypt_key: bytes) -> tuple[bytes, list[tuple[int, bytes, int, int, int]]]:
    """Rules 1-8 of 9.4.  :returns: ``(pack key, [(type, id, offset, length, raw_len), ...])``."""
    salt = check_pack_header(pack)
    size = len(pack)
    check(size >= PACK_HEADER_SIZE + 12 + TAG and pack[-8:] == PACK_FOOTER_MAGIC, "pack: no footer")
    (sealed_len,) = struct.unpack_from("<I", pack, size - 12)
    t = size - 12 - sealed_len
    check(t >= PACK_HEADER_SIZE and sealed_len >= TAG + 4, "pack: bad table length")
    key = pack_key(encrypt_key, salt)
    try:
        table = AESGCM(key).decrypt(TABLE_NONCE, pack[t:size - 12], TABLE_AAD + salt)
    except InvalidTag:
        raise IntegrityError("pack: table does not authenticate") from None
    (count,) = struct.unpack_from("<I", table, 0)
    check(count <= PACK_MAX_BLOBS and len(table) == 4 + PACK_TABLE_ENTRY_SIZE * count, "pack: bad table size")
    entries, end = [], PACK_HEADER_SIZE
    for i in range(count):
        btype, bid, offset, length, raw_len = struct.unpack_from("<B32sQII", table, 4 + PACK_TABLE_ENTRY_SIZE * i)
        check(btype in (BLOB_DATA, BLOB_TREE), "pack: bad blob type")
        check(offset == end and length >= TAG + 1 and raw_len <= MAX_BLOB_SIZE, "pack: bad table entry")
        end = offset + length
        entries.append((btype, bid, offset, length, raw_len))
    check(end == t, "pack: blobs do not fill the pack")
    return key, entries


def open_blob(sealed: bytes, key: bytes, i: int, btype: int, bid: bytes, raw_len: int,
              id_key: bytes) -> bytes:
    """Rules 9-11 of 9.4: decrypt, decompress (bounded), recompute the id."""
    try:
        plain = AESGCM(key).decrypt(blob_nonce(i), sealed, BLOB_AAD + bytes([btype]) + bid)
    except InvalidTag:
        raise IntegrityError(f"blob {bid.hex()} does not authenticate") from None
    method, payload = plain[0], plain[1:]
    if method == 0:
        data = payload
    elif method == 1:
        try:
            declared = zstandard.get_frame_parameters(payload).content_size
            check(declared == raw_len, "blob: zstd content size differs from raw_len")
            data = zstandard.ZstdDecompressor().decompress(payload, max_output_size=raw_len)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"blob: bad zstd frame: {exc}") from None
    else:
        raise IntegrityError(f"blob: unknown compression method {method}")
    check(len(data) == raw_len, "blob: length differs from raw_len")
    check(hmac.compare_digest(keyed_id(id_key, data), bid), f"blob {bid.hex()}: id mismatch")
    return data


# --- trees (section 11) --------------------------------------------------------------------
class _Cursor:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        check(self.pos + n <= len(self.data), "tree: field past the end")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def num(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]


def decode_tree(data: bytes) -> list[dict]:
    """Decode and validate (11.3) a tree encoding; entries as dicts with bytes names."""
    cur = _Cursor(data)
    check(cur.take(8) == TREE_MAGIC, "tree: bad magic")
    count = cur.num("I")
    check(count <= len(data), "tree: count exceeds the blob length")
    entries, prev = [], None
    for _ in range(count):
        kind = cur.num("B")
        check(kind in (KIND_FILE, KIND_DIR, KIND_SYMLINK), "tree: bad kind")
        name = cur.take(cur.num("H"))
        check(name not in (b"", b".", b"..") and b"/" not in name and b"\0" not in name, "tree: bad name")
        check(prev is None or name > prev, "tree: names unsorted or duplicate")
        prev = name
        e = {"kind": kind, "name": name, "mode": cur.num("I"), "uid": cur.num("I"), "gid": cur.num("I"),
             "mtime_ns": cur.num("q"), "size": cur.num("Q"), "xattrs": []}
        prev_x = None
        for _ in range(cur.num("H")):
            xname = cur.take(cur.num("H"))
            check(xname != b"" and (prev_x is None or xname > prev_x), "tree: bad xattr name")
            prev_x = xname
            e["xattrs"].append((xname, cur.take(cur.num("I"))))
        e["link_to"] = cur.take(cur.num("H"))
        if kind == KIND_FILE:
            n = cur.num("I")
            check(n * 32 <= len(data), "tree: chunk_count exceeds the blob length")
            e["chunks"] = [cur.take(32) for _ in range(n)]
        elif kind == KIND_DIR:
            e["subtree"] = cur.take(32)
        else:
            e["target"] = cur.take(cur.num("H"))
        entries.append(e)
    check(cur.pos == len(data), "tree: bytes after the last entry")
    return entries


# --- snapshots (section 12) ----------------------------------------------------------------
def snapshot_key(encrypt_key: bytes, salt: bytes) -> bytes:
    return hkdf(encrypt_key, salt, b"replicator/v1/snapshot")


def open_snapshot(name_hash: str, obj: bytes, encrypt_key: bytes, public_key: bytes,
                  repository_id_hex: str) -> dict:
    """Rules 1-7 of 12.5; returns the verified body."""
    check(hmac.compare_digest(hashlib.sha256(obj).hexdigest(), name_hash), "snapshot: hash differs from name")
    check(PACK_HEADER_SIZE + TAG <= len(obj) <= MAX_SNAPSHOT_SIZE + 1024, "snapshot: bad size")
    check(obj[:8] == SNAPSHOT_MAGIC, "not a snapshot")
    version, reserved = struct.unpack_from("<HH", obj, 8)
    check_version(version, "snapshot")
    check(reserved == 0, "snapshot: reserved field not 0")
    header = obj[:44]
    try:
        document = AESGCM(snapshot_key(encrypt_key, obj[12:44])).decrypt(bytes(12), obj[44:], SNAPSHOT_AAD + header)
    except InvalidTag:
        raise IntegrityError("snapshot does not authenticate") from None
    try:
        doc = json.loads(document)
    except ValueError:
        raise IntegrityError("snapshot: document is not JSON") from None
    check(isinstance(doc, dict) and isinstance(doc.get("body"), dict), "snapshot: no body")
    body, signature = doc["body"], unhex(doc.get("signature"), 64, "signature")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, canonical_json(body))
    except InvalidSignature:
        raise IntegrityError("snapshot: bad signature") from None
    check(body.get("repository") == repository_id_hex, "snapshot: other repository")
    check_version(body.get("version"), "snapshot body")
    unhex(body.get("tree"), 32, "snapshot tree")
    check(is_int(body.get("generation")) and body["generation"] >= 1, "snapshot: bad generation")
    check(is_int(body.get("time_ns")) and isinstance(body.get("source"), str), "snapshot: bad time or source")
    check(body.get("parent") is None or isinstance(body["parent"], str), "snapshot: bad parent")
    return body


# --- the repository ------------------------------------------------------------------------
def check_config(config: object) -> None:
    """Section 4 and the chunker rules of section 14."""
    if not isinstance(config, dict) or config.get("magic") != REPO_MAGIC:
        raise ReaderError("not a replicator repository")
    check_version(config.get("version"), "repository")
    check(isinstance(config.get("id"), str) and HEX64.match(config["id"]) is not None, "config: bad id")
    ch = config.get("chunker")
    check(isinstance(ch, dict) and set(ch) == {"min", "avg", "max"} and all(is_int(v) for v in ch.values()),
          "config: bad chunker")
    avg = ch["avg"]
    check(avg >= 256 and avg & (avg - 1) == 0 and 64 <= ch["min"] <= avg <= ch["max"] <= 64 << 20,
          "config: chunker parameters out of bounds")


class Repository:
    """A repository directory opened with a passphrase (bytes, or str = its UTF-8 bytes)."""

    def __init__(self, path: str | os.PathLike, passphrase: bytes | str):
        self.path = os.fspath(path)
        if isinstance(passphrase, str):
            passphrase = passphrase.encode("utf-8")
        with open(os.path.join(self.path, "config"), "rb") as f:
            self.config = json.loads(f.read())
        check_config(self.config)
        self.id_hex = self.config["id"]
        self.id = bytes.fromhex(self.id_hex)
        with open(os.path.join(self.path, "keys", "default"), "rb") as f:
            keyfile = json.loads(f.read())
        self.master_key = unseal_master_key(keyfile, passphrase, self.id)
        self.keys = derive_subkeys(self.master_key, self.id)
        self.public_key = bytes.fromhex(keyfile["signing_public_key"])
        check(signing_public_key(self.keys["sign"]) == self.public_key, "key file: signing key mismatch")
        self._blobs: dict[bytes, tuple[str, bytes, int, tuple]] | None = None

    def _read(self, name: str) -> bytes:
        with open(os.path.join(self.path, *name.split("/")), "rb") as f:
            return f.read()

    def _names(self, prefix: str) -> list[str]:
        base = os.path.join(self.path, prefix)
        return sorted(n for n in os.listdir(base) if HEX64.match(n)) if os.path.isdir(base) else []

    # snapshots
    def snapshot_names(self) -> list[str]:
        return ["snapshots/" + h for h in self._names("snapshots")]

    def snapshot(self, name: str) -> dict:
        return open_snapshot(name.rsplit("/", 1)[-1], self._read(name), self.keys["encrypt"],
                             self.public_key, self.id_hex)

    def snapshots(self) -> list[tuple[str, dict]]:
        """Every snapshot, ordered by (time_ns, source, generation) (12.5)."""
        found = [(n, self.snapshot(n)) for n in self.snapshot_names()]
        return sorted(found, key=lambda nb: (nb[1]["time_ns"], nb[1]["source"], nb[1]["generation"]))

    # packs and blobs
    def pack_names(self) -> list[str]:
        names = []
        for xx in sorted(os.listdir(os.path.join(self.path, "data"))):
            if re.fullmatch(r"[0-9a-f]{2}", xx):
                names += [f"data/{xx}/{h}" for h in self._names(f"data/{xx}") if h[:2] == xx]
        return names

    def pack_table(self, name: str) -> tuple[bytes, list[tuple]]:
        pack = self._read(name)
        check(hashlib.sha256(pack).hexdigest() == name.rsplit("/", 1)[-1], f"{name}: hash differs from name")
        return read_pack_table(pack, self.keys["encrypt"])

    def _index(self) -> dict:
        if self._blobs is None:
            self._blobs = {}
            for name in self.pack_names():
                key, entries = self.pack_table(name)
                for i, entry in enumerate(entries):
                    self._blobs.setdefault(entry[1], (name, key, i, entry))
        return self._blobs

    def blob(self, bid: bytes, btype: int) -> bytes:
        try:
            name, key, i, (etype, _, offset, length, raw_len) = self._index()[bid]
        except KeyError:
            raise IntegrityError(f"blob {bid.hex()} is in no pack") from None
        check(etype == btype, f"blob {bid.hex()}: wrong type")
        with open(os.path.join(self.path, *name.split("/")), "rb") as f:
            f.seek(offset)
            sealed = f.read(length)
        check(len(sealed) == length, f"{name}: short read")
        return open_blob(sealed, key, i, btype, bid, raw_len,
                         self.keys["chunk-id" if btype == BLOB_DATA else "tree-id"])

    def tree(self, tree_id: bytes) -> list[dict]:
        return decode_tree(self.blob(tree_id, BLOB_TREE))

    # paths
    def lookup(self, body: dict, path: str | bytes) -> dict:
        """The tree entry at ``path`` (``/``-separated, relative to the snapshot root)."""
        parts = [p for p in (os.fsencode(path)).split(b"/") if p]
        check(bool(parts), "lookup: empty path")
        entries = self.tree(bytes.fromhex(body["tree"]))
        for depth, part in enumerate(parts):
            entry = next((e for e in entries if e["name"] == part), None)
            if entry is None:
                raise FileNotFoundError(path)
            if depth == len(parts) - 1:
                return entry
            if entry["kind"] != KIND_DIR:
                raise NotADirectoryError(path)
            entries = self.tree(entry["subtree"])
        raise AssertionError("unreachable")

    def walk(self, tree_id: bytes, prefix: bytes = b""):
        """Yield ``(relative path bytes, entry)`` in walk order (pre-order, sorted siblings)."""
        for e in self.tree(tree_id):
            path = prefix + e["name"]
            yield path, e
            if e["kind"] == KIND_DIR:
                yield from self.walk(e["subtree"], path + b"/")

    def file_bytes(self, entry: dict) -> bytes:
        check(entry["kind"] == KIND_FILE, "not a regular file")
        data = b"".join(self.blob(c, BLOB_DATA) for c in entry["chunks"])
        check(len(data) == entry["size"], "file: size differs from its chunks")
        return data

    def read_file(self, body: dict, path: str | bytes) -> bytes:
        return self.file_bytes(self.lookup(body, path))

"""The independent reader (tests/reference/reader.py, written from docs/FORMAT.md only) against
the golden vectors, the 0.1.0 fixture repository and a repository freshly written by the program."""
from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import struct
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.conftest import run_cli
from tests.reference import reader as R

HERE = Path(__file__).resolve().parent
VECTORS = HERE.parent / "vectors"
FIXTURE = HERE.parent / "fixtures" / "repo-0.1.0.tar.gz"
KINDS = {"file": R.KIND_FILE, "dir": R.KIND_DIR, "symlink": R.KIND_SYMLINK}


def vec(name: str) -> dict:
    return json.loads((VECTORS / f"{name}.json").read_text())


def h(s: str) -> bytes:
    return bytes.fromhex(s)


# --- (4) independence -----------------------------------------------------------------------
def test_reader_imports_nothing_from_replicator():
    tree = ast.parse((HERE / "reader.py").read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in reader.py"
            modules.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            pytest.fail("dynamic import in reader.py")
    allowed = {"__future__", "hashlib", "hmac", "json", "os", "re", "struct", "blake3", "zstandard"}
    for m in modules:
        assert m.split(".")[0] != "replicator", m
        assert m in allowed or m.split(".")[0] == "cryptography", f"reader.py imports {m}"


# --- (1) golden vectors ---------------------------------------------------------------------
def test_vector_subkeys_and_signing_key():
    v = vec("keys")
    assert v["format_version"] == 1 and v["hkdf_salt"] == v["repository_id"]
    keys = R.derive_subkeys(h(v["master_key"]), h(v["repository_id"]))
    assert set(keys) == set(v["subkeys"])
    for purpose, sk in v["subkeys"].items():
        assert R.HKDF_INFO_PREFIX + purpose.encode() == h(sk["info"])
        assert keys[purpose].hex() == sk["key"], purpose
    assert R.signing_public_key(keys["sign"]).hex() == v["signing_public_key"]


def test_vector_keyfile():
    v = vec("keys")
    kv = v["keyfile"]
    obj = json.loads(h(kv["object"]))
    fields = R.parse_keyfile(obj)
    assert obj["kdf"] == kv["kdf"] and fields["salt"] == h(kv["kdf"]["salt"])
    assert fields["nonce"] == h(kv["nonce"]) and fields["sealed"] == h(kv["sealed_master_key"])
    assert fields["public"].hex() == v["signing_public_key"]
    assert R.KEY_AAD_PREFIX + h(v["repository_id"]) == h(kv["aad"])
    assert R.kek(h(kv["passphrase"]), fields).hex() == kv["kek"]
    master = R.unseal_master_key(obj, h(kv["passphrase"]), h(v["repository_id"]))
    assert master.hex() == v["master_key"]
    with pytest.raises(R.WrongPassphrase):
        R.unseal_master_key(obj, b"wrong", h(v["repository_id"]))
    with pytest.raises(R.WrongPassphrase):  # the AAD binds the key file to its repository
        R.unseal_master_key(obj, h(kv["passphrase"]), bytes(32))


@pytest.mark.parametrize("change", [
    {"version": 2}, {"kdf": {"log2n": 23}}, {"kdf": {"log2n": 13}}, {"kdf": {"r": 16}}, {"kdf": {"p": 2}},
    {"kdf": {"log2n": "14"}}, {"nonce": "00" * 11}, {"kdf": {"salt": "00" * 31}},
    {"sealed_master_key": "00" * 47}, {"signing_public_key": "00" * 33},
])
def test_vector_keyfile_refused_before_scrypt(change):
    obj = json.loads(h(vec("keys")["keyfile"]["object"]))
    for k, val in change.items():
        if isinstance(val, dict):
            obj[k].update(val)
        else:
            obj[k] = val
    with pytest.raises(R.UnsupportedVersion if "version" in change else R.IntegrityError):
        R.parse_keyfile(obj)


def test_vector_ids():
    v, keys = vec("ids"), vec("keys")["subkeys"]
    assert v["chunk_id_key"] == keys["chunk-id"]["key"] and v["tree_id_key"] == keys["tree-id"]["key"]
    for case in v["cases"]:
        data = h(case["data"])
        assert R.keyed_id(h(v["chunk_id_key"]), data).hex() == case["chunk_id"]
        assert R.keyed_id(h(v["tree_id_key"]), data).hex() == case["tree_id"]
    assert h(v["cases"][2]["data"]) == bytes(i % 251 for i in range(1000))


def test_vector_gear():
    v = vec("gear")
    assert h(v["domain"]) == b"replicator/gear/v1\0"
    assert v["cases"][2]["gear_key"] == vec("keys")["subkeys"]["gear"]["key"]
    for case in v["cases"]:
        table = R.gear_table(h(case["gear_key"]))
        assert [f"{x:016x}" for x in table[:4]] == case["first_entries"]
        assert f"{table[-1]:016x}" == case["last_entry"]
        assert hashlib.sha256(struct.pack("<256Q", *table)).hexdigest() == case["table_sha256"]


def test_vector_tree():
    v = vec("tree")
    enc = h(v["encoding"])
    assert R.keyed_id(h(v["tree_id_key"]), enc).hex() == v["tree_id"]
    entries = R.decode_tree(enc)
    items = sorted(v["items"], key=lambda it: h(it["name"]))
    assert len(entries) == len(items) == 5
    for e, it in zip(entries, items):
        assert e["kind"] == KINDS[it["kind"]] and e["name"] == h(it["name"])
        for f in ("mode", "uid", "gid", "mtime_ns", "size"):
            assert e[f] == it[f], f
        assert e["xattrs"] == [(h(n), h(val)) for n, val in it["xattrs"]]
        assert e["link_to"] == h(it["link_to"])
        assert e.get("chunks", []) == [h(c) for c in it["chunks"]]
        assert e.get("subtree", b"") == h(it["subtree"])
        assert e.get("target", b"") == h(it["target"])


@pytest.mark.parametrize("mutate", [
    lambda b: b"RTREE002" + b[8:],                  # magic
    lambda b: b[:-1],                               # field past the end
    lambda b: b + b"\0",                            # bytes after the last entry
    lambda b: b[:8] + struct.pack("<I", 6) + b[12:],  # count too large
    lambda b: b[:12] + b"\x07" + b[13:],            # kind
])
def test_vector_tree_rejected(mutate):
    with pytest.raises(R.IntegrityError):
        R.decode_tree(mutate(h(vec("tree")["encoding"])))


def test_vector_tree_unsorted_names_rejected():
    def entry(name: bytes) -> bytes:
        return (bytes([R.KIND_FILE]) + struct.pack("<H", len(name)) + name + struct.pack("<IIIqQHH", 0o644, 0, 0, 0, 0, 0, 0)
                + struct.pack("<I", 0))
    good = R.TREE_MAGIC + struct.pack("<I", 2) + entry(b"a") + entry(b"ab")
    assert [e["name"] for e in R.decode_tree(good)] == [b"a", b"ab"]
    for names in ([b"ab", b"a"], [b"a", b"a"], [b"a", b"."], [b"a", b"b/c"], [b"a", b"b\0"]):
        with pytest.raises(R.IntegrityError):
            R.decode_tree(R.TREE_MAGIC + struct.pack("<I", 2) + b"".join(entry(n) for n in names))


def test_vector_pack():
    v, keys = vec("pack"), vec("keys")["subkeys"]
    pack = h(v["pack"])
    assert len(pack) == v["size"]
    digest = hashlib.sha256(pack).hexdigest()
    assert v["name"] == f"data/{digest[:2]}/{digest}"
    assert v["encrypt_key"] == keys["encrypt"]["key"] and h(v["pack_key_info"]) == b"replicator/v1/pack"
    assert pack[12:44] == h(v["salt"])
    key, entries = R.read_pack_table(pack, h(v["encrypt_key"]))
    assert key.hex() == v["pack_key"]
    # the table: where it is, its nonce and AAD, its plaintext, reproduced by sealing
    assert struct.unpack_from("<I", pack, len(pack) - 12)[0] == v["table_length"]
    assert len(pack) - 12 - v["table_length"] == v["table_offset"]
    assert R.TABLE_NONCE == h(v["table_nonce"]) and R.TABLE_AAD + h(v["salt"]) == h(v["table_aad"])
    sealed_table = AESGCM(key).encrypt(R.TABLE_NONCE, h(v["table_plaintext"]), h(v["table_aad"]))
    assert pack[v["table_offset"]:len(pack) - 12] == sealed_table
    assert len(entries) == len(v["blobs"]) == 3
    id_keys = {R.BLOB_DATA: h(keys["chunk-id"]["key"]), R.BLOB_TREE: h(keys["tree-id"]["key"])}
    for i, (entry, b) in enumerate(zip(entries, v["blobs"])):
        btype, bid, offset, length, raw_len = entry
        assert (btype, bid.hex(), offset, length, raw_len, i) == (b["type"], b["id"], b["offset"], b["length"],
                                                                  b["raw_len"], b["seq"])
        assert R.blob_nonce(i) == h(b["nonce"]) and R.BLOB_AAD + bytes([btype]) + bid == h(b["aad"])
        assert length == 1 + len(h(b["payload"])) + 16
        assert AESGCM(key).encrypt(R.blob_nonce(i), bytes([b["method"]]) + h(b["payload"]), h(b["aad"])) \
            == pack[offset:offset + length]
        plain = R.open_blob(pack[offset:offset + length], key, i, btype, bid, raw_len, id_keys[btype])
        assert plain == h(b["plaintext"])
    assert [b["method"] for b in v["blobs"]] == [0, 1, 0]
    assert h(v["blobs"][2]["plaintext"]) == h(vec("tree")["encoding"])


@pytest.mark.parametrize("where", ["magic", "version", "reserved", "salt", "blob", "table", "footer", "length"])
def test_vector_pack_damage_detected(where):
    v = vec("pack")
    pack = bytearray(h(v["pack"]))
    pos = {"magic": 0, "version": 8, "reserved": 10, "salt": 20, "blob": 50, "table": v["table_offset"] + 3,
           "footer": len(pack) - 2, "length": len(pack) - 12}[where]
    pack[pos] ^= 1
    pack = bytes(pack)
    keys = vec("keys")["subkeys"]
    with pytest.raises(R.UnsupportedVersion if where == "version" else R.IntegrityError):
        key, entries = R.read_pack_table(pack, h(v["encrypt_key"]))
        for i, (btype, bid, offset, length, raw_len) in enumerate(entries):
            R.open_blob(pack[offset:offset + length], key, i, btype, bid, raw_len,
                        h(keys["chunk-id" if btype == 0 else "tree-id"]["key"]))


def test_vector_blob_wrong_position_or_type_rejected():
    v, keys = vec("pack"), vec("keys")["subkeys"]
    pack = h(v["pack"])
    key, entries = R.read_pack_table(pack, h(v["encrypt_key"]))
    btype, bid, offset, length, raw_len = entries[0]
    sealed, ck = pack[offset:offset + length], h(keys["chunk-id"]["key"])
    with pytest.raises(R.IntegrityError):
        R.open_blob(sealed, key, 1, btype, bid, raw_len, ck)
    with pytest.raises(R.IntegrityError):
        R.open_blob(sealed, key, 0, R.BLOB_TREE, bid, raw_len, ck)


def test_vector_snapshot():
    v, keys = vec("snapshot"), vec("keys")
    obj = h(v["object"])
    assert v["name"] == "snapshots/" + hashlib.sha256(obj).hexdigest()
    assert obj[:44] == h(v["header"]) and obj[12:44] == h(v["salt"])
    assert v["encrypt_key"] == keys["subkeys"]["encrypt"]["key"]
    assert v["signing_public_key"] == keys["signing_public_key"]
    assert h(v["snapshot_key_info"]) == b"replicator/v1/snapshot"
    skey = R.snapshot_key(h(v["encrypt_key"]), h(v["salt"]))
    assert skey.hex() == v["snapshot_key"]
    assert h(v["nonce"]) == bytes(12) and R.SNAPSHOT_AAD + h(v["header"]) == h(v["aad"])
    assert R.canonical_json(v["body"]).decode() == v["body_json"]
    document = R.canonical_json({"body": v["body"], "signature": v["signature"]})
    assert document.decode() == v["document"]
    assert AESGCM(skey).encrypt(bytes(12), document, h(v["aad"])) == obj[44:]
    body = R.open_snapshot(v["name"].split("/")[1], obj, h(v["encrypt_key"]), h(v["signing_public_key"]),
                           keys["repository_id"])
    assert body == v["body"] and body["tree"] == vec("tree")["tree_id"]


@pytest.mark.parametrize("where", [0, 9, 10, 20, 50, -1])
def test_vector_snapshot_damage_detected(where):
    v, keys = vec("snapshot"), vec("keys")
    obj = bytearray(h(v["object"]))
    obj[where] ^= 1
    obj = bytes(obj)
    name = hashlib.sha256(obj).hexdigest()  # a consistent name: the content checks must still catch it
    with pytest.raises(R.UnsupportedVersion if where == 9 else R.IntegrityError):
        R.open_snapshot(name, obj, h(v["encrypt_key"]), h(v["signing_public_key"]), keys["repository_id"])
    with pytest.raises(R.IntegrityError):
        R.open_snapshot(v["name"].split("/")[1], obj, h(v["encrypt_key"]), h(v["signing_public_key"]),
                        keys["repository_id"])


def test_canonical_json_rules():
    assert R.canonical_json({"b": 1, "a": ["\u00e9\U0001f600/\"\\\n\x7f", None, True, -3]}) == \
        b'{"a":["\\u00e9\\ud83d\\ude00/\\"\\\\\\n\\u007f",null,true,-3],"b":1}'


def test_vectors_chain_to_file_content(tmp_path):
    """FORMAT.md 16: from the snapshot to the file content using only the vectors (and a config)."""
    keys, pack, snap = vec("keys"), vec("pack"), vec("snapshot")
    repo = tmp_path / "repo"
    (repo / "keys").mkdir(parents=True)
    (repo / "config").write_text(json.dumps({
        "magic": "replicator-repository", "version": 1, "id": keys["repository_id"],
        "chunker": {"min": 65536, "avg": 262144, "max": 1048576}}))
    (repo / "keys" / "default").write_bytes(h(keys["keyfile"]["object"]))
    (repo / Path(pack["name"])).parent.mkdir(parents=True)
    (repo / pack["name"]).write_bytes(h(pack["pack"]))
    (repo / "snapshots").mkdir()
    (repo / snap["name"]).write_bytes(h(snap["object"]))
    (repo / "snapshots" / ".tmp-1-000000000000").write_bytes(b"ignored")
    (repo / "index.sqlite").write_bytes(b"ignored")
    r = R.Repository(repo, h(keys["keyfile"]["passphrase"]))
    assert r.master_key.hex() == keys["master_key"]
    [(name, body)] = r.snapshots()
    assert name == snap["name"] and body == snap["body"]
    expected = b"".join(h(b["plaintext"]) for b in pack["blobs"][:2])
    assert r.read_file(body, "report.txt") == expected == r.read_file(body, b"report.txt.1")
    assert r.lookup(body, "report.txt.1")["link_to"] == b"report.txt"
    assert r.lookup(body, "latest")["target"] == b"report.txt"
    assert r.read_file(body, b"caf\xe9.txt") == b""
    with pytest.raises(FileNotFoundError):
        r.lookup(body, "missing")
    with pytest.raises(R.WrongPassphrase):
        R.Repository(repo, b"not the passphrase")


# --- (2) the 0.1.0 fixture repository -------------------------------------------------------
@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fixture")
    with tarfile.open(FIXTURE) as tar:
        if hasattr(tarfile, "tar_filter"):
            tar.extractall(d, filter="tar")
        else:
            tar.extractall(d)
    return d


def source_files(root: Path) -> dict[bytes, Path]:
    out = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for n in filenames:
            p = Path(dirpath) / n
            if not p.is_symlink():
                out[os.fsencode(p.relative_to(root).as_posix())] = p
    return out


def test_fixture_latest_snapshot_restores_byte_for_byte(fixture_dir):
    r = R.Repository(fixture_dir / "fixture-repo", "fixture-passphrase")
    assert r.config["chunker"] == {"min": 4096, "avg": 16384, "max": 65536}
    snaps = r.snapshots()
    assert [b["generation"] for _, b in snaps] == [1, 2]
    assert all(b["source"] == "fixture" for _, b in snaps)
    assert snaps[1][1]["parent"] == snaps[0][0].split("/")[1] and snaps[0][1]["parent"] is None
    body = snaps[-1][1]
    src = fixture_dir / "src"
    files = source_files(src)
    walked = dict(r.walk(bytes.fromhex(body["tree"])))
    restored = {p: r.file_bytes(e) for p, e in walked.items() if e["kind"] == R.KIND_FILE}
    assert set(restored) == set(files) and len(files) == 4
    for p, data in restored.items():
        assert data == files[p].read_bytes(), p
        assert walked[p]["mode"] == files[p].stat().st_mode & 0o7777
    assert walked[b"ward/latest"]["target"] == os.fsencode(os.readlink(src / "ward" / "latest"))
    assert {p for p, e in walked.items() if e["kind"] == R.KIND_DIR} == {b"lab", b"ward", b"ward/a"}
    assert r.read_file(body, "lab/scan.bin") == (src / "lab" / "scan.bin").read_bytes()
    # every pack reads and every blob in it opens
    for name in r.pack_names():
        key, entries = r.pack_table(name)
        for bid, btype in ((e[1], e[0]) for e in entries):
            r.blob(bid, btype)


# --- (3) a repository freshly written by the program ----------------------------------------
def make_tree(root: Path) -> bytes:
    rng = random.Random(20240501)
    parts = []
    for i in range(24):  # about 3 MiB: random, text, zeros, repeats
        kind = i % 4
        if kind == 0:
            parts.append(rng.randbytes(rng.randrange(50_000, 250_000)))
        elif kind == 1:
            parts.append(b"".join(b"record %08d: value=%d\n" % (j, rng.randrange(10**6)) for j in range(4000)))
        elif kind == 2:
            parts.append(bytes(rng.randrange(10_000, 200_000)))
        else:
            parts.append(parts[-3][:100_000])
    big = b"".join(parts)
    (root / "data" / "deep").mkdir(parents=True)
    (root / "data" / "deep" / "mixed.bin").write_bytes(big)
    (root / "data" / "small.txt").write_text("small file\n")
    (root / "empty").write_bytes(b"")
    (root / "link").symlink_to("data/small.txt")
    return big


def test_fresh_repository_written_by_the_program(tmp_path):
    src, repo = tmp_path / "src", tmp_path / "repo"
    src.mkdir()
    big = make_tree(src)
    assert len(big) > 2 << 20
    env = {"REPLICATOR_CACHE_DIR": str(tmp_path / "cache")}
    passphrase = "r\u00e9ader passphrase"  # non-ASCII: the CLI passes the variable's UTF-8 bytes
    r = run_cli("init", "--kdf-work", "14", "-q", str(repo), passphrase=passphrase, env=env)
    assert r.returncode == 0, r.stderr
    r = run_cli("sync", "--name", "fresh", "-q", str(src), str(repo), passphrase=passphrase, env=env)
    assert r.returncode == 0, r.stderr
    (src / "data" / "small.txt").write_text("changed\n")
    r = run_cli("sync", "--name", "fresh", "-q", str(src), str(repo), passphrase=passphrase, env=env)
    assert r.returncode == 0, r.stderr

    reader = R.Repository(repo, passphrase.encode("utf-8"))
    snaps = reader.snapshots()
    assert [b["generation"] for _, b in snaps] == [1, 2] and snaps[-1][1]["source"] == "fresh"
    first, latest = snaps[0][1], snaps[-1][1]
    entry = reader.lookup(latest, "data/deep/mixed.bin")
    assert len(entry["chunks"]) > 3
    assert reader.file_bytes(entry) == big
    assert reader.read_file(first, "data/small.txt") == b"small file\n"
    assert reader.read_file(latest, "data/small.txt") == b"changed\n"
    assert reader.read_file(latest, "empty") == b""
    assert reader.lookup(latest, "link")["target"] == b"data/small.txt"
    assert reader.lookup(first, "data/deep/mixed.bin")["chunks"] == entry["chunks"]  # deduplicated
    with pytest.raises(R.WrongPassphrase):
        R.Repository(repo, b"wrong")

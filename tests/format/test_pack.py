"""Packs: round trip, and every kind of damage ends in IntegrityError (or UnsupportedVersion)."""
from __future__ import annotations

import os
import struct
from dataclasses import replace

import pytest
import zstandard

from replicator import constants as C
from replicator.core.compress import compress
from replicator.core.ids import IdHasher
from replicator.errors import IntegrityError, UnsupportedVersion
from replicator.format.pack import (
    BlobEntry,
    PackWriter,
    nonce,
    open_blob,
    pack_key,
    pack_name,
    parse_header,
    read_table,
)

ENC = bytes(range(32))
CHUNK = IdHasher(bytes(range(100, 132)))
TREE = IdHasher(bytes(range(200, 232)))
_ENTRY = struct.Struct("<B32sQII")

BLOBS = [
    (C.BLOB_DATA, b"patient record\n" * 200),  # compresses
    (C.BLOB_DATA, os.urandom(700)),  # stored
    (C.BLOB_TREE, b"RTREE001" + b"\x00" * 300),  # compresses, tree type
    (C.BLOB_DATA, b"x"),  # tiny, stored
    (C.BLOB_TREE, os.urandom(64)),  # stored tree
]


def hasher(t: int) -> IdHasher:
    return CHUNK if t == C.BLOB_DATA else TREE


def build(blobs=BLOBS, key=ENC):
    w = PackWriter(key)
    for t, data in blobs:
        method, payload = compress(data)
        w.add(t, hasher(t)(data), method, payload, len(data))
    return w.finish()


def table_span(data: bytes) -> tuple[int, int]:
    (table_len,) = struct.unpack_from("<I", data, len(data) - C.PACK_FOOTER_SIZE)
    start = len(data) - C.PACK_FOOTER_SIZE - table_len
    return start, table_len


def reseal_table(data: bytes, rows: list[tuple], count: int | None = None, key: bytes = ENC) -> bytes:
    """Replace the table of ``data`` by ``rows`` (type, id, offset, length, raw_len), sealed with the real key."""
    salt = parse_header(data, "p")
    start, _ = table_span(data)
    table = struct.pack("<I", len(rows) if count is None else count) + b"".join(_ENTRY.pack(*r) for r in rows)
    sealed = pack_key(key, salt).seal(nonce(C.NONCE_DOMAIN_TABLE, 0), table, C.TABLE_AAD_PREFIX + salt)
    return data[:start] + sealed + struct.pack("<I8s", len(sealed), C.PACK_FOOTER_MAGIC)


def rows_of(entries: list[BlobEntry]) -> list[tuple]:
    return [(e.type, e.id, e.offset, e.length, e.raw_len) for e in entries]


def open_all(data: bytes, entries: list[BlobEntry], key: bytes = ENC) -> list[bytes]:
    aead = pack_key(key, parse_header(data, "p"))
    return [open_blob(aead, e, data[e.offset : e.offset + e.length], hasher(e.type), "p") for e in entries]


@pytest.fixture(scope="module")
def pack():
    return build()


def test_round_trip(pack):
    name, data, entries = pack
    assert name == pack_name(data) and name.startswith(f"data/{name[5:7]}/")
    assert data.startswith(C.PACK_MAGIC) and data.endswith(C.PACK_FOOTER_MAGIC)
    table = read_table(data, name, ENC)
    assert table == entries
    assert [e.type for e in table] == [t for t, _ in BLOBS]
    assert open_all(data, table) == [d for _, d in BLOBS]


def test_both_compression_methods_used(pack):
    _, data, entries = pack
    aead = pack_key(ENC, parse_header(data, "p"))
    methods = {aead.open(nonce(C.NONCE_DOMAIN_BLOB, e.seq), data[e.offset : e.offset + e.length],
                         C.BLOB_AAD_PREFIX + bytes((e.type,)) + e.id)[0] for e in entries}
    assert methods == {C.COMPRESSION_NONE, C.COMPRESSION_ZSTD}


def test_no_plaintext_in_pack(pack):
    assert b"patient record" not in pack[1]


def test_empty_pack_round_trip():
    name, data, entries = PackWriter(ENC).finish()
    assert entries == [] and read_table(data, name, ENC) == []


def test_two_packs_differ():
    a, b = build(), build()
    assert a[1][12:44] != b[1][12:44]  # salts
    assert a[0] != b[0]
    assert a[1] != b[1]


def test_wrong_key(pack):
    name, data, entries = pack
    with pytest.raises(IntegrityError):
        read_table(data, name, bytes(32))
    with pytest.raises(IntegrityError):
        open_all(data, entries, key=bytes(32))


def test_flip_any_byte_of_any_blob(pack):
    _, data, entries = pack
    aead = pack_key(ENC, parse_header(data, "p"))
    for e in entries:
        for i in range(e.offset, e.offset + e.length):
            sealed = bytearray(data[e.offset : e.offset + e.length])
            sealed[i - e.offset] ^= 0x01
            with pytest.raises(IntegrityError):
                open_blob(aead, e, bytes(sealed), hasher(e.type), "p")


def test_flip_any_byte_of_table_or_footer(pack):
    name, data, _ = pack
    start, _ = table_span(data)
    for i in range(start, len(data)):
        d = bytearray(data)
        d[i] ^= 0x01
        with pytest.raises(IntegrityError):
            read_table(bytes(d), name, ENC)


@pytest.mark.parametrize("offset", [*range(0, 8), *range(12, 44)])
def test_flip_magic_or_salt(pack, offset):
    name, data, _ = pack
    d = bytearray(data)
    d[offset] ^= 0x40
    with pytest.raises(IntegrityError):
        read_table(bytes(d), name, ENC)


def test_truncation_at_every_offset(pack):
    name, data, _ = pack
    for n in range(len(data)):
        with pytest.raises(IntegrityError):
            read_table(data[:n], name, ENC)


def test_truncated_blob(pack):
    _, data, entries = pack
    aead = pack_key(ENC, parse_header(data, "p"))
    e = entries[0]
    for n in range(e.length):
        with pytest.raises(IntegrityError):
            open_blob(aead, e, data[e.offset : e.offset + n], hasher(e.type), "p")


def test_reseal_helper_is_faithful(pack):
    """The hostile tables below differ from this only in the rows."""
    name, data, entries = pack
    assert read_table(reseal_table(data, rows_of(entries)), name, ENC) == entries


def _hostile_tables(entries: list[BlobEntry], table_start: int) -> dict[str, tuple[list[tuple], int | None]]:
    rows = rows_of(entries)
    r0, r1 = rows[0], rows[1]
    return {
        "overlap": ([r0, (r1[0], r1[1], r0[2], r1[3], r1[4]), *rows[2:]], None),
        "overlap-by-one": ([r0, (r1[0], r1[1], r1[2] - 1, r1[3] + 1, r1[4]), *rows[2:]], None),
        "gap": ([r0, (r1[0], r1[1], r1[2] + 1, r1[3] - 1, r1[4]), *rows[2:]], None),
        "first-in-header": ([(r0[0], r0[1], r0[2] - 1, r0[3] + 1, r0[4]), *rows[1:]], None),
        "past-table": ([*rows[:-1], (rows[-1][0], rows[-1][1], rows[-1][2], rows[-1][3] + 100, rows[-1][4])], None),
        "beyond-pack": ([*rows, (0, b"\x01" * 32, table_start, 0xFFFFFFFF, 10)], None),
        "huge-offset": ([(r0[0], r0[1], 1 << 62, r0[3], r0[4]), *rows[1:]], None),
        "missing-last": (rows[:-1], None),
        "length-too-small": ([r0, (r1[0], r1[1], r1[2], 16, r1[4])], None),
        "unknown-type": ([(7, *r0[1:]), *rows[1:]], None),
        "raw-len-too-big": ([(*r0[:4], C.MAX_BLOB_SIZE + 1), *rows[1:]], None),
        "count-too-high": (rows, len(rows) + 1),
        "count-too-low": (rows, len(rows) - 1),
        "count-absurd": (rows, 0xFFFFFFFF),
        "count-max-plus-one": (rows, C.PACK_MAX_BLOBS + 1),
    }


HOSTILE = ["overlap", "overlap-by-one", "gap", "first-in-header", "past-table", "beyond-pack", "huge-offset",
           "missing-last", "length-too-small", "unknown-type", "raw-len-too-big", "count-too-high",
           "count-too-low", "count-absurd", "count-max-plus-one"]


def test_hostile_case_list_complete(pack):
    assert sorted(_hostile_tables(pack[2], 0)) == sorted(HOSTILE)


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_table(pack, case):
    name, data, entries = pack
    rows, count = _hostile_tables(entries, table_span(data)[0])[case]
    with pytest.raises(IntegrityError):
        read_table(reseal_table(data, rows, count), name, ENC)


def test_table_moved_to_another_pack():
    a, b = build(), build()
    start_a, _ = table_span(a[1])
    start_b, _ = table_span(b[1])
    # Same blob layout, b's table grafted onto a: the table AAD names the salt.
    grafted = a[1][:start_a] + b[1][start_b:]
    with pytest.raises(IntegrityError):
        read_table(grafted, "p", ENC)


@pytest.mark.parametrize("change", ["id", "type", "seq"])
def test_blob_bound_to_id_type_and_position(pack, change):
    _, data, entries = pack
    aead = pack_key(ENC, parse_header(data, "p"))
    e = entries[0]
    if change == "id":
        other = replace(e, id=entries[1].id)
    elif change == "type":
        other = replace(e, type=C.BLOB_TREE)
    else:
        other = replace(e, seq=1)
    with pytest.raises(IntegrityError):
        open_blob(aead, other, data[e.offset : e.offset + e.length], hasher(other.type), "p")


def test_blob_whose_content_does_not_match_id():
    w = PackWriter(ENC)
    w.add(C.BLOB_DATA, CHUNK(b"claimed"), C.COMPRESSION_NONE, b"actual!", 7)
    _, data, _ = w.finish()
    (e,) = read_table(data, "p", ENC)
    with pytest.raises(IntegrityError, match="does not match its id"):
        open_all(data, [e])


def test_wrong_raw_len_in_table():
    w = PackWriter(ENC)
    w.add(C.BLOB_DATA, CHUNK(b"abcdef"), C.COMPRESSION_NONE, b"abcdef", 6)
    _, data, entries = w.finish()
    with pytest.raises(IntegrityError):
        open_all(data, [replace(entries[0], raw_len=5)])


def test_decompression_is_capped():
    """An authenticated zstd frame that claims 10 MB where the table says 100 bytes is refused."""
    bomb = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(10_000_000))
    w = PackWriter(ENC)
    w.add(C.BLOB_DATA, CHUNK(bytes(100)), C.COMPRESSION_ZSTD, bomb, 100)
    _, data, _ = w.finish()
    (e,) = read_table(data, "p", ENC)
    with pytest.raises(IntegrityError):
        open_all(data, [e])


def test_unknown_compression_method():
    w = PackWriter(ENC)
    w.add(C.BLOB_DATA, CHUNK(b"abc"), 9, b"abc", 3)
    _, data, _ = w.finish()
    with pytest.raises(IntegrityError):
        open_all(data, read_table(data, "p", ENC))


def test_garbage_zstd_payload_is_integrity_error():
    w = PackWriter(ENC)
    w.add(C.BLOB_DATA, CHUNK(b"abc"), C.COMPRESSION_ZSTD, b"not zstd", 3)
    _, data, _ = w.finish()
    with pytest.raises(IntegrityError):
        open_all(data, read_table(data, "p", ENC))


@pytest.mark.parametrize("version", [0, 2, 0xFFFF])
def test_unsupported_version(pack, version):
    name, data, _ = pack
    d = bytearray(data)
    struct.pack_into("<H", d, 8, version)
    with pytest.raises(UnsupportedVersion):
        read_table(bytes(d), name, ENC)
    with pytest.raises(UnsupportedVersion):
        parse_header(bytes(d), name)


def test_not_a_pack():
    with pytest.raises(IntegrityError):
        read_table(b"\x00" * 200, "p", ENC)
    with pytest.raises(IntegrityError):
        parse_header(b"RPLPACK", "p")

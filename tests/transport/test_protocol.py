"""Frame codec and messages: round trips, golden bytes, and a hostile-input table (asyncssh test_packet.py style)."""
from __future__ import annotations

import asyncio
import dataclasses
import re
import struct

import pytest

from replicator.transport import frames as F
from replicator.transport import protocol as P
from replicator.transport.frames import ProtocolError

A, B, Z = b"\xaa" * 32, b"\xbb" * 32, b"\x00" * 32
PACK = "data/ab/" + "ab" * 32
SNAP = "snapshots/" + "cd" * 32
TAG = b"\x07" * 16
PROOF = bytes(range(64))  # the codec carries a proof; it does not check it (the sink does)

ROUND_TRIP = [
    P.Hello(1, 1, "replicator 0.1"),
    P.Open("amiens-hospitals", P.MODE_WRITE),
    P.OpenOk(b'{"magic": 1}', b"{}"),
    P.List("ids/"),
    P.Names(("ids/" + "00" * 32, "ids/" + "ff" * 32)),
    P.Names(()),
    P.Get("snapshots/" + "00" * 32),
    P.Data(b"\x00\x01" * 100),
    P.PutPack(PACK, (Z, A, B), PROOF, b"packbytes"),
    P.PackOk(PACK),
    P.Refs((A, B)),
    P.Commit(SNAP, b"snapshot", PROOF, b"\x07" * 16, None, (Z, A)),
    P.Commit(SNAP, b"snapshot", PROOF, b"\x07" * 16, "ab" * 32, ()),
    P.CommitOk(SNAP),
    P.GetRange(PACK, 2 ** 40, P.MAX_RANGE),
    P.GetRanges(((PACK, 0, P.MAX_RANGE - 1), (PACK, 2 ** 40, 1))),
    P.GetRanges(tuple((PACK, i, 1) for i in range(P.MAX_RANGES))),
    P.Range(7, b"partial"),
    P.Declare(PACK, (Z, A), PROOF),
    P.Declare(SNAP, (), PROOF),
    P.DeclareOk(SNAP),
    P.Error(P.E_NOT_ALLOWED, "not allowed: écrire"),
    P.Bye(),
]


@pytest.mark.parametrize("msg", ROUND_TRIP, ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    wire = msg.encode()
    length, msg_type = F.parse_header(wire[:5])
    assert msg_type == msg.TYPE and length == len(wire) - 5
    assert P.decode_message(msg_type, wire[5:]) == msg


def test_golden_bytes():
    """Breaking these breaks every deployed peer: a protocol change needs a new PROTOCOL_VERSION."""
    assert P.Hello(1, 1, "r").encode().hex() == "0000001001" + b"RPLPROTO".hex() + "0001" + "0001" + "0001" + "72"
    assert P.Open("a", P.MODE_WRITE).encode().hex() == "0000000502" + "000161" + "02"
    assert P.Bye().encode().hex() == "000000010e"
    assert P.Error(3, "no").encode().hex() == "000000090d" + "0003" + "00000002" + "6e6f"


def _body(msg):
    return msg.encode()[5:]


HOSTILE = [
    ("truncated u16", P.OPEN, b"\x00"),
    ("truncated name", P.OPEN, b"\x00\x05ab"),
    ("missing mode", P.OPEN, b"\x00\x01a"),
    ("bad mode", P.OPEN, b"\x00\x01a\x07"),
    ("empty repo", P.OPEN, b"\x00\x00\x02"),
    ("trailing bytes", P.OPEN, _body(P.Open("a", 2)) + b"\x00"),
    ("bad utf-8 name", P.OPEN, b"\x00\x02\xc3\x28\x02"),
    ("NUL in name", P.OPEN, b"\x00\x02a\x00\x02"),
    ("name too long", P.OPEN, b"\x01\x00" + b"a" * 256 + b"\x02"),
    ("unknown type", 99, b""),
    ("type zero", 0, b""),
    ("hello bad magic", P.HELLO, b"SSH-2.0-" + b"\x00\x01\x00\x01\x00\x00"),
    ("hello empty range", P.HELLO, b"RPLPROTO\x00\x02\x00\x01\x00\x00"),
    ("hello version 0", P.HELLO, b"RPLPROTO\x00\x00\x00\x01\x00\x00"),
    ("list other prefix", P.LIST, _body(P.List("ids/"))[:2] + b"keys"),
    ("get config", P.GET, b"\x00\x06config"),
    ("get traversal", P.GET, F.name("ids/../../etc/passwd")),
    ("get short hash", P.GET, F.name("ids/abcd")),
    ("get uppercase hash", P.GET, F.name("ids/" + "AB" * 32)),
    ("pack bad name", P.PUT_PACK, F.name("data/ab/xyz") + F.ids([A]) + F.blob(b"x")),
    ("pack wrong fan-out", P.PUT_PACK, F.name("data/cd/" + "ab" * 32) + F.ids([A]) + F.blob(b"x")),
    ("pack no ids", P.PUT_PACK, F.name(PACK) + F.ids([]) + F.blob(b"x")),
    ("pack ids not 32 bytes", P.PUT_PACK, F.name(PACK) + struct.pack(">I", 2) + A + b"\x01" * 31),
    ("pack ids unsorted", P.PUT_PACK, F.name(PACK) + F.ids([B, A]) + F.blob(b"x")),
    ("pack ids duplicate", P.PUT_PACK, F.name(PACK) + F.ids([A, A]) + F.blob(b"x")),
    ("pack too many ids", P.PUT_PACK, F.name(PACK) + struct.pack(">I", P.MAX_PACK_BLOBS + 1) + A),
    ("pack blob length lies", P.PUT_PACK, F.name(PACK) + F.ids([A]) + struct.pack(">I", 10) + b"x"),
    ("commit too many refs", P.COMMIT, F.name(SNAP) + F.blob(b"s") + struct.pack(">I", P.MAX_IDS_PER_FRAME + 1)),
    ("commit huge snapshot", P.COMMIT, F.name(SNAP) + struct.pack(">I", P.MAX_SNAPSHOT_OBJECT + 1)),
    ("commit pack name", P.COMMIT, F.name(PACK) + F.blob(b"s") + F.ids([])),
    ("names count lies", P.NAMES, struct.pack(">I", 1000) + F.name("a")),
    ("bye with body", P.BYE, b"\x00"),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_bodies(case):
    _name, msg_type, body = case
    with pytest.raises(ProtocolError):
        P.decode_message(msg_type, body)


def _read(data: bytes, limit: int = F.MAX_FRAME_SIZE):
    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await P.read_message(reader, limit)

    return asyncio.run(go())


def test_stream_framing():
    assert _read(b"") is None  # clean end of stream
    assert _read(P.Bye().encode()) == P.Bye()
    with pytest.raises(ProtocolError, match="header"):
        _read(b"\x00\x00")
    with pytest.raises(ProtocolError, match="inside a frame"):
        _read(P.Open("abc", 2).encode()[:-1])
    with pytest.raises(ProtocolError, match="exceeds"):
        _read(struct.pack(">IB", F.MAX_FRAME_SIZE + 1, P.DATA))
    with pytest.raises(ProtocolError, match="exceeds"):
        _read(P.Data(b"x" * 100).encode(), limit=50)
    with pytest.raises(ProtocolError, match="length 0"):
        _read(b"\x00\x00\x00\x00\x01")


def test_encoders_refuse_what_decoders_refuse():
    with pytest.raises(ValueError):
        F.ids([b"short"])
    with pytest.raises(ValueError):
        F.name("x" * 300)
    with pytest.raises(ValueError):
        F.frame(P.DATA, b"x" * F.MAX_FRAME_SIZE)


def test_negotiation():
    assert P.negotiate(P.Hello(1, 3), P.Hello(2, 5)) == 3
    with pytest.raises(ProtocolError, match="no common") as exc:
        P.negotiate(P.Hello(1, 1), P.Hello(2, 2))
    assert exc.value.code == P.E_VERSION  # the receiver answers ERROR 2, not 1


def test_protocol_error_code():
    """frames.py cannot import protocol.py: its default code is written as 1, which must stay E_PROTOCOL."""
    assert ProtocolError.code == P.E_PROTOCOL
    assert ProtocolError("x").code == P.E_PROTOCOL
    err = ProtocolError("x", code=P.E_VERSION)
    assert err.code == P.E_VERSION and str(err) == "protocol error: x"
    with pytest.raises(ProtocolError) as exc:
        P.decode_message(P.OPEN, b"\x00")
    assert exc.value.code == P.E_PROTOCOL


def test_error_message_cut_at_a_character_boundary():
    msg = P.Error(P.E_STORAGE, "é" * 700)  # 1400 bytes of UTF-8: cut to 1000 = 500 characters
    got = P.decode_message(P.ERROR, msg.encode()[5:])
    assert got.message == "é" * 500
    odd = P.Error(P.E_STORAGE, "a" + "é" * 700)  # the cut falls inside a character: drop it
    assert P.decode_message(P.ERROR, odd.encode()[5:]).message == "a" + "é" * 499
    assert P.Error(1, "x" * 999).encode() == F.frame(P.ERROR, F.u16(1), F.blob(b"x" * 999))  # unchanged below


def test_max_commit_refs(monkeypatch):
    """The last COMMIT batch must leave room for the snapshot; REFS carries MAX_IDS_PER_FRAME."""
    snap = b"s" * 1000
    n = P.max_commit_refs(SNAP, snap)
    assert n == (F.MAX_FRAME_SIZE - 1 - (2 + len(SNAP)) - (4 + len(snap)) - 64 - 16 - 32 - 4) // 32 < P.MAX_IDS_PER_FRAME
    assert P.max_commit_refs(SNAP, b"") == P.MAX_IDS_PER_FRAME
    # Check the arithmetic against the encoder on a small frame limit (64 MiB of ids is too slow here).
    monkeypatch.setattr(F, "MAX_FRAME_SIZE", 4096)
    n = P.max_commit_refs(SNAP, snap)
    refs = tuple(i.to_bytes(32, "big") for i in range(n + 1))
    assert len(P.Commit(SNAP, snap, PROOF, TAG, None, refs[:n]).encode()) - 4 <= 4096
    with pytest.raises(ValueError):
        P.Commit(SNAP, snap, PROOF, TAG, None, refs).encode()


# --- fewer copies on the pack path ----------------------------------------------------
BIG = bytes(range(256)) * 4096  # 1 MiB, above F.COPY_THRESHOLD


def test_encode_parts_passes_the_pack_through():
    msg = P.PutPack(PACK, (A, B), PROOF, BIG)
    parts = msg.encode_parts()
    assert any(p is BIG for p in parts), "the pack was copied"
    assert len(parts) == 2  # header + name + ids + pack length, then the pack itself
    assert b"".join(parts) == msg.encode()
    assert P.decode_message(P.PUT_PACK, msg.encode()[5:]) == msg


def test_encode_parts_of_a_memoryview_payload():
    view = memoryview(BIG)[1:]
    for msg in (P.PutPack(PACK, (A,), PROOF, view), P.Data(view)):
        parts = msg.encode_parts()
        assert any(p is view for p in parts)
        assert b"".join(parts) == msg.encode() == dataclasses.replace(msg, data=bytes(view)).encode()


def test_small_frames_are_one_part():
    for msg in ROUND_TRIP:
        parts = msg.encode_parts()
        assert len(parts) == 1 and isinstance(parts[0], bytes) and parts[0] == msg.encode()


def test_frame_parts_joins_small_fields_around_big_ones(monkeypatch):
    parts = F.frame_parts(P.COMMIT, b"ab", BIG, b"cd", BIG, b"")
    assert [len(p) for p in parts] == [5 + 2, len(BIG), 2, len(BIG)]
    assert parts[1] is BIG and parts[3] is BIG
    assert b"".join(parts) == F.frame(P.COMMIT, b"ab", BIG, b"cd", BIG)
    assert F.frame_parts(P.BYE) == [b"\x00\x00\x00\x01\x0e"]
    monkeypatch.setattr(F, "MAX_FRAME_SIZE", len(BIG) + 4)  # type byte + u32 length + BIG is one too many
    with pytest.raises(ValueError):
        F.frame_parts(P.DATA, *F.blob_parts(memoryview(BIG)))
    assert len(F.frame_parts(P.DATA, *F.blob_parts(memoryview(BIG)[1:]))) == 2


def test_decode_without_copy():
    body = P.PutPack(PACK, (A, B), PROOF, BIG).encode()[5:]
    msg = P.decode_message(P.PUT_PACK, body, copy=False)
    assert isinstance(msg.data, memoryview) and msg.data.obj is body and msg.data.readonly
    assert msg.data == BIG and msg == P.PutPack(PACK, (A, B), PROOF, BIG)
    assert isinstance(P.decode_message(P.PUT_PACK, body).data, bytes)  # the default copies
    data = P.decode_message(P.DATA, P.Data(BIG).encode()[5:], copy=False).data
    assert isinstance(data, memoryview) and data == BIG
    # Over a mutable body a view could change under the message: it is copied anyway.
    mutable = bytearray(body)
    msg = P.decode_message(P.PUT_PACK, mutable, copy=False)
    mutable[-1] ^= 0xFF
    assert isinstance(msg.data, bytes) and msg.data == BIG
    # Small fields are always bytes.
    assert isinstance(P.decode_message(P.OPEN_OK, P.OpenOk(b"c", b"k").encode()[5:], copy=False).config, bytes)


def test_read_message_without_copy():
    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(P.PutPack(PACK, (A,), PROOF, BIG).encode())
        reader.feed_eof()
        return await P.read_message(reader, copy=False)

    msg = asyncio.run(go())
    assert isinstance(msg.data, memoryview) and msg.data == BIG


def test_write_message_writes_the_parts():
    class Writer:
        def __init__(self):
            self.writes = []

        def write(self, data):
            self.writes.append(data)

        async def drain(self):
            pass

    w = Writer()
    msg = P.PutPack(PACK, (A,), PROOF, BIG)
    assert asyncio.run(P.write_message(w, msg)) == len(msg.encode())
    assert any(p is BIG for p in w.writes) and b"".join(w.writes) == msg.encode()


# --- hostile whole frames, header included (asyncssh tests/test_packet.py style) ------------------
def fr(msg_type: int, *body_hex: str) -> str:
    """A frame in hex with a correct length field around ``body_hex``."""
    body = "".join(body_hex).replace(" ", "")
    return f"{1 + len(body) // 2:08x}{msg_type:02x}{body}"


def hname(text: str) -> str:
    return F.name(text).hex()


HEX_PACK, HEX_SNAP = hname(PACK), hname(SNAP)
HEX64 = "ab" * 32
BAD_FRAMES = [
    # (case, frame hex, the ProtocolError message it must give)
    ("length 0", "00000000 01", "frame length 0"),
    ("length over the limit", f"{F.MAX_FRAME_SIZE + 1:08x} 07", "exceeds the limit of 67108864"),
    ("length 2^32-1", "ffffffff 08", "exceeds the limit"),
    ("header cut", "000000", "inside a frame header"),
    ("body cut", "00000005 02 0001", "closed inside a frame"),
    ("type 0", "00000001 00", "unknown message type 0"),
    ("type 26", "00000001 1a", "unknown message type 26"),
    ("REFS_BASE without its fields", "00000001 17", "truncated base"),
    ("REFS_BASE count over MAX_SNAPSHOT_REFS", fr(P.REFS_BASE, "dd" * 32, f"{P.MAX_SNAPSHOT_REFS + 1:016x}", "ee" * 32),
     "above MAX_SNAPSHOT_REFS"),
    ("DROP count cut", "00000003 18 0000", "truncated"),
    ("type 255", "00000001 ff", "unknown message type 255"),
    ("hello cut after magic", fr(P.HELLO, b"RPLPROTO".hex()), "truncated u16"),
    ("hello ssh banner", fr(P.HELLO, b"SSH-2.0-".hex(), "0001 0001 0000"), "bad HELLO magic"),
    ("hello min 0", fr(P.HELLO, b"RPLPROTO".hex(), "0000 0001 0000"), "version range 0..1 is empty"),
    ("hello min > max", fr(P.HELLO, b"RPLPROTO".hex(), "0003 0002 0000"), "version range 3..2 is empty"),
    ("hello trailing byte", fr(P.HELLO, b"RPLPROTO".hex(), "0001 0001 0000 00"), "1 unexpected bytes"),
    ("open name length 256", fr(P.OPEN, "0100", "61" * 256, "02"), "name of 256 bytes exceeds 255"),
    ("open name length 0xffff", fr(P.OPEN, "ffff"), "name of 65535 bytes exceeds 255"),
    ("open mode 0", fr(P.OPEN, hname("a"), "00"), "OPEN mode 0 is unknown"),
    ("open mode 3", fr(P.OPEN, hname("a"), "03"), "OPEN mode 3 is unknown"),
    ("open no repository", fr(P.OPEN, "0000", "02"), "names no repository"),
    ("open NUL", fr(P.OPEN, "0002 6100", "02"), "contains NUL"),
    ("open overlong UTF-8", fr(P.OPEN, "0002 c0af", "02"), "not valid UTF-8"),
    ("open lone surrogate", fr(P.OPEN, "0003 eda080", "02"), "not valid UTF-8"),
    ("open_ok config 1 MiB + 1", fr(P.OPEN_OK, "00100001"), "byte string of 1048577 bytes exceeds 1048576"),
    ("open_ok no key file", fr(P.OPEN_OK, "00000000"), "truncated u32"),
    ("list refs/", fr(P.LIST, hname("refs/")), "LIST of 'refs/' is not allowed"),
    ("list ids without slash", fr(P.LIST, hname("ids")), "LIST of 'ids' is not allowed"),
    ("list empty", fr(P.LIST, "0000"), "LIST of '' is not allowed"),
    ("names count 2^32-1", fr(P.NAMES, "ffffffff"), "impossible or too long"),
    ("names count over MAX_NAMES", fr(P.NAMES, f"{P.MAX_NAMES + 1:08x}", "0000" * 8),
     "impossible or too long"),
    ("names entry cut", fr(P.NAMES, "00000001 0005 6162"), "truncated name"),
    ("get keys/default", fr(P.GET, hname("keys/default")), "not allowed here"),
    ("get refs/", fr(P.GET, hname("refs/" + HEX64)), "not allowed here"),
    ("get ids/ + newline", fr(P.GET, hname(f"ids/{HEX64}\n")), "not allowed here"),
    ("get snapshots/ + newline", fr(P.GET, hname(f"snapshots/{HEX64}\n")), "not allowed here"),
    ("get pack + newline", fr(P.GET, hname(f"data/ab/{HEX64}\n")), "not allowed here"),
    ("get 63 hex", fr(P.GET, hname("ids/" + HEX64[:63])), "not allowed here"),
    ("get 65 hex", fr(P.GET, hname("ids/" + HEX64 + "a")), "not allowed here"),
    ("get ./", fr(P.GET, hname("./ids/" + HEX64)), "not allowed here"),
    ("data length lies", fr(P.DATA, "00000010 00"), "truncated byte string"),
    ("data trailing byte", fr(P.DATA, "00000001 00 00"), "1 unexpected bytes"),
    ("pack + newline", fr(P.PUT_PACK, hname(PACK + "\n"), F.ids([A]).hex(), "00000000"), "not allowed here"),
    ("pack snapshot name", fr(P.PUT_PACK, HEX_SNAP, F.ids([A]).hex(), "00000000"), "not allowed here"),
    ("pack wrong fan-out", fr(P.PUT_PACK, hname("data/00/" + HEX64), F.ids([A]).hex(), "00000000"),
     "wrong fan-out"),
    ("pack no ids", fr(P.PUT_PACK, HEX_PACK, "00000000", "00000000"), "lists no ids"),
    ("pack 2^20 + 1 ids", fr(P.PUT_PACK, HEX_PACK, f"{P.MAX_PACK_BLOBS + 1:08x}"),
     "id list of 1048577 entries exceeds 1048576"),
    ("pack ids cut", fr(P.PUT_PACK, HEX_PACK, "00000002", A.hex()), "truncated id list"),
    ("pack ids descending", fr(P.PUT_PACK, HEX_PACK, F.ids([B, A]).hex(), "00000000"), "not sorted and unique"),
    ("pack ids repeated", fr(P.PUT_PACK, HEX_PACK, F.ids([A, A]).hex(), "00000000"), "not sorted and unique"),
    ("pack without proof", fr(P.PUT_PACK, HEX_PACK, F.ids([A]).hex()), "truncated proof"),
    ("pack without bytes", fr(P.PUT_PACK, HEX_PACK, F.ids([A]).hex(), PROOF.hex()), "truncated u32"),
    ("pack_ok snapshot name", fr(P.PACK_OK, HEX_SNAP), "not allowed here"),
    ("refs over MAX_IDS_PER_FRAME", fr(P.REFS, f"{P.MAX_IDS_PER_FRAME + 1:08x}"),
     "id list of 2097121 entries exceeds 2097120"),
    ("refs id cut", fr(P.REFS, "00000001", "aa" * 31), "truncated id list"),
    ("commit pack name", fr(P.COMMIT, HEX_PACK, "00000000", "00000000"), "not allowed here"),
    ("commit snapshot over the cap", fr(P.COMMIT, HEX_SNAP, f"{P.MAX_SNAPSHOT_OBJECT + 1:08x}"),
     "byte string of 1049601 bytes exceeds 1049600"),
    ("commit without proof", fr(P.COMMIT, HEX_SNAP, "00000000"), "truncated proof"),
    ("commit without tag", fr(P.COMMIT, HEX_SNAP, "00000000", PROOF.hex()), "truncated tag"),
    ("commit without parent", fr(P.COMMIT, HEX_SNAP, "00000000", PROOF.hex(), "07" * 16), "truncated parent"),
    ("commit with half a parent", fr(P.COMMIT, HEX_SNAP, "00000000", PROOF.hex(), "07" * 16, "ab" * 16),
     "truncated parent"),
    ("commit without refs", fr(P.COMMIT, HEX_SNAP, "00000000", PROOF.hex(), "07" * 16, "00" * 32), "truncated u32"),
    ("commit refs over MAX_IDS_PER_FRAME",
     fr(P.COMMIT, HEX_SNAP, "00000000", PROOF.hex(), "07" * 16, "00" * 32, f"{P.MAX_IDS_PER_FRAME + 1:08x}"),
     "exceeds 2097120"),
    ("get_range of an id list", fr(P.GET_RANGE, hname("ids/" + HEX64), "00" * 12), "not allowed here"),
    ("get_range over MAX_RANGE", fr(P.GET_RANGE, HEX_PACK, "00" * 8, f"{P.MAX_RANGE + 1:08x}"), "MAX_RANGE"),
    ("range cut", fr(P.RANGE, "00" * 7), "truncated u64"),
    ("get_ranges of none", fr(P.GET_RANGES, "0000"), "GET_RANGES of 0 ranges"),
    ("get_ranges over MAX_RANGES", fr(P.GET_RANGES, f"{P.MAX_RANGES + 1:04x}"), f"GET_RANGES of {P.MAX_RANGES + 1} ranges"),
    ("get_ranges over MAX_RANGE in all", fr(P.GET_RANGES, "0002", HEX_PACK, "00" * 8, f"{P.MAX_RANGE:08x}", HEX_PACK,
                                            "00" * 8, "00000001"), "more than MAX_RANGE"),
    ("get_ranges of an id list", fr(P.GET_RANGES, "0001", hname("ids/" + HEX64), "00" * 12), "not allowed here"),
    ("get_ranges cut", fr(P.GET_RANGES, "0002", HEX_PACK, "00" * 12), "truncated u16"),
    ("declare of a snapshot with ids", fr(P.DECLARE, HEX_SNAP, F.ids([A]).hex(), PROOF.hex()),
     "of a snapshot lists ids"),
    ("declare of a pack without ids", fr(P.DECLARE, HEX_PACK, "00000000", PROOF.hex()), "lists no ids"),
    ("declare proof cut", fr(P.DECLARE, HEX_PACK, F.ids([A]).hex(), PROOF[:63].hex()), "truncated proof"),
    ("declare_ok of an id list", fr(P.DECLARE_OK, hname("ids/" + HEX64)), "not allowed here"),
    ("commit_ok pack name", fr(P.COMMIT_OK, HEX_PACK), "not allowed here"),
    ("error without message", fr(P.ERROR, "0002"), "truncated u32"),
    ("error code cut", fr(P.ERROR, "00"), "truncated u16"),
    ("error message over 4096", fr(P.ERROR, "0001", "00001001"), "byte string of 4097 bytes exceeds 4096"),
    ("bye with a body", fr(P.BYE, "00"), "1 unexpected bytes"),
    ("forget of a pack", fr(P.FORGET, HEX_PACK, PROOF.hex()), "not allowed here"),
    ("forget without proof", fr(P.FORGET, HEX_SNAP), "truncated proof"),
    ("forget_ok of an id list", fr(P.FORGET_OK, hname("ids/" + HEX64)), "not allowed here"),
    ("prune unknown flag", fr(P.PRUNE, "02"), "PRUNE flags 0x2 has unknown bits"),
    ("prune without flags", fr(P.PRUNE), "truncated u8"),
    ("prune_ok one counter short", fr(P.PRUNE_OK, "00" * 8 * 6), "truncated u64"),
]


@pytest.mark.parametrize("case", BAD_FRAMES, ids=[c[0] for c in BAD_FRAMES])
def test_hostile_frames(case):
    _name, hexframe, error = case
    with pytest.raises(ProtocolError, match=re.escape(error)) as exc:
        _read(bytes.fromhex(hexframe.replace(" ", "")))
    assert exc.value.code == P.E_PROTOCOL


def test_bad_frames_cover_every_type():
    covered = {int(h.replace(" ", "")[8:10], 16) for _n, h, _e in BAD_FRAMES if len(h.replace(" ", "")) >= 10}
    assert set(P.MESSAGES) <= covered, f"no bad frame for types {sorted(set(P.MESSAGES) - covered)}"


def test_permissions_parsing():
    from replicator.transport.server import parse_permissions

    assert parse_permissions("amiens-hospitals:rw, archive:r") == {"amiens-hospitals": "rw", "archive": "r"}
    assert parse_permissions("a:w,a:r") == {"a": "rw"}
    assert parse_permissions("") == {}
    for bad in ("a", "a:x", ":rw", "a:"):
        with pytest.raises(ValueError):
            parse_permissions(bad)


def test_url_and_rate_parsing():
    from replicator.errors import UsageError
    try:
        from replicator.transport.url import parse_rate, parse_url
    except ImportError:  # before the parsers moved out of client.py
        from replicator.transport.client import parse_rate, parse_url

    u = parse_url("ssh://rep@amiens.example:2222/amiens-hospitals")
    assert (u.user, u.host, u.port, u.name) == ("rep", "amiens.example", 2222, "amiens-hospitals")
    assert parse_url("ssh://rep@h/x").port == 22
    for bad in ("sftp://a@h/x", "ssh://a@h/", "ssh://a@h/x/y", "ssh://a@h:99999/x", "ssh://h/x"):
        with pytest.raises(UsageError):
            parse_url(bad)
    assert parse_rate("20M") == 20 << 20 and parse_rate("500k") == 500 << 10 and parse_rate("4096") == 4096
    for bad in ("fast", "10", "M"):
        with pytest.raises(UsageError):
            parse_rate(bad)


def test_declare_and_get_range_refuse_what_they_cannot_be():
    """A DECLARE of a snapshot lists no ids, of a pack at least one; a range is capped; names are whole."""
    bad = [
        P.F.frame(P.DECLARE, P.F.name(SNAP), P.F.ids([A]), PROOF),
        P.F.frame(P.DECLARE, P.F.name(PACK), P.F.ids([]), PROOF),
        P.F.frame(P.DECLARE, P.F.name(PACK), P.F.ids([B, A]), PROOF),
        P.F.frame(P.DECLARE, P.F.name(PACK), P.F.ids([A]), PROOF[:63]),
        P.F.frame(P.GET_RANGE, P.F.name(PACK), P.F.u64(0), P.F.u32(P.MAX_RANGE + 1)),
        P.F.frame(P.GET_RANGE, P.F.name("ids/" + "ab" * 32), P.F.u64(0), P.F.u32(8)),
        P.F.frame(P.PUT_PACK, P.F.name(PACK), P.F.ids([A]), PROOF[:10]),
    ]
    for frame in bad:
        with pytest.raises(ProtocolError):
            P.decode_message(frame[4], frame[5:])

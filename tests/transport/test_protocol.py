"""Frame codec and messages: round trips, golden bytes, and a hostile-input table (asyncssh test_packet.py style)."""
from __future__ import annotations

import asyncio
import struct

import pytest

from replicator.transport import frames as F
from replicator.transport import protocol as P
from replicator.transport.frames import ProtocolError

A, B, Z = b"\xaa" * 32, b"\xbb" * 32, b"\x00" * 32
PACK = "data/ab/" + "ab" * 32
SNAP = "snapshots/" + "cd" * 32

ROUND_TRIP = [
    P.Hello(1, 1, "replicator 0.1"),
    P.Open("amiens-hospitals", P.MODE_WRITE),
    P.OpenOk(b'{"magic": 1}', b"{}"),
    P.List("ids/"),
    P.Names(("ids/" + "00" * 32, "ids/" + "ff" * 32)),
    P.Names(()),
    P.Get("snapshots/" + "00" * 32),
    P.Data(b"\x00\x01" * 100),
    P.PutPack(PACK, (Z, A, B), b"packbytes"),
    P.PackOk(PACK),
    P.Refs((A, B)),
    P.Commit(SNAP, b"snapshot", (Z, A)),
    P.CommitOk(SNAP),
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
    with pytest.raises(ProtocolError, match="no common"):
        P.negotiate(P.Hello(1, 1), P.Hello(2, 2))


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

"""A hostile client speaking raw frames to a real `replicator serve` over SSH.

Each case must end with one ERROR frame and a closed session, and nothing
committed: no new snapshots/ object.  A positive control shows the same raw
path does commit when the peer behaves.
"""
from __future__ import annotations

import asyncio
import os
import struct

import pytest

from replicator.transport import protocol as P
from replicator.transport.frames import frame
from tests.transport.inproc import fake_pack, fake_snapshot


async def _session(site, frames: list[bytes], key: str = "writer", hello: P.Hello | None = None) -> list:
    """Send ``hello`` then ``frames``; :returns: every message received until the server closes."""
    from replicator.transport.ssh import connect

    conn = await connect("127.0.0.1", site.port, "x", str(site.keys[key]), str(site.known_hosts))
    got = []
    try:
        conn.writer.write((hello or P.Hello()).encode())
        for f in frames:
            conn.writer.write(f)
        await conn.writer.drain()
        conn.writer.write_eof()
        while True:
            msg = await asyncio.wait_for(P.read_message(conn.reader), 10)
            if msg is None:
                break
            got.append(msg)
            if isinstance(msg, P.Error):
                # the server closes after an ERROR: reading on must hit end of stream
                assert await asyncio.wait_for(P.read_frame(conn.reader), 10) is None
                break
            if isinstance(msg, P.CommitOk):
                break
    finally:
        conn.close()
    return got


def run(site, frames, **kw):
    site.pin()
    return asyncio.run(_session(site, frames, **kw))


def _error(got, code, *words):
    assert isinstance(got[0], P.Hello)
    err = got[-1]
    assert isinstance(err, P.Error), got
    assert err.code == code, err
    for w in words:
        assert w in err.message, err.message


OPEN_W = P.Open("amiens", P.MODE_WRITE).encode()


def _put(site, name, ids, data) -> P.PutPack:
    """PUT_PACK with the key holder's proof: each test below is about another rule."""
    return P.PutPack(name, ids, site.pack_proof(name, ids), data)


def _commit(site, name, data, refs) -> P.Commit:
    return P.Commit(name, data, site.snapshot_proof(name), os.urandom(16), None, refs)  # a new source each time


def test_no_common_version_is_error_2(site):
    """A peer speaking only versions the receiver does not: ERROR 2, as PROTOCOL.md says (0.1.0 sent ERROR 1)."""
    got = run(site, [], hello=P.Hello(P.PROTOCOL_VERSION_MAX + 1, P.PROTOCOL_VERSION_MAX + 3))
    _error(got, P.E_VERSION, "no common protocol version")


def test_malformed_frame(site):
    bad = frame(P.OPEN, b"\x00\x10amie")  # name length says 16, 4 bytes follow
    _error(run(site, [bad]), P.E_PROTOCOL, "truncated")
    assert site.snapshots() == []


def test_oversized_frame(site):
    got = run(site, [OPEN_W, struct.pack(">IB", 0x7FFFFFFF, P.PUT_PACK)])
    _error(got, P.E_PROTOCOL, "exceeds")


def test_big_frame_before_open_refused(site):
    got = run(site, [struct.pack(">IB", 1024 * 1024, P.OPEN) + bytes(100)])
    _error(got, P.E_PROTOCOL, "exceeds")


def test_commit_before_open(site):
    name, data = fake_snapshot(b"a")
    got = run(site, [_commit(site, name, data, ()).encode()])
    _error(got, P.E_PROTOCOL, "not allowed in state")
    assert site.snapshots() == []


def test_no_hello_first(site):
    from replicator.transport.ssh import connect

    async def go():
        conn = await connect("127.0.0.1", site.port, "x", str(site.keys["writer"]), str(site.known_hosts))
        try:
            conn.writer.write(OPEN_W)
            msgs = [await P.read_message(conn.reader), await P.read_message(conn.reader)]
        finally:
            conn.close()
        return msgs

    site.pin()
    hello, err = asyncio.run(go())
    assert isinstance(hello, P.Hello) and isinstance(err, P.Error) and err.code == P.E_PROTOCOL


def test_unknown_message_type(site):
    _error(run(site, [OPEN_W, frame(200, b"")]), P.E_PROTOCOL, "unknown message type")


def test_pack_not_matching_its_name(site):
    name, data = fake_pack(b"x" * 100)
    other = "data/00/" + "00" * 32
    got = run(site, [OPEN_W, _put(site, other, (b"\x01" * 32,), data).encode()])
    _error(got, P.E_INTEGRITY, "does not match its name")
    assert not (site.repo / "data").exists() or not any((site.repo / "data").rglob("*00000000*"))


def test_commit_with_missing_refs(site):
    pname, pdata = fake_pack(b"y" * 100)
    sname, sdata = fake_snapshot(b"b")
    ids = (b"\x01" * 32,)
    got = run(site, [OPEN_W, _put(site, pname, ids, pdata).encode(),
                     _commit(site, sname, sdata, (b"\x01" * 32, b"\x02" * 32)).encode()])
    assert isinstance(got[1], P.OpenOk) and isinstance(got[2], P.PackOk)
    _error(got, P.E_MISSING_REFS, "1 missing chunks")
    assert site.snapshots() == []


def test_commit_with_unsorted_refs(site):
    sname, sdata = fake_snapshot(b"c")
    got = run(site, [OPEN_W, _commit(site, sname, sdata, (b"\x02" * 32, b"\x01" * 32)).encode()])
    _error(got, P.E_PROTOCOL, "sorted")
    assert site.snapshots() == []


def test_commit_bytes_not_matching_name(site):
    _sname, sdata = fake_snapshot(b"d")
    got = run(site, [OPEN_W, _commit(site, "snapshots/" + "ab" * 32, sdata, ()).encode()])
    _error(got, P.E_INTEGRITY, "does not match its name")
    assert site.snapshots() == []


def test_nothing_after_a_violation_is_committed(site):
    """A good pack and COMMIT queued behind a malformed frame: the commit must not appear."""
    pname, pdata = fake_pack(b"z" * 100)
    sname, sdata = fake_snapshot(b"e")
    got = run(site, [OPEN_W, frame(P.LIST, b"\xff"), _put(site, pname, (b"\x03" * 32,), pdata).encode(),
                     _commit(site, sname, sdata, (b"\x03" * 32,)).encode()])
    assert isinstance(got[-1], P.Error)
    assert site.snapshots() == []


def test_read_only_key_cannot_put(site):
    pname, pdata = fake_pack(b"w" * 100)
    got = run(site, [P.Open("amiens", P.MODE_READ).encode(), _put(site, pname, (b"\x01" * 32,), pdata).encode()],
              key="reader")
    assert isinstance(got[1], P.OpenOk)
    _error(got, P.E_NOT_ALLOWED, "not allowed")
    assert not (site.repo / "data").exists()


def test_control_well_behaved_raw_peer_commits(site):
    """The same raw path commits when every rule is kept (so the refusals above are not vacuous)."""
    pname, pdata = fake_pack(b"v" * 100)
    sname, sdata = fake_snapshot(b"f")
    got = run(site, [OPEN_W, _put(site, pname, (b"\x04" * 32,), pdata).encode(),
                     _put(site, pname, (b"\x04" * 32,), pdata).encode(),  # duplicate: fine
                     _commit(site, sname, sdata, (b"\x04" * 32,)).encode()])
    assert [type(m) for m in got] == [P.Hello, P.OpenOk, P.PackOk, P.PackOk, P.CommitOk]
    assert site.snapshots() == [sname.split("/")[1]]
    assert (site.repo / "ids" / pname.rsplit("/", 1)[1]).read_bytes()[72:] == b"\x04" * 32  # after the proof
    assert (site.repo / "refs" / sname.split("/")[1]).read_bytes()[72:] == b"\x04" * 32


@pytest.mark.parametrize("frames_", [[], [P.Bye().encode()]], ids=["eof", "bye"])
def test_clean_close_without_open(site, frames_):
    got = run(site, frames_)
    assert [type(m) for m in got] == [P.Hello]


@pytest.mark.parametrize("request_", ["put_pack", "refs", "commit"])
def test_read_session_of_a_writer_key_cannot_write(site, request_):
    """A key with rw that OPENs for read gets ERROR 3 for any write: the session's mode, not only the key, decides.
    REFS used to be accepted in a read session (only the key's w was checked)."""
    pname, pdata = fake_pack(b"m" * 100)
    sname, sdata = fake_snapshot(b"read mode")
    req = {"put_pack": _put(site, pname, (b"\x06" * 32,), pdata), "refs": P.Refs((b"\x06" * 32,)),
           "commit": _commit(site, sname, sdata, ())}[request_]
    got = run(site, [P.Open("amiens", P.MODE_READ).encode(), req.encode(), P.List("snapshots/").encode()])
    assert isinstance(got[1], P.OpenOk)
    _error(got, P.E_NOT_ALLOWED, "not allowed")
    assert len(got) == 3
    assert site.snapshots() == [] and not (site.repo / "data").exists() and not (site.repo / "refs").exists()

"""Bounded buffers on both ends of the wire (issue 11, memory).

- The sender keeps no pack in flight: ``put_pack`` returns once the pack is written to the channel and only
  its answer waits in the window (before, each of the ``--streams`` unacknowledged packs was held, 16 MiB
  each), and a big part reaches the channel in drained pieces (asyncssh copies what it is given).
- The receiver reads no further frame while a pack waits for its worker (MAX_QUEUED_BYTES; before, up to
  MAX_QUEUED = 8 frames of up to 64 MiB each were queued), and reads a big body in pieces into one buffer.
"""
from __future__ import annotations

import asyncio
import gc
import os
import time
import weakref

from replicator.repo.local_sink import LocalSink
from replicator.store.idset import IdSet
from replicator.transport import client, server
from replicator.transport import protocol as P
from tests.transport.inproc import fake_pack, make_repository, put, run_session

OPEN_W = P.Open("amiens", P.MODE_WRITE).encode()


class Buffer(bytearray):
    """A pack buffer a weak reference can watch."""


class _Conn:
    """A channel that takes every write (keeping only its length) and never answers."""

    def __init__(self) -> None:
        self.writer = self
        self.sizes: list[int] = []

    def write(self, data) -> None:
        self.sizes.append(len(data))

    async def drain(self) -> None:
        await asyncio.sleep(0)


def test_put_pack_keeps_no_pack_while_its_answer_is_in_flight():
    io = client._LoopThread()
    conn = _Conn()
    sink = object.__new__(client.RemoteSink)
    sink._io, sink._session, sink.window = io, client.ClientSession(conn, "test"), 4
    sink._inflight, sink._held, sink.legacy_packs, sink.stats = client.collections.deque(), IdSet(), set(), {}
    try:
        pack = Buffer(os.urandom(3 * P.WRITE_PIECE + 5))
        watch = weakref.ref(pack)
        sink.put_pack("data/ab/" + "ab" * 32, pack, [bytes(32)], bytes(64))
        del pack
        gc.collect()
        assert sink._inflight and not sink._inflight[0].done()  # no PACK_OK came: the answer is in flight
        assert watch() is None  # ... and the pack is not held for it
        assert max(conn.sizes) <= P.WRITE_PIECE  # written in pieces, never whole
    finally:
        for fut in sink._inflight:
            fut.cancel()
        io.stop()


def test_the_receiver_reads_one_pack_at_a_time(tmp_path, monkeypatch):
    """With a budget smaller than one pack frame, no PUT_PACK is decoded before the one ahead is stored."""
    monkeypatch.setattr(server, "MAX_QUEUED_BYTES", 1)
    repo = tmp_path / "repo"
    make_repository(repo)
    decoded = 0
    ahead: list[int] = []
    real_decode, real_put = P.decode_message, LocalSink.put_pack

    def decode(msg_type, body, **kw):
        nonlocal decoded
        msg = real_decode(msg_type, body, **kw)
        decoded += isinstance(msg, P.PutPack)
        return msg

    def slow_put(self, *a, **kw):
        ahead.append(decoded - len(ahead))  # PUT_PACKs decoded beyond the ones stored before this one
        time.sleep(0.05)  # a slow disk: a read loop not held back would decode every pack meanwhile
        return real_put(self, *a, **kw)

    monkeypatch.setattr(P, "decode_message", decode)
    monkeypatch.setattr(LocalSink, "put_pack", slow_put)
    frames = b""
    for i in range(6):
        name, data = fake_pack(os.urandom(P.READ_PIECE + 1000 + i))  # bodies bigger than a read piece
        frames += put(repo, name, [bytes([i + 1]) * 32], data).encode()
    out = asyncio.run(run_session(repo, OPEN_W + frames + P.Bye().encode()))
    assert [type(m) for m in out.messages[1:]] == [P.OpenOk] + [P.PackOk] * 6
    assert ahead == [1] * 6, ahead
    assert out.session.max_queued_bytes < 2 * (P.READ_PIECE + 1000)  # one pack frame at a time

"""Reads by ranges in bulk (protocol version 5, PROTOCOL.md 4 and 9): GET_RANGES asks for many pack ranges in
one request and gets one RANGE per range, in order; small answers and requests are joined into few writes
(each write to an SSH channel is at least one packet of its own); a reader falls back to GET_RANGE with an
older receiver."""
from __future__ import annotations

import asyncio

import pytest

from replicator.transport import client
from replicator.transport import protocol as P
from tests.transport.inproc import REPO, fake_pack, make_repository, put, run_session

OPEN_W = P.Open(REPO, P.MODE_WRITE).encode()
OPEN_R = P.Open(REPO, P.MODE_READ).encode()
IDS = [bytes([i]) * 32 for i in (1, 2)]


@pytest.fixture
def two_packs(tmp_path):
    repo = tmp_path / "secondary"
    make_repository(repo)
    packs = [fake_pack(b"first pack " * 50), fake_pack(b"second pack " * 70)]
    out = asyncio.run(run_session(repo, OPEN_W + b"".join(put(repo, n, [i], d).encode()
                                                          for (n, d), i in zip(packs, IDS))))
    assert [type(m).__name__ for m in out.messages] == ["Hello", "OpenOk", "PackOk", "PackOk"], out.messages
    return repo, packs


def test_get_ranges_answers_one_range_per_range_in_order(two_packs):
    repo, ((n1, d1), (n2, d2)) = two_packs
    wanted = ((n2, 5, 20), (n1, 0, 10), (n1, len(d1) - 3, 100), (n2, len(d2) + 10, 4))
    out = asyncio.run(run_session(repo, OPEN_R + P.GetRanges(wanted).encode(), perms="r"))
    got = out.messages[2:]
    assert got == [P.Range(len(d2), d2[5:25]), P.Range(len(d1), d1[:10]), P.Range(len(d1), d1[-3:]),
                   P.Range(len(d2), b"")], out.messages


def test_get_ranges_of_a_missing_pack_is_not_found(two_packs):
    repo, ((n1, _d1), _) = two_packs
    missing = "data/ab/" + "ab" * 32
    out = asyncio.run(run_session(repo, OPEN_R + P.GetRanges(((n1, 0, 4), (missing, 0, 4))).encode(), perms="r"))
    assert isinstance(out.messages[-1], P.Error) and out.messages[-1].code == P.E_NOT_FOUND, out.messages
    assert missing in out.messages[-1].message


def test_get_ranges_needs_the_read_permission(two_packs):
    repo, ((n1, _d1), _) = two_packs
    out = asyncio.run(run_session(repo, OPEN_W + P.GetRanges(((n1, 0, 4),)).encode(), perms="w"))
    assert isinstance(out.messages[-1], P.Error) and out.messages[-1].code == P.E_NOT_ALLOWED, out.messages


def test_the_answers_of_one_get_ranges_go_out_in_one_write(two_packs):
    """Fifty small ranges (a frame header and a few bytes each) are one write, not fifty."""
    repo, ((n1, d1), _) = two_packs
    out = asyncio.run(run_session(repo, OPEN_R + P.GetRanges(tuple((n1, i, 8) for i in range(50))).encode(),
                                  perms="r"))
    assert [m.data for m in out.messages[2:]] == [d1[i : i + 8] for i in range(50)]
    assert out.writer.writes <= 3, out.writer.writes  # HELLO, OPEN_OK (maybe joined), the fifty RANGEs


def test_write_parts_joins_small_parts_and_passes_big_ones_as_they_are():
    class Writer:
        def __init__(self):
            self.writes = []

        def write(self, data):
            self.writes.append(data)

    big = b"x" * P.COALESCE
    w = Writer()
    assert P.write_parts(w, [b"ab", b"cd", big, b"ef"]) == 6 + len(big)
    assert [bytes(x) for x in w.writes] == [b"abcd", big, b"ef"]
    assert w.writes[1] is big  # not copied


class _FakeSession:
    def __init__(self, data: bytes):
        self.data = data
        self.sent: list = []

    async def send_many(self, msgs, expect, *, answers=None, **_caps):
        self.sent.extend(msgs)
        loop = asyncio.get_running_loop()
        futs = []
        for m in msgs:
            for _name, offset, length in (m.ranges if isinstance(m, P.GetRanges) else [(m.name, m.offset, m.length)]):
                fut = loop.create_future()
                fut.set_result(P.Range(len(self.data), self.data[offset : offset + length]))
                futs.append(fut)
        return futs


class _Io:
    def run(self, coro, timeout=None):
        return asyncio.run(coro)


@pytest.mark.parametrize("version, request_type", [(5, P.GetRanges), (4, P.GetRange)])
def test_the_reader_asks_in_bulk_only_a_receiver_that_knows_how(version, request_type):
    sink = object.__new__(client.RemoteSink)
    sink.version, sink._session, sink._io = version, _FakeSession(bytes(range(256)) * 40), _Io()
    sink._update_stats = lambda: None
    wanted = [("data/ab/" + "ab" * 32, i * 7, 5) for i in range(1000)] + [("data/ab/" + "ab" * 32, 0, P.MAX_RANGE)]
    got = sink.get_ranges(wanted)
    assert got == [(10240, sink.session.data[o : o + n]) for _n, o, n in wanted]
    assert {type(m) for m in sink.session.sent} == {request_type}
    if version >= P.GET_RANGES_VERSION:
        assert len(sink.session.sent) == 2  # 1,000 small ranges in one request; MAX_RANGE bytes in the next

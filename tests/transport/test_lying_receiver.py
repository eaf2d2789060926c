"""A lying receiver cannot push the sender's memory without bound (PROTOCOL.md 3 "Limits", 10).

``RemoteSink`` is connected to an in-process fake receiver instead of SSH
(``ssh.connect`` is replaced by a pair of in-memory streams on the sink's own
event loop).  The fake answers OPEN honestly and then lies at LIST/GET:
too many names, an id list bigger than any pack could declare, more id lists
in all than a session accepts.  Each must end as one ProtocolError line (exit
7), raised as soon as the cap is passed, never a MemoryError or a hang.
"""
from __future__ import annotations

import asyncio
import hashlib
import struct
import tracemalloc

import pytest

from replicator import constants as C
from replicator.core import crypto
from replicator.core.params import DEFAULT_PARAMS
from replicator.format.idlist import IDS_MAGIC, Declarer, Verifier, encode_list
from replicator.format.repoconfig import make_config
from replicator.transport import client as CL
from replicator.transport import frames as F
from replicator.transport import protocol as P
from replicator.transport import ssh
from replicator.transport.frames import ProtocolError
from replicator.transport.url import parse_url

CONFIG = make_config(b"\x42" * 32, DEFAULT_PARAMS, 3, 0)
SIGNER = crypto.SigningKey(b"\x01" * 32)  # the writer's signing key (its public half is what trust() gets)
DECLARER, VERIFIER = Declarer("42" * 32, SIGNER), Verifier("42" * 32, SIGNER.public_bytes())


class _Pipe:
    """A writer that feeds an asyncio.StreamReader (one direction of the fake channel)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def write(self, data) -> None:
        if not self._reader.at_eof():
            self._reader.feed_data(bytes(data))

    async def drain(self) -> None:
        pass

    def write_eof(self) -> None:
        self._reader.feed_eof()

    def close(self) -> None:
        if not self._reader.at_eof():
            self._reader.feed_eof()


class _Conn:
    def __init__(self, reader, writer, task) -> None:
        self.reader, self.writer, self._task = reader, writer, task

    def close(self) -> None:
        self.writer.close()

    async def wait_closed(self) -> None:
        self._task.cancel()


def lying_receiver(answer):
    """``ssh.connect`` replacement: a receiver that answers HELLO and OPEN, then ``answer(msg) -> frame bytes``."""

    async def connect(*_args, **_kw):
        to_server, to_client = asyncio.StreamReader(), asyncio.StreamReader()
        out = _Pipe(to_client)

        async def serve() -> None:
            out.write(P.Hello().encode())
            while True:
                msg = await P.read_message(to_server)
                if msg is None or isinstance(msg, P.Bye):
                    out.close()
                    return
                if isinstance(msg, P.Hello):
                    continue
                if isinstance(msg, P.Open):
                    out.write(P.OpenOk(CONFIG, b"{}").encode())
                    continue
                out.write(answer(msg))

        task = asyncio.get_running_loop().create_task(serve())
        return _Conn(to_client, _Pipe(to_server), task)

    return connect


def open_sink(monkeypatch, answer):
    monkeypatch.setattr(ssh, "connect", lying_receiver(answer))
    sink = CL.RemoteSink(parse_url("ssh://rep@liar:22/amiens"), identity="-", known_hosts="-", cache_dir=None)
    try:
        sink.trust(VERIFIER)  # what the writer does first: the lists are fetched and checked here
    except BaseException:
        sink.close()
        raise
    return sink


def ids_name(i: int) -> str:
    return "ids/" + hashlib.sha256(b"%d" % i).hexdigest()


def honest(n_lists: int, ids_per_list: int):
    lists = {}
    for i in range(n_lists):
        blob = b"".join(struct.pack(">QQQQ", i, j, 0, 0) for j in range(ids_per_list))
        lists[ids_name(i)] = encode_list(IDS_MAGIC, blob, DECLARER.pack(ids_name(i)[4:], blob))

    def answer(msg):
        if isinstance(msg, P.List):
            return P.Names(tuple(sorted(lists)) if msg.prefix == "ids/" else ()).encode()
        return P.Data(lists[msg.name]).encode()

    return answer, lists


def test_control_an_honest_receiver_is_accepted(monkeypatch):
    answer, lists = honest(100, 50)
    with open_sink(monkeypatch, answer) as sink:
        assert sink.stats["id_lists_fetched"] == 100
        assert all(sink.has(data[72:104]) for data in lists.values())
        assert not sink.legacy_packs


def test_too_many_names_refused_before_decoding(monkeypatch):
    """MAX_LISTED_NAMES + 1 one-byte names (3 MiB on the wire): refused from the count, before a single str."""
    count = P.MAX_LISTED_NAMES + 1
    frame = F.frame(P.NAMES, struct.pack(">I", count), b"\x00\x01a" * count)
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="MAX_LISTED_NAMES") as exc:
            open_sink(monkeypatch, lambda msg: frame)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "\n" not in str(exc.value) and exc.value.exit_code == C.EXIT_TRANSPORT
    assert peak < 3 * len(frame), f"peak {peak} bytes for a {len(frame)}-byte frame: the names were decoded"


def test_id_list_bigger_than_a_pack_can_declare(monkeypatch):
    """One ids/ object of MAX_ID_LIST_OBJECT + 32 bytes (a pack holds at most 2^20 blobs)."""
    big = b"\x07" * (P.MAX_ID_LIST_OBJECT + 32)

    def answer(msg):
        if isinstance(msg, P.List):
            return P.Names((ids_name(0),) if msg.prefix == "ids/" else ()).encode()
        return P.Data(big).encode()

    with pytest.raises(ProtocolError, match="MAX_ID_LIST_OBJECT") as exc:
        open_sink(monkeypatch, answer)
    assert "\n" not in str(exc.value)


def test_id_lists_in_all_capped_per_session(monkeypatch):
    """More id-list bytes in all than MAX_REMOTE_ID_BYTES (checked on a cap of 64 KiB: 1 GiB is the real one)."""
    monkeypatch.setattr(P, "MAX_REMOTE_ID_BYTES", 64 * 1024)
    fetched = []
    answer, _lists = honest(1000, 4)  # 1000 lists of 72 + 128 bytes: 195 KiB in all

    def counting(msg):
        if isinstance(msg, P.Get):
            fetched.append(msg.name)
        return answer(msg)

    with pytest.raises(ProtocolError, match="MAX_REMOTE_ID_BYTES") as exc:
        open_sink(monkeypatch, counting)
    assert "\n" not in str(exc.value)
    assert len(fetched) <= 64 * 1024 // 200 + CL.GET_BATCH, "the sender went on fetching after the cap"


def test_caps_are_the_documented_values():
    assert P.MAX_LISTED_NAMES == 1 << 20
    assert P.MAX_ID_LIST_OBJECT == P.MAX_PACK_BLOBS * 32 == 32 << 20
    assert P.MAX_REMOTE_ID_BYTES == 1 << 30 == P.MAX_SNAPSHOT_REFS * 32

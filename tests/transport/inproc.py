"""Drive ``ServerSession`` in-process over asyncio streams, as ``serve --stdio`` wires it (cli/serve_cmd.py).

The reader is an ``asyncio.StreamReader`` fed with the peer's bytes (and, unless
told otherwise, end of stream); the writer collects what the server writes and
records a write after ``close`` (which would be a bug: the channel is gone).
The repository is a real directory made with ``LocalSink`` over LocalStorage
(the receiver never unlocks its key file; the tests do, once per repository,
to sign what a writer would: ``put`` and ``commit``), so these tests and the
fuzz test exercise the same storage path as ``serve``.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import struct
from dataclasses import dataclass, field

from replicator import constants as C
from replicator.repo.local_sink import open_storage
from replicator.transport import protocol as P
from replicator.transport.server import Peer, ServerSession

REPO = "amiens"
PASSPHRASE = b"in-process writer"


def fake_pack(payload: bytes) -> tuple[str, bytes]:
    """A pack-shaped object (magic, header, footer) with the right SHA-256 name: what the untrusted sink accepts."""
    data = C.PACK_MAGIC + b"\x01\x00\x00\x00" + bytes(32) + payload + C.PACK_FOOTER_MAGIC
    digest = hashlib.sha256(data).hexdigest()
    return f"data/{digest[:2]}/{digest}", data


def fake_snapshot(salt: bytes) -> tuple[str, bytes]:
    data = C.SNAPSHOT_MAGIC + struct.pack("<HH", 1, 0) + salt.ljust(32, b"\0")[:32] + bytes(40)
    return "snapshots/" + hashlib.sha256(data).hexdigest(), data


def make_repository(path) -> None:
    """A minimal repository directory: a config as ``init`` writes it and a key file (the server never unlocks it)."""
    from replicator.core.params import DEFAULT_PARAMS
    from replicator.format.keyfile import make_keyfile
    from replicator.format.repoconfig import make_config

    repo_id = hashlib.sha256(str(path).encode()).digest()
    os.makedirs(path)
    with open(os.path.join(path, "config"), "wb") as f:
        f.write(make_config(repo_id, DEFAULT_PARAMS, 3, 0))
    os.makedirs(os.path.join(path, "keys"))
    with open(os.path.join(path, "keys", "default"), "wb") as f:
        f.write(make_keyfile(os.urandom(C.KEY_SIZE), repo_id, PASSPHRASE, C.SCRYPT_LOG2N_MIN))


@functools.lru_cache(maxsize=8)
def keyring(path: str):
    """The writer's keys of the repository at ``path`` (unlocked once: scrypt is slow on purpose)."""
    from replicator.repo.keyring import Keyring

    with open(os.path.join(path, "config"), "rb") as c, open(os.path.join(path, "keys", "default"), "rb") as k:
        return Keyring.unlock(c.read(), k.read(), PASSPHRASE, str(path))


def put(path, name: str, ids, data) -> P.PutPack:
    """PUT_PACK as the writer sends it: with the proof of its declaration."""
    return P.PutPack(name, tuple(ids), keyring(str(path)).declarer.pack(name.rsplit("/", 1)[-1], b"".join(ids)), data)


def commit(path, name: str, data: bytes, refs=()) -> P.Commit:
    return P.Commit(name, data, keyring(str(path)).declarer.snapshot(name.rsplit("/", 1)[-1]), os.urandom(16), None,
                    tuple(refs))  # a new source each time: the lineage checks have their own tests


class Collector:
    """A writer: ``write``/``drain``/``close``; what was written, and whether anything came after ``close``."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.writes_after_close = 0
        self.writes = 0  # calls of write (over SSH, each is at least one packet)

    def write(self, data) -> None:
        if self.closed:
            self.writes_after_close += 1
            return
        self.writes += 1
        self.data += data

    async def drain(self) -> None:
        """Like a channel with room in its window: returns without yielding to the event loop."""

    def close(self) -> None:
        self.closed = True

    def messages(self) -> list:
        """Decode what the server wrote (it must always be whole, valid frames)."""
        out, pos, buf = [], 0, bytes(self.data)
        while pos < len(buf):
            length, msg_type = P.F.parse_header(buf[pos : pos + 5])
            out.append(P.decode_message(msg_type, buf[pos + 5 : pos + 5 + length]))
            pos += 5 + length
        return out


@dataclass
class Outcome:
    messages: list
    session: ServerSession | None
    writer: Collector
    timed_out: bool = False
    loop_errors: list = field(default_factory=list)


async def run_session(repo_path, data: bytes, *, perms: str = "rw", eof: bool = True, timeout: float = 10,
                      hello: bool = True) -> Outcome:
    """One session over ``data`` (HELLO prepended unless ``hello=False``); ends by itself or after ``timeout``."""
    reader = asyncio.StreamReader(limit=2 ** 27)
    reader.feed_data((P.Hello().encode() if hello else b"") + data)
    if eof:
        reader.feed_eof()
    writer = Collector()
    session = ServerSession(reader, writer, {REPO: str(repo_path)}, Peer("in-process peer", {REPO: perms}))
    try:
        await asyncio.wait_for(session.run(), timeout)
    except asyncio.TimeoutError:
        return Outcome(writer.messages(), session, writer, timed_out=True)
    return Outcome(writer.messages(), session, writer)


def lock_is_free(repo_path) -> bool:
    """Whether no session holds a lock on the repository now: an exclusive RepositoryLock could be taken."""
    from replicator.store.lock import EXCLUSIVE, Locked, RepositoryLock

    try:
        RepositoryLock(open_storage(str(repo_path))[0], EXCLUSIVE, "test").acquire().release()
    except Locked:
        return False
    return True


def snapshots(repo_path) -> list[str]:
    d = os.path.join(repo_path, "snapshots")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


__all__ = ["REPO", "Collector", "Outcome", "fake_pack", "fake_snapshot", "lock_is_free", "make_repository",
           "run_session", "snapshots"]

"""Replication protocol: messages, version negotiation, limits, errors (docs/PROTOCOL.md).

Each message is a frozen dataclass with ``encode() -> frame bytes`` and
``decode(body) -> message`` (validating every field and refusing trailing
bytes).  ``decode_message(type, body)`` maps a frame to its message or raises
ProtocolError.  The state machine itself lives with its user (server.py
checks which messages are allowed in which state; ``ALLOWED`` lists them).

Nothing here does I/O except ``read_frame``/``write_frame``, which take any
asyncio-style reader (``readexactly``) and writer (``write``/``drain``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from replicator import constants as C
from replicator.errors import ReplicatorError
from replicator.transport import frames as F
from replicator.transport.frames import ProtocolError

PROTOCOL_MAGIC = b"RPLPROTO"
PROTOCOL_VERSION_MIN = 1
PROTOCOL_VERSION_MAX = 1
SUBSYSTEM = "replicator"  # SSH subsystem name; the OpenSSH ForceCommand alternative is "replicator serve --stdio"

MAX_IDS_PER_FRAME = (F.MAX_FRAME_SIZE - 1024) // C.ID_SIZE  # ~2 million: refs travel in REFS batches
MAX_PACK_BLOBS = C.PACK_MAX_BLOBS
MAX_NAMES = 4 * 1024 * 1024
MAX_SNAPSHOT_OBJECT = C.MAX_SNAPSHOT_SIZE + 1024

MODE_READ = 1
MODE_WRITE = 2

# Message types (u8).  Never reuse a number.
HELLO, OPEN, OPEN_OK, LIST, NAMES, GET, DATA, PUT_PACK, PACK_OK, REFS, COMMIT, COMMIT_OK, ERROR, BYE = range(1, 15)

# ERROR codes (u16) and the exit code a client reports for each.
E_PROTOCOL, E_VERSION, E_NOT_ALLOWED, E_NO_REPOSITORY, E_INTEGRITY, E_MISSING_REFS, E_STORAGE, E_LOCKED, \
    E_INTERNAL, E_NOT_FOUND = range(1, 11)
ERROR_NAMES = {E_PROTOCOL: "protocol violation", E_VERSION: "no common protocol version",
               E_NOT_ALLOWED: "not allowed", E_NO_REPOSITORY: "no such repository", E_INTEGRITY: "integrity",
               E_MISSING_REFS: "missing chunks", E_STORAGE: "storage", E_LOCKED: "locked",
               E_INTERNAL: "internal error", E_NOT_FOUND: "not found"}

_HEX64 = "[0-9a-f]{64}"
PACK_NAME_RE = re.compile(rf"^data/([0-9a-f]{{2}})/({_HEX64})$")
SNAPSHOT_NAME_RE = re.compile(rf"^snapshots/({_HEX64})$")
IDS_NAME_RE = re.compile(rf"^ids/({_HEX64})$")
LIST_PREFIXES = ("ids/", "snapshots/", "data/")


class RemoteError(ReplicatorError):
    """{}: {}"""

    exit_code = C.EXIT_REPOSITORY

    def __init__(self, where: str, message: str, code: int = E_INTERNAL) -> None:
        super().__init__(where, message)
        self.code = code
        if code in (E_INTEGRITY, E_MISSING_REFS):
            self.exit_code = C.EXIT_INTEGRITY
        elif code in (E_STORAGE, E_INTERNAL):
            self.exit_code = C.EXIT_STORAGE
            self.retryable = True
        elif code == E_LOCKED:
            self.retryable = True


class TransportError(ReplicatorError):
    """transport error: {}"""

    exit_code = C.EXIT_TRANSPORT
    retryable = True


class HostKeyError(ReplicatorError):
    """{}"""

    exit_code = C.EXIT_TRANSPORT


# --- messages ------------------------------------------------------------------
@dataclass(frozen=True)
class Hello:
    TYPE: ClassVar[int] = HELLO
    min_version: int = PROTOCOL_VERSION_MIN
    max_version: int = PROTOCOL_VERSION_MAX
    software: str = "replicator"

    def encode(self) -> bytes:
        return F.frame(HELLO, PROTOCOL_MAGIC, F.u16(self.min_version), F.u16(self.max_version), F.name(self.software))

    @classmethod
    def decode(cls, d: F.Decoder) -> "Hello":
        magic = d.get_fixed(len(PROTOCOL_MAGIC), "HELLO magic")
        if magic != PROTOCOL_MAGIC:
            raise ProtocolError("peer does not speak the replicator protocol (bad HELLO magic)")
        lo, hi, software = d.get_u16(), d.get_u16(), d.get_name()
        if lo > hi or lo == 0:
            raise ProtocolError(f"HELLO version range {lo}..{hi} is empty")
        return cls(lo, hi, software)


def negotiate(mine: Hello, theirs: Hello) -> int:
    """:returns: the highest version both support.  :raises ProtocolError: none."""
    version = min(mine.max_version, theirs.max_version)
    if version < max(mine.min_version, theirs.min_version):
        raise ProtocolError(f"no common protocol version (ours {mine.min_version}..{mine.max_version}, "
                            f"peer's {theirs.min_version}..{theirs.max_version})")
    return version


@dataclass(frozen=True)
class Open:
    TYPE: ClassVar[int] = OPEN
    repository: str
    mode: int

    def encode(self) -> bytes:
        return F.frame(OPEN, F.name(self.repository), F.u8(self.mode))

    @classmethod
    def decode(cls, d: F.Decoder) -> "Open":
        repo, mode = d.get_name(), d.get_u8()
        if mode not in (MODE_READ, MODE_WRITE):
            raise ProtocolError(f"OPEN mode {mode} is unknown")
        if not repo:
            raise ProtocolError("OPEN names no repository")
        return cls(repo, mode)


@dataclass(frozen=True)
class OpenOk:
    TYPE: ClassVar[int] = OPEN_OK
    config: bytes
    keyfile: bytes

    def encode(self) -> bytes:
        return F.frame(OPEN_OK, F.blob(self.config), F.blob(self.keyfile))

    @classmethod
    def decode(cls, d: F.Decoder) -> "OpenOk":
        return cls(d.get_blob(1 << 20), d.get_blob(1 << 20))


@dataclass(frozen=True)
class List:
    TYPE: ClassVar[int] = LIST
    prefix: str

    def encode(self) -> bytes:
        return F.frame(LIST, F.name(self.prefix))

    @classmethod
    def decode(cls, d: F.Decoder) -> "List":
        prefix = d.get_name()
        if prefix not in LIST_PREFIXES:
            raise ProtocolError(f"LIST of {prefix!r} is not allowed")
        return cls(prefix)


@dataclass(frozen=True)
class Names:
    TYPE: ClassVar[int] = NAMES
    names: tuple[str, ...]

    def encode(self) -> bytes:
        return F.frame(NAMES, F.names(list(self.names)))

    @classmethod
    def decode(cls, d: F.Decoder) -> "Names":
        return cls(tuple(d.get_names(MAX_NAMES)))


def check_object_name(name: str, *patterns: re.Pattern) -> str:
    if not any(p.match(name) for p in patterns):
        raise ProtocolError(f"object name {name[:80]!r} is not allowed here")
    return name


@dataclass(frozen=True)
class Get:
    TYPE: ClassVar[int] = GET
    name: str

    def encode(self) -> bytes:
        return F.frame(GET, F.name(self.name))

    @classmethod
    def decode(cls, d: F.Decoder) -> "Get":
        return cls(check_object_name(d.get_name(), IDS_NAME_RE, SNAPSHOT_NAME_RE, PACK_NAME_RE))


@dataclass(frozen=True)
class Data:
    TYPE: ClassVar[int] = DATA
    data: bytes

    def encode(self) -> bytes:
        return F.frame(DATA, F.blob(self.data))

    @classmethod
    def decode(cls, d: F.Decoder) -> "Data":
        return cls(d.get_blob())


@dataclass(frozen=True)
class PutPack:
    TYPE: ClassVar[int] = PUT_PACK
    name: str
    ids: tuple[bytes, ...]  # sorted, unique
    data: bytes

    def encode(self) -> bytes:
        return F.frame(PUT_PACK, F.name(self.name), F.ids(list(self.ids)), F.blob(self.data))

    @classmethod
    def decode(cls, d: F.Decoder) -> "PutPack":
        name = check_object_name(d.get_name(), PACK_NAME_RE)
        m = PACK_NAME_RE.match(name)
        if m.group(1) != m.group(2)[:2]:
            raise ProtocolError(f"pack name {name} has the wrong fan-out directory")
        ids = d.get_ids(MAX_PACK_BLOBS)
        if not ids:
            raise ProtocolError(f"PUT_PACK {name} lists no ids")
        check_sorted(ids, "PUT_PACK ids")
        return cls(name, tuple(ids), d.get_blob())


def check_sorted(ids: list[bytes], what: str, after: bytes | None = None) -> None:
    """:raises ProtocolError: unless strictly increasing (sorted, no duplicates) and above ``after``."""
    prev = after
    for i in ids:
        if prev is not None and i <= prev:
            raise ProtocolError(f"{what} are not sorted and unique")
        prev = i


@dataclass(frozen=True)
class PackOk:
    TYPE: ClassVar[int] = PACK_OK
    name: str

    def encode(self) -> bytes:
        return F.frame(PACK_OK, F.name(self.name))

    @classmethod
    def decode(cls, d: F.Decoder) -> "PackOk":
        return cls(check_object_name(d.get_name(), PACK_NAME_RE))


@dataclass(frozen=True)
class Refs:
    """A batch of the next snapshot's refs (when they do not fit in COMMIT's frame); no reply."""

    TYPE: ClassVar[int] = REFS
    ids: tuple[bytes, ...]

    def encode(self) -> bytes:
        return F.frame(REFS, F.ids(list(self.ids)))

    @classmethod
    def decode(cls, d: F.Decoder) -> "Refs":
        return cls(tuple(d.get_ids(MAX_IDS_PER_FRAME)))


@dataclass(frozen=True)
class Commit:
    TYPE: ClassVar[int] = COMMIT
    name: str
    data: bytes
    refs: tuple[bytes, ...]  # the last batch (after any REFS batches)

    def encode(self) -> bytes:
        return F.frame(COMMIT, F.name(self.name), F.blob(self.data), F.ids(list(self.refs)))

    @classmethod
    def decode(cls, d: F.Decoder) -> "Commit":
        name = check_object_name(d.get_name(), SNAPSHOT_NAME_RE)
        data = d.get_blob(MAX_SNAPSHOT_OBJECT)
        return cls(name, data, tuple(d.get_ids(MAX_IDS_PER_FRAME)))


@dataclass(frozen=True)
class CommitOk:
    TYPE: ClassVar[int] = COMMIT_OK
    name: str

    def encode(self) -> bytes:
        return F.frame(COMMIT_OK, F.name(self.name))

    @classmethod
    def decode(cls, d: F.Decoder) -> "CommitOk":
        return cls(check_object_name(d.get_name(), SNAPSHOT_NAME_RE))


@dataclass(frozen=True)
class Error:
    TYPE: ClassVar[int] = ERROR
    code: int
    message: str

    def encode(self) -> bytes:
        msg = self.message.encode("utf-8", "replace")[:1000]
        return F.frame(ERROR, F.u16(self.code), F.blob(msg))

    @classmethod
    def decode(cls, d: F.Decoder) -> "Error":
        code = d.get_u16()
        msg = d.get_blob(4096).decode("utf-8", "replace")
        return cls(code, msg)


@dataclass(frozen=True)
class Bye:
    TYPE: ClassVar[int] = BYE

    def encode(self) -> bytes:
        return F.frame(BYE)

    @classmethod
    def decode(cls, d: F.Decoder) -> "Bye":
        return cls()


MESSAGES = {cls.TYPE: cls for cls in (Hello, Open, OpenOk, List, Names, Get, Data, PutPack, PackOk, Refs, Commit,
                                      CommitOk, Error, Bye)}

# Server state machine: which client messages each state accepts.
STATE_START, STATE_READY, STATE_OPEN = "start", "ready", "open"
ALLOWED = {
    STATE_START: {HELLO},
    STATE_READY: {OPEN, BYE},
    STATE_OPEN: {LIST, GET, PUT_PACK, REFS, COMMIT, BYE},
}


def decode_message(msg_type: int, body: bytes | memoryview):
    """:returns: the message object of a frame.  :raises ProtocolError: unknown type or bad body."""
    cls = MESSAGES.get(msg_type)
    if cls is None:
        raise ProtocolError(f"unknown message type {msg_type}")
    d = F.Decoder(body)
    msg = cls.decode(d)
    d.check_end()
    return msg


async def read_frame(reader, max_size: int = F.MAX_FRAME_SIZE) -> tuple[int, bytes] | None:
    """:returns: (type, body), or None on a clean end of stream before a frame.

    :raises ProtocolError: oversized or truncated frame.
    """
    import asyncio

    try:
        head = await reader.readexactly(F.HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError("connection closed inside a frame header") from None
    length, msg_type = F.parse_header(head, max_size)
    try:
        body = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed inside a frame") from None
    return msg_type, body


async def read_message(reader, max_size: int = F.MAX_FRAME_SIZE):
    """:returns: the next message, or None at a clean end of stream.  :raises ProtocolError:"""
    got = await read_frame(reader, max_size)
    if got is None:
        return None
    return decode_message(*got)

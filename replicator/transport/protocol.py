"""Replication protocol: messages, version negotiation, limits, errors (docs/PROTOCOL.md).

Each message is a frozen dataclass with ``encode_parts() -> list of buffers``
(the frame, big payloads not copied: frames.frame_parts), ``encode() -> frame
bytes`` (the parts joined) and ``decode(decoder) -> message`` (validating
every field).  ``decode_message(type, body)`` maps a frame body to its message
or raises ProtocolError, refusing trailing bytes.  The state machine itself
lives with its user (server.py checks which messages are allowed in which
state; ``ALLOWED`` lists them; ``ANSWERS`` says which answer each request gets).

The byte layout of every message is pinned by tests/vectors/protocol.json
(scripts/gen_protocol_vectors.py; tests/transport/test_protocol_vectors.py).

Nothing here does I/O except ``read_frame``/``read_message``/``write_message``,
which take any asyncio-style reader (``readexactly``) and writer
(``write``/``drain``).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from replicator import constants as C
from replicator.errors import ReplicatorError
from replicator.format import layout as L
from replicator.format.head import TAG_SIZE
from replicator.format.idlist import PROOF_SIZE, Buffer, as_buffer
from replicator.transport import frames as F
from replicator.transport.frames import ProtocolError

PROTOCOL_MAGIC = b"RPLPROTO"
# Version 5 (release 0.7): GET_RANGES asks for many pack ranges in one request (a restore over ssh://).
# Version 4 (release 0.6): a commit's refs may travel as a difference from its parent's (REFS_BASE, DROP).
# Version 3 (release 0.4): COMMIT carries its lineage claim (source tag, parent), checked by the receiver.
# Version 2 (release 0.3): PUT_PACK and COMMIT carry declaration proofs; GET_RANGE and DECLARE are new.
# Versions 1 and 2 are refused: a version 2 commit names no parent, so the receiver could not refuse a
# stale writer's commit (and version 1's writes carried no proof that a key holder made them).
PROTOCOL_VERSION_MIN = 3
PROTOCOL_VERSION_MAX = 5
REFS_DIFF_VERSION = 4  # the first version with REFS_BASE and DROP
GET_RANGES_VERSION = 5  # the first version with GET_RANGES
SUBSYSTEM = "replicator"  # SSH subsystem name; the OpenSSH ForceCommand alternative is "replicator serve --stdio"

# Limits (PROTOCOL.md 3 and 4; tests/transport/test_protocol_vectors.py checks the doc quotes these values).
MAX_IDS_PER_FRAME = (F.MAX_FRAME_SIZE - 1024) // C.ID_SIZE  # 2,097,120: refs travel in REFS batches
MAX_PACK_BLOBS = C.PACK_MAX_BLOBS  # 2^20 ids in one PUT_PACK
MAX_NAMES = 4 * 1024 * 1024  # names in one NAMES
MAX_SNAPSHOT_OBJECT = C.MAX_SNAPSHOT_SIZE + 1024  # COMMIT's snapshot bytes
MAX_CONFIG_OBJECT = 1 << 20  # each of OPEN_OK's config and key file
MAX_RANGE = 16 * 1024 * 1024  # bytes one GET_RANGE (or all ranges of one GET_RANGES) may ask for
MAX_RANGES = 1024  # ranges in one GET_RANGES
MAX_ERROR_MESSAGE = 4096  # ERROR message bytes a decoder accepts
MAX_ERROR_MESSAGE_SENT = 1000  # ERROR message bytes this implementation sends (cut at a character boundary)

# Caps on what one side accumulates from the other, which a count in one frame cannot bound (PROTOCOL.md 3,
# "Limits"): exceeding one is a one-line ProtocolError (sender) or ERROR 1 (receiver), never a MemoryError.
MAX_SNAPSHOT_REFS = 1 << 25  # receiver: refs of one snapshot, REFS batches and COMMIT's together (1 GiB of ids)
MAX_LISTED_NAMES = 1 << 20  # sender: names in one NAMES it accepts (16 TiB of 16 MiB packs), checked before decoding
MAX_ID_LIST_OBJECT = MAX_PACK_BLOBS * C.ID_SIZE  # sender: bytes of one ids/ object (a pack holds <= 2^20 blobs)
MAX_REMOTE_ID_BYTES = MAX_SNAPSHOT_REFS * C.ID_SIZE  # sender: bytes of all ids/ objects of a session, 2^25 ids

MODE_READ = 1
MODE_WRITE = 2

# Message types (u8).  Never reuse a number.
HELLO, OPEN, OPEN_OK, LIST, NAMES, GET, DATA, PUT_PACK, PACK_OK, REFS, COMMIT, COMMIT_OK, ERROR, BYE = range(1, 15)
GET_RANGE, RANGE, DECLARE, DECLARE_OK = range(15, 19)
FORGET, FORGET_OK, PRUNE, PRUNE_OK = range(19, 23)  # version 3: retention run at the receiver, under its lock
REFS_BASE, DROP = 23, 24  # version 4: the refs of a commit as a difference from its parent's
GET_RANGES = 25  # version 5: many GET_RANGEs in one request, answered by one RANGE each
PRUNE_DRY_RUN = 1  # PRUNE flags bit 0: report, delete nothing
PRUNE_COUNTERS = C.PRUNE_COUNTERS  # PRUNE_OK's u64 fields, in wire order

# ERROR codes (u16).  RemoteError maps each to the exit code the client reports.
E_PROTOCOL, E_VERSION, E_NOT_ALLOWED, E_NO_REPOSITORY, E_INTEGRITY, E_MISSING_REFS, E_STORAGE, E_LOCKED, \
    E_INTERNAL, E_NOT_FOUND = range(1, 11)
E_FENCED, E_DIVERGED = 11, 12  # version 3: COMMIT refused by the source's fence, or its parent is not the head
E_QUOTA = 13  # PUT_PACK would take the repository past its quota (any version: a code the peer reports as is)
ERROR_NAMES = {E_PROTOCOL: "protocol violation", E_VERSION: "no common protocol version",
               E_NOT_ALLOWED: "not allowed", E_NO_REPOSITORY: "no such repository", E_INTEGRITY: "integrity",
               E_MISSING_REFS: "missing chunks", E_STORAGE: "storage", E_LOCKED: "locked",
               E_INTERNAL: "internal error", E_NOT_FOUND: "not found", E_FENCED: "fenced",
               E_DIVERGED: "history diverged", E_QUOTA: "quota exceeded"}
ERROR_REASONS = {code: name.replace(" ", "_") for code, name in ERROR_NAMES.items()}  # metric label values

# Whole-name patterns: \Z, not $ (which also matches before a trailing newline).
# Object names are the repository's (format/layout.py): one spelling for the disk and the wire.
PACK_NAME_RE = L.PACK_RE
SNAPSHOT_NAME_RE = L.SNAPSHOT_RE
IDS_NAME_RE = L.IDS_RE
LIST_PREFIXES = (L.IDS, L.SNAPSHOTS, L.PACKS)


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
        elif code in (E_FENCED, E_DIVERGED):
            self.exit_code = C.EXIT_DIVERGED
            self.retryable = code == E_DIVERGED  # a race: the next run reads the new history


class TransportError(ReplicatorError):
    """transport error: {}"""

    exit_code = C.EXIT_TRANSPORT
    retryable = True


class HostKeyError(ReplicatorError):
    """{}"""

    exit_code = C.EXIT_TRANSPORT


# --- messages ------------------------------------------------------------------
class Message:
    """Base of every message: ``encode()`` is the frame as one bytes object (tests, small messages)."""

    TYPE: ClassVar[int]

    def encode_parts(self) -> list[F.Buffer]:
        """The frame as a few buffers; a big payload is the message's own object, not a copy."""
        raise NotImplementedError

    def encode(self) -> bytes:
        return b"".join(self.encode_parts())


@dataclass(frozen=True)
class Hello(Message):
    TYPE: ClassVar[int] = HELLO
    min_version: int = PROTOCOL_VERSION_MIN
    max_version: int = PROTOCOL_VERSION_MAX
    software: str = "replicator"

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(HELLO, PROTOCOL_MAGIC, F.u16(self.min_version), F.u16(self.max_version),
                             F.name(self.software))

    @classmethod
    def decode(cls, d: F.Decoder) -> Hello:
        magic = d.get_fixed(len(PROTOCOL_MAGIC), "HELLO magic")
        if magic != PROTOCOL_MAGIC:
            raise ProtocolError("peer does not speak the replicator protocol (bad HELLO magic)")
        lo, hi, software = d.get_u16(), d.get_u16(), d.get_name()
        if lo > hi or lo == 0:
            raise ProtocolError(f"HELLO version range {lo}..{hi} is empty")
        return cls(lo, hi, software)


def negotiate(mine: Hello, theirs: Hello) -> int:
    """:returns: the highest version both support.

    :raises ProtocolError: none; its ``code`` is E_VERSION (a receiver answers ERROR 2).
    """
    version = min(mine.max_version, theirs.max_version)
    if version < max(mine.min_version, theirs.min_version):
        raise ProtocolError(f"no common protocol version (ours {mine.min_version}..{mine.max_version}, "
                            f"peer's {theirs.min_version}..{theirs.max_version})", code=E_VERSION)
    return version


@dataclass(frozen=True)
class Open(Message):
    TYPE: ClassVar[int] = OPEN
    repository: str
    mode: int

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(OPEN, F.name(self.repository), F.u8(self.mode))

    @classmethod
    def decode(cls, d: F.Decoder) -> Open:
        repo, mode = d.get_name(), d.get_u8()
        if mode not in (MODE_READ, MODE_WRITE):
            raise ProtocolError(f"OPEN mode {mode} is unknown")
        if not repo:
            raise ProtocolError("OPEN names no repository")
        return cls(repo, mode)


@dataclass(frozen=True)
class OpenOk(Message):
    TYPE: ClassVar[int] = OPEN_OK
    config: bytes
    keyfile: bytes

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(OPEN_OK, *F.blob_parts(self.config), *F.blob_parts(self.keyfile))

    @classmethod
    def decode(cls, d: F.Decoder) -> OpenOk:
        return cls(bytes(d.get_blob(MAX_CONFIG_OBJECT)), bytes(d.get_blob(MAX_CONFIG_OBJECT)))


@dataclass(frozen=True)
class List(Message):
    TYPE: ClassVar[int] = LIST
    prefix: str

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(LIST, F.name(self.prefix))

    @classmethod
    def decode(cls, d: F.Decoder) -> List:
        prefix = d.get_name()
        if prefix not in LIST_PREFIXES:
            raise ProtocolError(f"LIST of {prefix!r} is not allowed")
        return cls(prefix)


@dataclass(frozen=True)
class Names(Message):
    TYPE: ClassVar[int] = NAMES
    names: tuple[str, ...]

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(NAMES, F.names(list(self.names)))

    @classmethod
    def decode(cls, d: F.Decoder) -> Names:
        return cls(tuple(d.get_names(MAX_NAMES)))


def check_object_name(name: str, *patterns: re.Pattern) -> str:
    if not any(p.match(name) for p in patterns):
        raise ProtocolError(f"object name {name[:80]!r} is not allowed here")
    return name


@dataclass(frozen=True)
class Get(Message):
    TYPE: ClassVar[int] = GET
    name: str

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(GET, F.name(self.name))

    @classmethod
    def decode(cls, d: F.Decoder) -> Get:
        return cls(check_object_name(d.get_name(), IDS_NAME_RE, SNAPSHOT_NAME_RE, PACK_NAME_RE))


@dataclass(frozen=True)
class Data(Message):
    TYPE: ClassVar[int] = DATA
    data: bytes | memoryview  # a memoryview over the frame body only if decoded with copy=False

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(DATA, *F.blob_parts(self.data))

    @classmethod
    def decode(cls, d: F.Decoder) -> Data:
        return cls(d.get_blob(copy=d.copy_payloads))


@dataclass(frozen=True)
class PutPack(Message):
    TYPE: ClassVar[int] = PUT_PACK
    name: str
    ids: tuple[bytes, ...]  # sorted, unique
    proof: bytes  # the key holder's declaration that this pack holds exactly these ids (64 bytes)
    data: bytes | memoryview  # a memoryview over the frame body only if decoded with copy=False

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(PUT_PACK, F.name(self.name), F.ids(list(self.ids)), _proof(self.proof),
                             *F.blob_parts(self.data))

    @classmethod
    def decode(cls, d: F.Decoder) -> PutPack:
        name = _pack_name(d)
        ids = d.get_ids(MAX_PACK_BLOBS)
        if not ids:
            raise ProtocolError(f"PUT_PACK {name} lists no ids")
        check_sorted(ids, "PUT_PACK ids")
        return cls(name, tuple(ids), d.get_fixed(PROOF_SIZE, "proof"), d.get_blob(copy=d.copy_payloads))


def _fixed(value: bytes, size: int, what: str) -> bytes:
    if len(value) != size:
        raise ValueError(f"a {what} is {size} bytes")
    return value


def _proof(proof: bytes) -> bytes:
    return _fixed(proof, PROOF_SIZE, "declaration proof")


def _pack_name(d: F.Decoder) -> str:
    name = check_object_name(d.get_name(), PACK_NAME_RE)
    if not L.is_pack(name):
        raise ProtocolError(f"pack name {name} has the wrong fan-out directory")
    return name


def check_sorted(ids: list[bytes], what: str, after: bytes | None = None) -> None:
    """:raises ProtocolError: unless strictly increasing (sorted, no duplicates) and above ``after``."""
    prev = after
    for i in ids:
        if prev is not None and i <= prev:
            raise ProtocolError(f"{what} are not sorted and unique")
        prev = i


def _id_fields(ids: Sequence[bytes] | Buffer) -> tuple[F.Buffer, F.Buffer]:
    """An id list's fields, u32 count and the ids: ``ids`` a buffer of them (sent as is, no bytes object per
    id: a sender's refs, issue 11) or a sequence of ids (what a decoded message holds)."""
    if isinstance(ids, (bytes, bytearray, memoryview)):
        buf = as_buffer(ids)
        return F.u32(F.nbytes(buf) // C.ID_SIZE), buf
    return F.ids(list(ids)), b""


def ids_view(buf: Buffer) -> tuple[bytes, ...]:
    """A buffer of ids where REFS, DROP and COMMIT declare a tuple of them: their ``encode_parts`` send a
    buffer as is (``_id_fields``), so a sender's refs never become a bytes object per id.  The declared
    type stays the decoded one (the field types are part of the vectors' JSON forms)."""
    return as_buffer(buf)  # type: ignore[return-value]


@dataclass(frozen=True)
class PackOk(Message):
    TYPE: ClassVar[int] = PACK_OK
    name: str

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(PACK_OK, F.name(self.name))

    @classmethod
    def decode(cls, d: F.Decoder) -> PackOk:
        return cls(check_object_name(d.get_name(), PACK_NAME_RE))


@dataclass(frozen=True)
class Refs(Message):
    """A batch of the next snapshot's refs (when they do not fit in COMMIT's frame); no reply."""

    TYPE: ClassVar[int] = REFS
    ids: tuple[bytes, ...]  # decoded: a tuple; a sender may give a buffer of the ids (ids_view)

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(REFS, *_id_fields(self.ids))

    @classmethod
    def decode(cls, d: F.Decoder) -> Refs:
        return cls(tuple(d.get_ids(MAX_IDS_PER_FRAME)))


@dataclass(frozen=True)
class RefsBase(Message):
    """Version 4, before a commit's REFS, DROP and COMMIT: its refs are those of snapshot ``base`` (the
    commit's parent) without the DROP ids, plus the REFS and COMMIT ids; the result must have ``count``
    ids whose SHA-256 (over the sorted ids, concatenated) is ``digest``.  No reply."""

    TYPE: ClassVar[int] = REFS_BASE
    base: str  # the parent snapshot's digest (hex)
    count: int
    digest: bytes  # 32 bytes

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(REFS_BASE, _fixed(bytes.fromhex(self.base), C.ID_SIZE, "base"), F.u64(self.count),
                             _fixed(self.digest, C.ID_SIZE, "digest"))

    @classmethod
    def decode(cls, d: F.Decoder) -> RefsBase:
        base = d.get_fixed(C.ID_SIZE, "base")
        count = d.get_u64()
        if count > MAX_SNAPSHOT_REFS:
            raise ProtocolError(f"REFS_BASE count {count} is above MAX_SNAPSHOT_REFS ({MAX_SNAPSHOT_REFS})")
        return cls(base.hex(), count, d.get_fixed(C.ID_SIZE, "digest"))


@dataclass(frozen=True)
class Drop(Message):
    """Version 4: a batch of ids the base snapshot's refs hold and this commit's do not; no reply."""

    TYPE: ClassVar[int] = DROP
    ids: tuple[bytes, ...]  # decoded: a tuple; a sender may give a buffer of the ids (ids_view)

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(DROP, *_id_fields(self.ids))

    @classmethod
    def decode(cls, d: F.Decoder) -> Drop:
        return cls(tuple(d.get_ids(MAX_IDS_PER_FRAME)))


def refs_digest(ids) -> bytes:
    """REFS_BASE's ``digest``: SHA-256 over sorted ids, concatenated (a buffer of them, or an iterable of ids
    read once)."""
    if isinstance(ids, (bytes, bytearray, memoryview)):
        return hashlib.sha256(ids).digest()
    h = hashlib.sha256()
    for i in ids:
        h.update(i)
    return h.digest()


@dataclass(frozen=True)
class Commit(Message):
    TYPE: ClassVar[int] = COMMIT
    name: str
    data: bytes
    proof: bytes  # the key holder's proof that it made this snapshot object (64 bytes)
    tag: bytes  # version 3: the source's tag (16 bytes, format/head.py)
    parent: str | None  # version 3: the snapshot this one continues (32 bytes on the wire, zeros for none)
    refs: tuple[bytes, ...]  # the last batch (after any REFS batches); at most max_commit_refs(name, data)
    # (a sender may give a buffer of the ids: ids_view)

    def encode_parts(self) -> list[F.Buffer]:
        parent = bytes.fromhex(self.parent) if self.parent else bytes(C.ID_SIZE)
        return F.frame_parts(COMMIT, F.name(self.name), *F.blob_parts(self.data), _proof(self.proof),
                             _fixed(self.tag, TAG_SIZE, "tag"), parent, *_id_fields(self.refs))

    @classmethod
    def decode(cls, d: F.Decoder) -> Commit:
        name = check_object_name(d.get_name(), SNAPSHOT_NAME_RE)
        data = bytes(d.get_blob(MAX_SNAPSHOT_OBJECT))
        proof = d.get_fixed(PROOF_SIZE, "proof")
        tag = d.get_fixed(TAG_SIZE, "tag")
        parent = d.get_fixed(C.ID_SIZE, "parent")
        return cls(name, data, proof, tag, parent.hex() if any(parent) else None,
                   tuple(d.get_ids(MAX_IDS_PER_FRAME)))


def max_commit_refs(name: str, data: bytes | memoryview) -> int:
    """How many refs fit in a COMMIT frame with this snapshot (the rest go first in REFS batches).

    The frame limit binds before MAX_IDS_PER_FRAME as soon as the snapshot is
    more than ~1 KiB: length = 1 + (2 + len(name)) + (4 + len(data)) + 64 + 16 + 32 + (4 + 32 x refs).
    """
    fixed = 1 + len(F.name(name)) + 4 + len(data) + PROOF_SIZE + TAG_SIZE + C.ID_SIZE + 4
    return max(0, min(MAX_IDS_PER_FRAME, (F.MAX_FRAME_SIZE - fixed) // C.ID_SIZE))


@dataclass(frozen=True)
class CommitOk(Message):
    TYPE: ClassVar[int] = COMMIT_OK
    name: str

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(COMMIT_OK, F.name(self.name))

    @classmethod
    def decode(cls, d: F.Decoder) -> CommitOk:
        return cls(check_object_name(d.get_name(), SNAPSHOT_NAME_RE))


@dataclass(frozen=True)
class GetRange(Message):
    """Part of a pack (its header, footer or table: what a key holder reads to upgrade its id list)."""

    TYPE: ClassVar[int] = GET_RANGE
    name: str
    offset: int
    length: int

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(GET_RANGE, F.name(self.name), F.u64(self.offset), F.u32(self.length))

    @classmethod
    def decode(cls, d: F.Decoder) -> GetRange:
        name, offset, length = _pack_name(d), d.get_u64(), d.get_u32()
        if length > MAX_RANGE:
            raise ProtocolError(f"GET_RANGE of {length} bytes is more than MAX_RANGE ({MAX_RANGE})")
        return cls(name, offset, length)


@dataclass(frozen=True)
class Range(Message):
    """The answer to GET_RANGE: the object's size and the bytes asked for (fewer at its end)."""

    TYPE: ClassVar[int] = RANGE
    size: int
    data: bytes

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(RANGE, F.u64(self.size), *F.blob_parts(self.data))

    @classmethod
    def decode(cls, d: F.Decoder) -> Range:
        return cls(d.get_u64(), bytes(d.get_blob(MAX_RANGE)))


@dataclass(frozen=True)
class GetRanges(Message):
    """Many pack ranges in one request (version 5): answered by one RANGE per range, in order.  At most
    ``MAX_RANGES`` ranges whose lengths add up to at most ``MAX_RANGE`` (``group_ranges`` cuts a list so)."""

    TYPE: ClassVar[int] = GET_RANGES
    ranges: tuple[tuple[str, int, int], ...]

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(GET_RANGES, F.u16(len(self.ranges)),
                             *(F.name(n) + F.u64(o) + F.u32(length) for n, o, length in self.ranges))

    @classmethod
    def decode(cls, d: F.Decoder) -> GetRanges:
        count = d.get_u16()
        if not 1 <= count <= MAX_RANGES:
            raise ProtocolError(f"GET_RANGES of {count} ranges (1 to MAX_RANGES, {MAX_RANGES})")
        ranges, total = [], 0
        for _ in range(count):
            name, offset, length = _pack_name(d), d.get_u64(), d.get_u32()
            total += length
            if total > MAX_RANGE:
                raise ProtocolError(f"GET_RANGES asks for more than MAX_RANGE ({MAX_RANGE}) bytes")
            ranges.append((name, offset, length))
        return cls(tuple(ranges))


@dataclass(frozen=True)
class Ranges:
    """The answer to a GET_RANGES: one RANGE message per range, in order (no message type of its own)."""

    answers: tuple[Range, ...]

    def encode_parts(self) -> list[F.Buffer]:
        return [part for answer in self.answers for part in answer.encode_parts()]


def group_ranges(wanted: Sequence[tuple[str, int, int]]) -> list[list[tuple[str, int, int]]]:
    """``wanted`` (each range at most MAX_RANGE bytes) cut, in order, into the ranges of GET_RANGES requests."""
    groups: list[list[tuple[str, int, int]]] = []
    total = 0
    for w in wanted:
        if not groups or len(groups[-1]) >= MAX_RANGES or total + w[2] > MAX_RANGE:
            groups.append([])
            total = 0
        groups[-1].append(w)
        total += w[2]
    return groups


@dataclass(frozen=True)
class Declare(Message):
    """A key holder's proof for an object already stored: a pack's id list (``ids`` non-empty) or a
    snapshot (``ids`` empty).  How a repository written before protocol 2 gets its proofs."""

    TYPE: ClassVar[int] = DECLARE
    name: str
    ids: tuple[bytes, ...]
    proof: bytes

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(DECLARE, F.name(self.name), F.ids(list(self.ids)), _proof(self.proof))

    @classmethod
    def decode(cls, d: F.Decoder) -> Declare:
        name = check_object_name(d.get_name(), PACK_NAME_RE, SNAPSHOT_NAME_RE)
        ids = d.get_ids(MAX_PACK_BLOBS)
        if PACK_NAME_RE.match(name):
            if not L.is_pack(name):
                raise ProtocolError(f"pack name {name} has the wrong fan-out directory")
            if not ids:
                raise ProtocolError(f"DECLARE {name} lists no ids")
            check_sorted(ids, "DECLARE ids")
        elif ids:
            raise ProtocolError(f"DECLARE {name} of a snapshot lists ids")
        return cls(name, tuple(ids), d.get_fixed(PROOF_SIZE, "proof"))


@dataclass(frozen=True)
class DeclareOk(Message):
    TYPE: ClassVar[int] = DECLARE_OK
    name: str

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(DECLARE_OK, F.name(self.name))

    @classmethod
    def decode(cls, d: F.Decoder) -> DeclareOk:
        return cls(check_object_name(d.get_name(), PACK_NAME_RE, SNAPSHOT_NAME_RE))


@dataclass(frozen=True)
class Forget(Message):
    """Delete one snapshot (and its refs) at the receiver: ``proof`` is the key holder's forget proof."""

    TYPE: ClassVar[int] = FORGET
    name: str
    proof: bytes

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(FORGET, F.name(self.name), _proof(self.proof))

    @classmethod
    def decode(cls, d: F.Decoder) -> Forget:
        return cls(check_object_name(d.get_name(), SNAPSHOT_NAME_RE), d.get_fixed(PROOF_SIZE, "proof"))


@dataclass(frozen=True)
class ForgetOk(Message):
    TYPE: ClassVar[int] = FORGET_OK
    name: str

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(FORGET_OK, F.name(self.name))

    @classmethod
    def decode(cls, d: F.Decoder) -> ForgetOk:
        return cls(check_object_name(d.get_name(), SNAPSHOT_NAME_RE))


@dataclass(frozen=True)
class Prune(Message):
    """Delete, key-less, every pack no remaining snapshot's refs name (flags: ``PRUNE_DRY_RUN``)."""

    TYPE: ClassVar[int] = PRUNE
    flags: int

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(PRUNE, F.u8(self.flags))

    @classmethod
    def decode(cls, d: F.Decoder) -> Prune:
        flags = d.get_u8()
        if flags & ~PRUNE_DRY_RUN:
            raise ProtocolError(f"PRUNE flags {flags:#x} has unknown bits")
        return cls(flags)


@dataclass(frozen=True)
class PruneOk(Message):
    """What the receiver's prune found and did: one u64 per name of ``PRUNE_COUNTERS``."""

    TYPE: ClassVar[int] = PRUNE_OK
    counters: tuple[int, ...]

    def encode_parts(self) -> list[F.Buffer]:
        if len(self.counters) != len(PRUNE_COUNTERS):
            raise ValueError(f"PRUNE_OK has {len(PRUNE_COUNTERS)} counters")
        return F.frame_parts(PRUNE_OK, *(F.u64(c) for c in self.counters))

    @classmethod
    def decode(cls, d: F.Decoder) -> PruneOk:
        return cls(tuple(d.get_u64() for _ in PRUNE_COUNTERS))

    def as_dict(self) -> dict[str, int]:
        return dict(zip(PRUNE_COUNTERS, self.counters))


@dataclass(frozen=True)
class Error(Message):
    """Receiver to sender only; ends the session.  Any u16 code decodes (an unknown one is reported as is)."""

    TYPE: ClassVar[int] = ERROR
    code: int
    message: str

    def encode_parts(self) -> list[F.Buffer]:
        raw = self.message.encode("utf-8", "replace")
        if len(raw) > MAX_ERROR_MESSAGE_SENT:  # cut at a character boundary: the bytes stay valid UTF-8
            raw = raw[:MAX_ERROR_MESSAGE_SENT].decode("utf-8", "ignore").encode("utf-8")
        return F.frame_parts(ERROR, F.u16(self.code), *F.blob_parts(raw))

    @classmethod
    def decode(cls, d: F.Decoder) -> Error:
        code = d.get_u16()
        msg = bytes(d.get_blob(MAX_ERROR_MESSAGE)).decode("utf-8", "replace")
        return cls(code, msg)


@dataclass(frozen=True)
class Bye(Message):
    TYPE: ClassVar[int] = BYE

    def encode_parts(self) -> list[F.Buffer]:
        return F.frame_parts(BYE)

    @classmethod
    def decode(cls, d: F.Decoder) -> Bye:
        return cls()


MESSAGES = {cls.TYPE: cls for cls in (Hello, Open, OpenOk, List, Names, Get, Data, PutPack, PackOk, Refs, Commit,
                                      CommitOk, Error, Bye, GetRange, Range, Declare, DeclareOk, Forget, ForgetOk,
                                      Prune, PruneOk, RefsBase, Drop, GetRanges)}

# Receiver state machine: which sender messages each state accepts (PROTOCOL.md 5).  ERROR is in no
# state: the sender never sends it (it closes the channel instead), so an ERROR from it is a violation.
STATE_START, STATE_READY, STATE_OPEN = "start", "ready", "open"
ALLOWED = {
    STATE_START: {HELLO},
    STATE_READY: {OPEN, BYE},
    STATE_OPEN: {LIST, GET, PUT_PACK, REFS, COMMIT, BYE, GET_RANGE, DECLARE, FORGET, PRUNE, REFS_BASE, DROP,
                 GET_RANGES},
}

# The answer each request gets, in request order (PROTOCOL.md 4); REFS, REFS_BASE, DROP and BYE get none.  Instead of
# its answer the receiver may send ERROR, which ends the session.
ANSWERS = {OPEN: OPEN_OK, LIST: NAMES, GET: DATA, PUT_PACK: PACK_OK, COMMIT: COMMIT_OK, GET_RANGE: RANGE,
           GET_RANGES: RANGE,
           DECLARE: DECLARE_OK, FORGET: FORGET_OK, PRUNE: PRUNE_OK}


def decode_message(msg_type: int, body: bytes | memoryview, *, copy: bool = True):
    """:returns: the message object of a frame.  :raises ProtocolError: unknown type or bad body.

    ``copy=False``: PUT_PACK's and DATA's ``data`` are memoryviews over ``body``
    (no copy; ``body`` must be read-only, bytes or a read-only view as ``read_frame`` returns, else they
    are copies).
    """
    cls = MESSAGES.get(msg_type)
    if cls is None:
        raise ProtocolError(f"unknown message type {msg_type}")
    d = F.Decoder(body, copy_payloads=copy)
    msg = cls.decode(d)
    d.check_end()
    return msg


#: A body bigger than this is read in pieces of this size into one buffer, grown as they arrive: one
#: ``readexactly`` of a 16 MiB pack collects the channel's packets and joins them, two copies at once.
READ_PIECE = 1 << 20


async def read_frame(reader, max_size: int = F.MAX_FRAME_SIZE) -> tuple[int, bytes | memoryview] | None:
    """:returns: (type, body), or None on a clean end of stream before a frame.  A body bigger than
    READ_PIECE is a read-only memoryview over a buffer of its own (never modified, so it is as safe to
    take views of as bytes).

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
        if length <= READ_PIECE:
            return msg_type, (await reader.readexactly(length) if length else b"")
        buf = bytearray()  # grown as the pieces arrive: a length alone (a hostile peer's) allocates nothing
        for pos in range(0, length, READ_PIECE):
            buf += await reader.readexactly(min(READ_PIECE, length - pos))
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed inside a frame") from None
    return msg_type, memoryview(buf).toreadonly()


async def read_message(reader, max_size: int = F.MAX_FRAME_SIZE, *, copy: bool = True):
    """:returns: the next message, or None at a clean end of stream.  :raises ProtocolError:

    ``copy=False``: see ``decode_message`` (safe here: the body is a fresh bytes object).
    """
    got = await read_frame(reader, max_size)
    if got is None:
        return None
    return decode_message(*got, copy=copy)


#: Parts smaller than this are joined before they reach the channel: asyncssh turns every write into at
#: least one SSH packet of its own (its own MAC, its own send), so a frame header or a small answer written
#: alone costs a packet.  Bigger parts (packs, pack ranges) go as they are, never copied here.
COALESCE = 64 * 1024


def write_parts(writer, parts: Iterable[F.Buffer]) -> int:
    """Write frame parts in order, consecutive small ones joined into one write (see ``COALESCE``); the
    caller drains.  :returns: the bytes written."""
    size = 0
    joined = bytearray()
    for part in parts:
        n = F.nbytes(part)
        size += n
        if n >= COALESCE:
            if joined:
                writer.write(joined)
                joined = bytearray()
            writer.write(part)
            continue
        joined += part
        if len(joined) >= COALESCE:
            writer.write(joined)
            joined = bytearray()
    if joined:
        writer.write(joined)
    return size


#: A part bigger than this (a pack) is written in pieces of this size, each drained before the next:
#: asyncssh copies what it is given into its send buffer (a bytearray) until the peer's window takes it,
#: so one write of a 16 MiB pack would hold a second 16 MiB copy of it for as long as it takes to send.
WRITE_PIECE = 256 * 1024


async def write_parts_paced(writer, parts: Iterable[F.Buffer], piece: int = WRITE_PIECE) -> int:
    """``write_parts``, with every part bigger than ``piece`` written as views of ``piece`` bytes, each
    drained before the next, and a drain at the end: the channel buffers at most about ``piece`` bytes
    (plus its high-water mark) of a big part, never a copy of all of it.  :returns: the bytes written."""
    size = 0
    small: list[F.Buffer] = []
    for part in parts:
        n = F.nbytes(part)
        if n <= piece:
            small.append(part)
            continue
        if small:
            size += write_parts(writer, small)
            small = []
        view = memoryview(part).cast("B")
        for i in range(0, n, piece):
            writer.write(view[i : i + piece])
            await writer.drain()
        size += n
    if small:
        size += write_parts(writer, small)
    await writer.drain()
    return size


async def write_message(writer, msg: Message) -> int:
    """Write one message without joining its big parts (``write_parts``), then drain.

    Not ``writelines``: asyncssh's (and asyncio's before Python 3.12) joins the
    list into one new bytes object first, which is the copy this avoids.
    :returns: the frame's size in bytes.
    """
    size = write_parts(writer, msg.encode_parts())
    await writer.drain()
    return size

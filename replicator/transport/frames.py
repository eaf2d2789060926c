"""Frame codec: typed encoders and a bounds-checked decoder (docs/PROTOCOL.md "Frames").

A frame on the wire is ``u32 BE length || u8 type || body`` where ``length``
counts the type byte and the body.  Fields inside a body are encoded with the
small functions below and read back with ``Decoder``, whose every ``get_*``
raises ``ProtocolError`` instead of reading past the end, and whose
``check_end`` refuses trailing bytes.  This module owns the byte layout only:
it never does I/O and never knows what a message means (that is protocol.py,
which imports this module and never the reverse).

Big payloads are not copied: ``frame_parts`` returns a frame as a short list
of buffers in which any field of at least ``COPY_THRESHOLD`` bytes is the
caller's object itself (``blob_parts`` splits a byte string into its length
and its payload for that purpose), and ``Decoder.get_blob(copy=False)``
returns a read-only memoryview slice of the frame body instead of a copy.

Integers on the wire are big-endian (network order), unlike the repository
format, which is little-endian: the two never share a structure.
"""
from __future__ import annotations

import struct

from replicator import constants as C
from replicator.errors import ReplicatorError

MAX_FRAME_SIZE = 64 * 1024 * 1024  # the length field's limit: type byte + body (PROTOCOL.md 3)
MAX_NAME_SIZE = 255  # bytes of UTF-8 in a name field
ID_SIZE = C.ID_SIZE

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_HEAD = struct.Struct(">IB")
HEADER_SIZE = _HEAD.size
COPY_THRESHOLD = 64 * 1024  # frame_parts passes fields this big through by reference; smaller ones are joined

Buffer = bytes | bytearray | memoryview


class ProtocolError(ReplicatorError):
    """protocol error: {}"""

    exit_code = C.EXIT_TRANSPORT
    retryable = False
    # The ERROR code (PROTOCOL.md 4) a receiver answers this error with.  1 is protocol.E_PROTOCOL,
    # "protocol violation"; written as a number because frames.py must not import protocol.py.
    # protocol.negotiate raises ProtocolError(..., code=E_VERSION).
    code: int = 1

    def __init__(self, *args: object, code: int | None = None) -> None:
        super().__init__(*args)
        if code is not None:
            self.code = code


# --- encoders ----------------------------------------------------------------
def u8(value: int) -> bytes:
    return bytes((value,))


def u16(value: int) -> bytes:
    return _U16.pack(value)


def u32(value: int) -> bytes:
    return _U32.pack(value)


def u64(value: int) -> bytes:
    return _U64.pack(value)


def nbytes(data: Buffer) -> int:
    """Size in bytes (a memoryview's ``len`` counts items, not bytes)."""
    return data.nbytes if isinstance(data, memoryview) else len(data)


def blob_parts(data: Buffer) -> tuple[bytes, Buffer]:
    """A byte string as two fields: the u32 length, then ``data`` itself (not copied)."""
    return _U32.pack(nbytes(data)), data


def blob(data: Buffer) -> bytes:
    """A byte string: u32 length || bytes (a copy; ``blob_parts`` avoids it)."""
    return b"".join(blob_parts(data))


def name(text: str) -> bytes:
    """A name: u16 length || UTF-8 (at most MAX_NAME_SIZE bytes, no NUL)."""
    raw = text.encode("utf-8")
    if len(raw) > MAX_NAME_SIZE or b"\0" in raw:
        raise ValueError(f"name {text!r} cannot be encoded")
    return _U16.pack(len(raw)) + raw


def names(items: list[str]) -> bytes:
    return _U32.pack(len(items)) + b"".join(name(n) for n in items)


def ids(items: list[bytes]) -> bytes:
    """An id list: u32 count || count x 32 bytes."""
    for i in items:
        if len(i) != ID_SIZE:
            raise ValueError("an id is not 32 bytes")
    return _U32.pack(len(items)) + b"".join(items)


def frame_parts(msg_type: int, *fields: Buffer) -> list[Buffer]:
    """A whole frame as a list of buffers whose concatenation is ``frame(msg_type, *fields)``.

    The header and runs of small fields are joined into one bytes object each;
    a field of at least ``COPY_THRESHOLD`` bytes is put in the list as is (the
    same object: the caller must not modify it until it has been written).
    Write the parts in order (``for p in parts: writer.write(p)``).
    :raises ValueError: the frame would exceed MAX_FRAME_SIZE.
    """
    length = 1 + sum(nbytes(f) for f in fields)
    if length > MAX_FRAME_SIZE:
        raise ValueError("frame exceeds MAX_FRAME_SIZE")
    parts: list[Buffer] = []
    small: list[Buffer] = [_HEAD.pack(length, msg_type)]
    for f in fields:
        if nbytes(f) >= COPY_THRESHOLD:
            if small:
                parts.append(b"".join(small))
                small = []
            parts.append(f)
        elif f:
            small.append(f)
    if small:
        parts.append(b"".join(small))
    return parts


def frame(msg_type: int, *fields: Buffer) -> bytes:
    """A whole frame: u32 BE length (type + body) || type || fields.  :raises ValueError: too big."""
    return b"".join(frame_parts(msg_type, *fields))


def parse_header(head: bytes, max_size: int = MAX_FRAME_SIZE) -> tuple[int, int]:
    """:returns: (body length, type) from the 5 header bytes.  :raises ProtocolError:"""
    if len(head) != HEADER_SIZE:
        raise ProtocolError("truncated frame header")
    length, msg_type = _HEAD.unpack(head)
    if length < 1:
        raise ProtocolError("frame length 0")
    if length > max_size:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {max_size}")
    return length - 1, msg_type


# --- decoder -----------------------------------------------------------------
class Decoder:
    """Reads fields from one frame body; never past its end.

    ``copy_payloads`` is what message decoders pass to ``get_blob(copy=...)``
    for their one big payload (PUT_PACK's pack, DATA's bytes): False makes
    those fields memoryviews over ``body`` instead of copies.
    """

    def __init__(self, body: Buffer, *, copy_payloads: bool = True) -> None:
        self._buf = memoryview(body).cast("B") if isinstance(body, memoryview) else memoryview(body)
        self._pos = 0
        self.copy_payloads = copy_payloads

    def _take(self, n: int, what: str) -> memoryview:
        if n < 0 or self._pos + n > len(self._buf):
            raise ProtocolError(f"truncated {what}")
        view = self._buf[self._pos : self._pos + n]
        self._pos += n
        return view

    def get_fixed(self, n: int, what: str = "field") -> bytes:
        return bytes(self._take(n, what))

    def get_u8(self) -> int:
        return self._take(1, "u8")[0]

    def get_u16(self) -> int:
        return _U16.unpack(self._take(2, "u16"))[0]

    def get_u32(self) -> int:
        return _U32.unpack(self._take(4, "u32"))[0]

    def get_u64(self) -> int:
        return _U64.unpack(self._take(8, "u64"))[0]

    def get_blob(self, limit: int = MAX_FRAME_SIZE, copy: bool = True) -> bytes | memoryview:
        """A byte string of at most ``limit`` bytes.

        ``copy=False`` returns a memoryview slice of the body without copying,
        if the body is read-only (bytes, as from ``readexactly``); over a
        mutable body (bytearray) it still copies, so the result never changes.
        """
        n = self.get_u32()
        if n > limit:
            raise ProtocolError(f"byte string of {n} bytes exceeds {limit}")
        view = self._take(n, "byte string")
        if copy or not view.readonly:
            return bytes(view)
        return view

    def get_name(self) -> str:
        n = self.get_u16()
        if n > MAX_NAME_SIZE:
            raise ProtocolError(f"name of {n} bytes exceeds {MAX_NAME_SIZE}")
        raw = bytes(self._take(n, "name"))
        if b"\0" in raw:
            raise ProtocolError("name contains NUL")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("name is not valid UTF-8") from None

    def get_names(self, limit: int) -> list[str]:
        count = self.get_u32()
        if count > limit or count * 2 > self.remaining:
            raise ProtocolError(f"name list of {count} entries is impossible or too long")
        return [self.get_name() for _ in range(count)]

    def get_ids(self, limit: int) -> list[bytes]:
        count = self.get_u32()
        if count > limit:
            raise ProtocolError(f"id list of {count} entries exceeds {limit}")
        raw = self._take(count * ID_SIZE, "id list")
        return [bytes(raw[i : i + ID_SIZE]) for i in range(0, len(raw), ID_SIZE)]

    @property
    def remaining(self) -> int:
        return len(self._buf) - self._pos

    def check_end(self) -> None:
        if self._pos != len(self._buf):
            raise ProtocolError(f"{len(self._buf) - self._pos} unexpected bytes at the end of a frame")

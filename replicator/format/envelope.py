"""The 44-byte header shared by packs and snapshot objects.

    magic (8) | version u16 LE | reserved u16 LE (0) | salt (32)

The salt derives the object's one-off AEAD key (docs/FORMAT.md "Nonces").
"""
from __future__ import annotations

import struct

from replicator import constants as C
from replicator.errors import IntegrityError, UnsupportedVersion

HEADER = struct.Struct("<8sHH32s")
HEADER_SIZE = HEADER.size  # 44


def make_header(magic: bytes, salt: bytes) -> bytes:
    return HEADER.pack(magic, C.FORMAT_VERSION_CURRENT, 0, salt)


def parse_header(data: bytes, magic: bytes, what: str) -> bytes:
    """Check the header at the start of ``data``. :returns: the salt.

    :raises IntegrityError: truncated, wrong magic, reserved field not zero.
    :raises UnsupportedVersion: a version outside FORMAT_VERSION_MIN..MAX.
    """
    if len(data) < HEADER_SIZE:
        raise IntegrityError(f"{what} is truncated")
    found, version, reserved, salt = HEADER.unpack_from(data)
    if found != magic:
        raise IntegrityError(f"{what} does not start with its magic bytes (not this kind of object)")
    if not C.FORMAT_VERSION_MIN <= version <= C.FORMAT_VERSION_MAX:
        raise UnsupportedVersion(what, version, C.FORMAT_VERSION_MIN, C.FORMAT_VERSION_MAX)
    if reserved != 0:
        raise IntegrityError(f"{what}: reserved header field is not zero")
    return salt

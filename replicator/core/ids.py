"""Chunk and tree identities: keyed BLAKE3.

A chunk's id is BLAKE3 in keyed mode (the 32-byte id key derived from the
repository's master key) over the chunk's plaintext; a tree's id is the same
construction under a different key.  Keyed, so that an id reveals nothing
about the content to anyone without the key.  BLAKE3 was chosen by measured
speed (docs/ARCHITECTURE.md); the blake3 package releases the GIL while
hashing, so workers hash in parallel.

This is the only module that imports blake3.
"""
from __future__ import annotations

import hmac

import blake3

from replicator.constants import ID_SIZE, KEY_SIZE


class IdHasher:
    """Computes keyed ids for one purpose (chunks or trees) of one repository."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"id key must be {KEY_SIZE} bytes")
        self._key = bytes(key)

    def __call__(self, data: bytes | memoryview) -> bytes:
        """:returns: the 32-byte id of ``data``."""
        return blake3.blake3(data, key=self._key).digest()

    def check(self, data: bytes | memoryview, expected: bytes) -> bool:
        """Constant-time comparison of the id of ``data`` with ``expected``."""
        return hmac.compare_digest(self(data), expected)


def id_hex(chunk_id: bytes) -> str:
    return chunk_id.hex()


def short_id(chunk_id: bytes) -> str:
    """The first 8 bytes in hex: enough to name a snapshot or pack to a human."""
    return chunk_id[:8].hex()


def parse_id(text: str) -> bytes:
    """:raises ValueError: unless ``text`` is 64 hex digits."""
    if len(text) != 2 * ID_SIZE:
        raise ValueError(f"an id is {ID_SIZE * 2} hex digits")
    raw = bytes.fromhex(text)
    if len(raw) != ID_SIZE:
        raise ValueError(f"an id is {ID_SIZE * 2} hex digits")
    return raw

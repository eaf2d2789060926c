"""The sender's copy of the refs it last committed for each source, so that the next commit can send its
refs as a difference from them (PROTOCOL.md 4, REFS_BASE and DROP; version 4).

One file per source tag in the sender's cache directory, ``refs-<tag hex>.ids``:

* 8 bytes ``RPLRFC01``, 32 bytes the snapshot's digest, 32 bytes SHA-256 of the ids, then the ids
  (32 bytes each, sorted, unique).

Only a hint: a missing, damaged or other-snapshot file means the refs go whole.  A wrong file that
still parses cannot damage the repository either: the receiver checks that the difference gives the
count and the SHA-256 of the refs the sender meant (REFS_BASE), and refuses the commit otherwise.
"""
from __future__ import annotations

import hashlib
import os

from replicator.constants import ID_SIZE
from replicator.format import idlist as I
from replicator.store import atomic

MAGIC = b"RPLRFC01"
_HEADER = len(MAGIC) + 2 * ID_SIZE


class RefsCache:
    """``load(tag, digest)``, ``save(tag, digest, refs)``, ``forget(tag)`` in ``directory``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _path(self, tag: bytes) -> str:
        return os.path.join(self.directory, f"refs-{tag.hex()}.ids")

    def load(self, tag: bytes, digest: str) -> bytes | None:
        """The refs saved for ``tag`` (one buffer, 32 bytes per id) when they are those of snapshot ``digest``,
        whole and sorted, else None."""
        try:
            with open(self._path(tag), "rb") as f:
                data = f.read()
        except OSError:
            return None
        if (len(data) < _HEADER or (len(data) - _HEADER) % ID_SIZE or data[: len(MAGIC)] != MAGIC
                or data[len(MAGIC) : len(MAGIC) + ID_SIZE].hex() != digest):
            return None
        body = memoryview(data)[_HEADER:]
        if hashlib.sha256(body).digest() != data[len(MAGIC) + ID_SIZE : _HEADER]:
            return None
        if not I.is_sorted_unique(body):  # in C, on the buffer
            return None
        return bytes(body)

    def save(self, tag: bytes, digest: str, refs: I.Buffer) -> None:
        """Keep ``refs`` (one buffer, sorted, unique) as snapshot ``digest``'s; a failure to write only costs
        the next commit its difference."""
        body = I.as_buffer(refs)
        try:
            os.makedirs(self.directory, exist_ok=True)
            atomic.replace(self._path(tag), MAGIC + bytes.fromhex(digest) + hashlib.sha256(body).digest() + body)
        except OSError:
            self.forget(tag)

    def forget(self, tag: bytes) -> None:
        try:
            os.unlink(self._path(tag))
        except OSError:
            pass

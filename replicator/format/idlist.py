"""Id lists: the key-less objects ``ids/<pack hash>`` and ``refs/<snapshot hash>`` (docs/FORMAT.md).

An id list is the concatenation of 32-byte ids, nothing else: sorted and
without duplicates when this program writes it, read back in any order.

Must never: do I/O.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from replicator.constants import ID_SIZE


def encode_ids(ids: Iterable[bytes]) -> bytes:
    """:returns: the sorted, de-duplicated ids concatenated.  :raises ValueError: an id is not 32 bytes."""
    unique = sorted(set(ids))
    if any(len(i) != ID_SIZE for i in unique):
        raise ValueError("an id is not 32 bytes")
    return b"".join(unique)


def decode_ids(data: bytes | memoryview, what: str) -> Iterator[bytes]:
    """:raises ValueError: ``data`` is not a whole number of ids (the message names ``what``)."""
    if len(data) % ID_SIZE:
        raise ValueError(f"{what}: not a whole number of 32-byte ids")
    view = memoryview(data)
    for i in range(0, len(view), ID_SIZE):
        yield bytes(view[i : i + ID_SIZE])

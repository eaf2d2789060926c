"""Sorted 32-byte id buffers (built from ext/ids.pyx); the public face is replicator.format.idlist."""
from typing_extensions import Buffer  # a bytes-like object (collections.abc.Buffer on 3.12+)

def sort_unique_inplace(buf: Buffer) -> int:
    """Sort writable ``buf``'s ids in place, each once at the front; :returns: their byte length.
    :raises ValueError: not a whole number of 32-byte ids."""

def sort_unique(buf: Buffer) -> bytes:
    """The ids of ``buf`` sorted, each once.  :raises ValueError: not a whole number of 32-byte ids."""

def is_sorted_unique(buf: Buffer) -> bool:
    """Whether the ids of ``buf`` are strictly increasing.  :raises ValueError: not whole ids."""

def difference(old: Buffer, new: Buffer) -> tuple[bytes, bytes]:
    """(dropped, added) of sorted, unique ``old`` and ``new``, as sorted buffers.  :raises ValueError:"""

def apply_difference(base: Buffer, dropped: Buffer, added: Buffer) -> bytes:
    """``base`` without ``dropped``, with ``added`` (all sorted, unique).
    :raises ValueError: not whole ids, a dropped id not in ``base``, or an added one already in it."""

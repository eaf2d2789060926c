"""Id lists: the key-less objects ``ids/<pack hash>`` and ``refs/<snapshot hash>`` (docs/FORMAT.md 2.1).

An id list is a run of 32-byte ids, sorted and without duplicates when this
program writes it (a reader accepts any order).  Since list version 2 it is
preceded by a header that carries a **declaration proof**, an Ed25519
signature by the repository's signing key, which anyone can check with the
public key kept in the clear in ``keys/default``::

    magic (6: "RPLIDS" or "RPLREF") | list version u16 LE (2) | proof (64) | ids (32 each)

* ``ids/<h>``: proof over ``PACK_DOMAIN || repository id || pack SHA-256 ||
  SHA-256(ids)``: a key holder declared that this pack holds these ids.
* ``refs/<h>``: proof over ``SNAPSHOT_DOMAIN || repository id || snapshot
  SHA-256``: a key holder made this snapshot object.

A third statement is never stored: ``FORGET_DOMAIN || repository id ||
snapshot SHA-256``, a key holder's order to delete that snapshot, which a
receiver checks before a ``forget`` over ``ssh://`` deletes anything
(docs/PROTOCOL.md, FORGET).

A list without the header (version 1, release 0.2) is a *legacy* list: its
length is a multiple of 32, the header's (72) is not, so the two never look
alike.  A receiver refuses a write whose proof does not verify, and a sender
deduplicates only against lists whose proof verifies.

Must never: do I/O.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from replicator._ext import ids as _ids
from replicator.constants import HKDF_INFO_PREFIX, ID_SIZE
from replicator.core import crypto

IDS_MAGIC = b"RPLIDS"
REFS_MAGIC = b"RPLREF"
LIST_VERSION = 2
PROOF_SIZE = 64
HEADER_SIZE = len(IDS_MAGIC) + 2 + PROOF_SIZE  # 72: never a multiple of 32
PACK_DOMAIN = HKDF_INFO_PREFIX + b"declare-pack\x00"
SNAPSHOT_DOMAIN = HKDF_INFO_PREFIX + b"declare-snapshot\x00"
FORGET_DOMAIN = HKDF_INFO_PREFIX + b"forget-snapshot\x00"


Buffer = bytes | bytearray | memoryview  # ids concatenated, 32 bytes each (one object, not one per id)


def as_buffer(ids: Buffer | Iterable[bytes]) -> Buffer:
    """``ids`` as one buffer: a buffer is returned as is (a list of ids is joined, for callers that hold few).

    :raises ValueError: a buffer that is not a whole number of ids, or an id that is not 32 bytes.
    """
    if isinstance(ids, (bytes, bytearray, memoryview)):
        if len(ids) % ID_SIZE:
            raise ValueError(f"an id buffer of {len(ids)} bytes is not a whole number of 32-byte ids")
        return ids
    items = list(ids)
    if any(len(i) != ID_SIZE for i in items):
        raise ValueError("an id is not 32 bytes")
    return b"".join(items)


def id_count(buf: Buffer) -> int:
    """How many ids ``buf`` holds (its length over 32)."""
    return len(buf) // ID_SIZE


def iter_ids(buf: Buffer) -> Iterator[bytes]:
    """The ids of ``buf``, one bytes object at a time (never a list of them all)."""
    view = memoryview(buf)
    for i in range(0, len(view), ID_SIZE):
        yield bytes(view[i : i + ID_SIZE])


def is_sorted_unique(buf: Buffer) -> bool:
    """Whether the ids of ``buf`` are strictly increasing (checked in C).  :raises ValueError: not whole ids."""
    return _ids.is_sorted_unique(buf)


def sort_unique_inplace(buf: bytearray) -> bytearray:
    """Sort ``buf``'s ids in place, each once, and cut it to them.  :returns: ``buf``.  :raises ValueError:"""
    del buf[_ids.sort_unique_inplace(buf) :]
    return buf


def encode_ids(ids: Buffer | Iterable[bytes]) -> bytes:
    """:returns: the sorted, de-duplicated ids concatenated (``ids``: a buffer of them, or the ids).

    :raises ValueError: an id is not 32 bytes (a buffer is not a whole number of them).
    """
    buf = as_buffer(ids)
    if _ids.is_sorted_unique(buf):
        return bytes(buf)
    return _ids.sort_unique(buf)


def decode_ids(data: bytes | memoryview, what: str) -> Iterator[bytes]:
    """The ids of a list of either version (the proof is not checked here).

    :raises ValueError: not a well-formed list (the message names ``what``).
    """
    yield from iter_ids(parse_list(data, what).ids)


def difference(old: Buffer | Iterable[bytes], new: Buffer | Iterable[bytes]) -> tuple[bytes, bytes]:
    """(dropped, added): the ids of sorted, unique ``old`` not in ``new``, and of ``new`` not in ``old``
    (a merge of the two in one pass, in C; both come out as sorted buffers).

    :raises ValueError: a buffer is not a whole number of ids.
    """
    return _ids.difference(as_buffer(old), as_buffer(new))


def apply_difference(base: Buffer | Iterable[bytes], dropped: Buffer | Iterable[bytes],
                     added: Buffer | Iterable[bytes]) -> bytes:
    """``base`` (sorted, unique) without ``dropped``, with ``added`` (both sorted, unique), as a sorted buffer.

    :raises ValueError: a dropped id is not in ``base``, or an added one already is (a difference made
        against other refs than these), or a buffer is not a whole number of ids.
    """
    return _ids.apply_difference(as_buffer(base), as_buffer(dropped), as_buffer(added))


@dataclass(frozen=True)
class IdList:
    ids: memoryview  # the concatenated ids
    proof: bytes | None  # None: a legacy (version 1) list, without proof
    magic: bytes = b""

    @property
    def count(self) -> int:
        return len(self.ids) // ID_SIZE


def parse_list(data: bytes | memoryview, what: str) -> IdList:
    """:raises ValueError: neither a legacy list (a whole number of ids) nor a version 2 list."""
    view = memoryview(data)
    if len(view) % ID_SIZE == 0:
        return IdList(view, None)
    if len(view) < HEADER_SIZE or (len(view) - HEADER_SIZE) % ID_SIZE:
        raise ValueError(f"{what}: not a whole number of 32-byte ids")
    magic = bytes(view[:6])
    if magic not in (IDS_MAGIC, REFS_MAGIC):
        raise ValueError(f"{what}: not an id list (bad magic)")
    version = int.from_bytes(view[6:8], "little")
    if version != LIST_VERSION:
        raise ValueError(f"{what}: id list version {version} is not supported (this program reads 1 and 2)")
    return IdList(view[HEADER_SIZE:], bytes(view[8:HEADER_SIZE]), magic)


def encode_list(magic: bytes, ids_blob: bytes, proof: bytes) -> bytes:
    """A version 2 list: ``ids_blob`` is ``encode_ids(...)``, ``proof`` its declaration proof."""
    if len(proof) != PROOF_SIZE:
        raise ValueError("a declaration proof is 64 bytes")
    return magic + LIST_VERSION.to_bytes(2, "little") + proof + ids_blob


def pack_statement(repo_id: bytes, pack_digest: str, ids_blob: bytes | memoryview) -> bytes:
    """What a pack's declaration proof signs: that pack ``pack_digest`` holds exactly ``ids_blob``."""
    return PACK_DOMAIN + repo_id + bytes.fromhex(pack_digest) + hashlib.sha256(ids_blob).digest()


def snapshot_statement(repo_id: bytes, snapshot_digest: str) -> bytes:
    """What a snapshot's declaration proof signs: that a key holder made the object ``snapshot_digest``."""
    return SNAPSHOT_DOMAIN + repo_id + bytes.fromhex(snapshot_digest)


def forget_statement(repo_id: bytes, snapshot_digest: str) -> bytes:
    """What a forget proof signs: that a key holder wants snapshot ``snapshot_digest`` deleted."""
    return FORGET_DOMAIN + repo_id + bytes.fromhex(snapshot_digest)


class Declarer:
    """Signs declarations (the key holder's side)."""

    def __init__(self, repo_id: str, signer: crypto.SigningKey) -> None:
        self._repo_id = bytes.fromhex(repo_id)
        self._signer = signer

    def pack(self, pack_digest: str, ids_blob: bytes) -> bytes:
        return self._signer.sign(pack_statement(self._repo_id, pack_digest, ids_blob))

    def snapshot(self, snapshot_digest: str) -> bytes:
        return self._signer.sign(snapshot_statement(self._repo_id, snapshot_digest))

    def forget(self, snapshot_digest: str) -> bytes:
        return self._signer.sign(forget_statement(self._repo_id, snapshot_digest))


class Verifier:
    """Checks declarations with the public key alone (a receiver, or a sender reading the other site's lists)."""

    def __init__(self, repo_id: str, public_key: bytes) -> None:
        self._repo_id = bytes.fromhex(repo_id)
        self._public_key = public_key

    def pack(self, pack_digest: str, ids_blob: bytes | memoryview, proof: bytes | None) -> bool:
        return proof is not None and len(proof) == PROOF_SIZE and crypto.verify_signature(
            self._public_key, proof, pack_statement(self._repo_id, pack_digest, ids_blob))

    def snapshot(self, snapshot_digest: str, proof: bytes | None) -> bool:
        return proof is not None and len(proof) == PROOF_SIZE and crypto.verify_signature(
            self._public_key, proof, snapshot_statement(self._repo_id, snapshot_digest))

    def forget(self, snapshot_digest: str, proof: bytes | None) -> bool:
        return proof is not None and len(proof) == PROOF_SIZE and crypto.verify_signature(
            self._public_key, proof, forget_statement(self._repo_id, snapshot_digest))

    def ids_object(self, pack_digest: str, data: bytes | memoryview) -> IdList | None:
        """The parsed ``ids/`` object of ``pack_digest`` when it is a version 2 list whose proof verifies."""
        try:
            parsed = parse_list(data, f"ids/{pack_digest[:16]}")
        except ValueError:
            return None
        if parsed.magic != IDS_MAGIC or not self.pack(pack_digest, parsed.ids, parsed.proof):
            return None
        return parsed

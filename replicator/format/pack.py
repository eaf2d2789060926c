"""Packs: immutable files holding many encrypted blobs and an encrypted table.

Layout (docs/FORMAT.md "Packs")::

    +--------------------------------------------------------------+
    | magic "RPLPACK\\0" | version u16 LE | reserved u16 | salt (32) |  header, 44 bytes
    +--------------------------------------------------------------+
    | blob 0: AES-256-GCM(method u8 || payload) || tag             |
    | blob 1 ...                                                   |  no lengths in clear
    +--------------------------------------------------------------+
    | table: AES-256-GCM(count u32 LE || entries) || tag           |
    +--------------------------------------------------------------+
    | table length u32 LE | magic "RPLPEND\\0"                     |  footer, 12 bytes
    +--------------------------------------------------------------+

The pack key is HKDF(encrypt key, salt=pack salt, info="replicator/v1/pack"):
a fresh random salt per pack gives every pack its own key, so the counter
nonces inside a pack are never reused under a key, even across crashes.
A pack's object name is the SHA-256 of its bytes, so anyone (also the
secondary site without the passphrase) can check a pack is intact.
"""
from __future__ import annotations

import collections
import hashlib
import struct
from dataclasses import dataclass

from replicator import constants as C
from replicator.core import crypto
from replicator.core.compress import decompress
from replicator.core.ids import IdHasher
from replicator.errors import IntegrityError
from replicator.format import envelope

_FOOTER = struct.Struct("<I8s")
_ENTRY = struct.Struct("<B32sQII")  # type, id, offset, stored length, raw length
PACK_INFO = C.HKDF_INFO_PREFIX + b"pack"


@dataclass(frozen=True)
class BlobEntry:
    type: int
    id: bytes
    offset: int  # of the ciphertext, from the start of the pack
    length: int  # ciphertext length including the tag
    raw_len: int  # plaintext length after decompression
    seq: int  # position in the pack's table: the blob's nonce counter


def pack_name(data: bytes | bytearray) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return f"data/{digest[:2]}/{digest}"


def pack_key(encrypt_key: bytes, salt: bytes) -> crypto.Aead:
    return crypto.Aead(crypto.hkdf(encrypt_key, salt=salt, info=PACK_INFO))


def nonce(domain: int, counter: int) -> bytes:
    return struct.pack(">IQ", domain, counter)


def blob_aad(blob_type: int, blob_id: bytes) -> bytes:
    return C.BLOB_AAD_PREFIX + bytes((blob_type,)) + blob_id


class PackWriter:
    """Collects blobs for one pack; ``finish`` seals them and returns the pack.

    ``add`` only queues the (already compressed) payload, so the caller's
    thread does no encryption; ``finish`` can run on a writer thread.
    """

    def __init__(self, encrypt_key: bytes) -> None:
        self._encrypt_key = encrypt_key
        self._blobs: list[tuple[int, bytes, int, bytes, int]] = []
        self._size = C.PACK_HEADER_SIZE

    def __len__(self) -> int:
        """Approximately the pack's size so far."""
        return self._size

    @property
    def count(self) -> int:
        return len(self._blobs)

    @property
    def ids(self) -> list[bytes]:
        return [b[1] for b in self._blobs]

    def add(self, blob_type: int, blob_id: bytes, method: int, payload: bytes, raw_len: int) -> None:
        self._blobs.append((blob_type, blob_id, method, payload, raw_len))
        self._size += 1 + len(payload) + crypto.TAG_SIZE

    def finish(self) -> tuple[str, bytearray, list[BlobEntry]]:
        """Seal every blob and the table under a fresh pack key.

        The pack is sealed into one buffer of its exact size, and each payload is let go once it is
        sealed: finishing a 16 MiB pack holds about 16 MiB, not the payloads, the sealed blobs and
        their join (three copies) at once.  The caller must not modify the buffer.

        :returns: (object name, pack bytes, table entries).
        """
        salt = crypto.random_bytes(C.PACK_SALT_SIZE)
        aead = pack_key(self._encrypt_key, salt)
        blobs, self._blobs = collections.deque(self._blobs), []
        count = len(blobs)
        table_len = 4 + count * _ENTRY.size + crypto.TAG_SIZE
        size = C.PACK_HEADER_SIZE + sum(1 + len(b[3]) + crypto.TAG_SIZE for b in blobs) + table_len + _FOOTER.size
        data = bytearray(size)
        view = memoryview(data)
        view[: C.PACK_HEADER_SIZE] = envelope.make_header(C.PACK_MAGIC, salt)
        offset = C.PACK_HEADER_SIZE
        entries = []
        table = bytearray(struct.pack("<I", count))
        for seq in range(count):
            blob_type, blob_id, method, payload, raw_len = blobs.popleft()  # the payload goes once it is sealed
            sealed = aead.seal(nonce(C.NONCE_DOMAIN_BLOB, seq), bytes((method,)) + payload, blob_aad(blob_type, blob_id))
            del payload
            entry = BlobEntry(blob_type, blob_id, offset, len(sealed), raw_len, seq)
            table += _ENTRY.pack(entry.type, entry.id, entry.offset, entry.length, entry.raw_len)
            entries.append(entry)
            view[offset : offset + len(sealed)] = sealed
            offset += len(sealed)
        sealed_table = aead.seal(nonce(C.NONCE_DOMAIN_TABLE, 0), bytes(table), C.TABLE_AAD_PREFIX + salt)
        view[offset : offset + table_len] = sealed_table
        view[offset + table_len :] = _FOOTER.pack(table_len, C.PACK_FOOTER_MAGIC)
        view.release()
        return pack_name(data), data, entries


def parse_header(header: bytes, name: str) -> bytes:
    """:returns: the pack salt.  :raises IntegrityError, UnsupportedVersion:"""
    return envelope.parse_header(header, C.PACK_MAGIC, f"pack {name}")


def table_range(size: int, footer: bytes, name: str) -> tuple[int, int]:
    """Where the sealed table is, from the pack's size and its last PACK_FOOTER_SIZE bytes.

    :returns: (table offset, table length).  :raises IntegrityError: truncated or impossible.
    """
    if size < C.PACK_HEADER_SIZE + C.PACK_FOOTER_SIZE + crypto.TAG_SIZE or len(footer) != C.PACK_FOOTER_SIZE:
        raise IntegrityError(f"pack {name} is truncated")
    table_len, magic = _FOOTER.unpack(footer)
    if magic != C.PACK_FOOTER_MAGIC:
        raise IntegrityError(f"pack {name} is truncated (no footer)")
    table_start = size - C.PACK_FOOTER_SIZE - table_len
    if table_start < C.PACK_HEADER_SIZE or table_len < crypto.TAG_SIZE + 4:
        raise IntegrityError(f"pack {name} has an impossible table length")
    return table_start, table_len


def open_table(salt: bytes, sealed_table: bytes, table_start: int, name: str, encrypt_key: bytes) -> list[BlobEntry]:
    """Decrypt and validate a pack's table (docs/FORMAT.md "Packs", reader rules).

    :raises IntegrityError: tampered, foreign, overlapping or gapped blobs, an id listed twice.
    """
    try:
        table = pack_key(encrypt_key, salt).open(nonce(C.NONCE_DOMAIN_TABLE, 0), sealed_table,
                                                 C.TABLE_AAD_PREFIX + salt)
    except crypto.AuthenticationFailed:
        raise IntegrityError(f"pack {name}: table fails authentication (tampered, or another repository's key)") from None
    (count,) = struct.unpack_from("<I", table)
    if count > C.PACK_MAX_BLOBS or len(table) != 4 + count * _ENTRY.size:
        raise IntegrityError(f"pack {name}: table has an impossible size")
    entries = []
    seen: set[bytes] = set()
    expect = C.PACK_HEADER_SIZE
    for i in range(count):
        t, blob_id, offset, length, raw_len = _ENTRY.unpack_from(table, 4 + i * _ENTRY.size)
        if t not in C.BLOB_TYPES or offset != expect or length < crypto.TAG_SIZE + 1 or raw_len > C.MAX_BLOB_SIZE:
            raise IntegrityError(f"pack {name}: table entry {i} is inconsistent")
        if blob_id in seen:
            raise IntegrityError(f"pack {name}: table lists blob {blob_id.hex()[:16]} twice")
        seen.add(blob_id)
        expect = offset + length
        entries.append(BlobEntry(t, blob_id, offset, length, raw_len, i))
    if expect != table_start:
        raise IntegrityError(f"pack {name}: blobs do not fill the pack")
    return entries


def read_table(data: bytes, name: str, encrypt_key: bytes) -> list[BlobEntry]:
    """Decrypt and validate the table of a whole pack held in ``data``.

    :raises IntegrityError: on any inconsistency (truncation, tampering, overlapping blobs).
    """
    salt = parse_header(data, name)
    start, length = table_range(len(data), data[-C.PACK_FOOTER_SIZE:], name)
    return open_table(salt, data[start : start + length], start, name, encrypt_key)


def open_blob(aead: crypto.Aead, entry: BlobEntry, sealed: bytes, hasher: IdHasher, where: str) -> bytes:
    """Authenticate, decompress (capped at raw_len) and check the id of one blob.

    :raises IntegrityError:
    """
    try:
        plain = aead.open(nonce(C.NONCE_DOMAIN_BLOB, entry.seq), sealed, blob_aad(entry.type, entry.id))
    except crypto.AuthenticationFailed:
        raise IntegrityError(f"blob {entry.id.hex()[:16]} in {where} fails authentication") from None
    try:
        data = decompress(plain[0], memoryview(plain)[1:], entry.raw_len)
    except (ValueError, IndexError) as exc:
        raise IntegrityError(f"blob {entry.id.hex()[:16]} in {where}: {exc}") from None
    if not hasher.check(data, entry.id):
        raise IntegrityError(f"blob {entry.id.hex()[:16]} in {where} does not match its id")
    return data

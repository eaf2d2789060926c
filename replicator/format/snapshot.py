"""Snapshot roots: signed, encrypted records naming a source's tree at a time.

Object ``snapshots/<sha256 of the object>`` (docs/FORMAT.md "Snapshots")::

    magic "RPLSNAP\\0" | version u16 LE | reserved u16 | salt (32) | AES-256-GCM(document) || tag

The key is HKDF(encrypt key, salt, info="replicator/v1/snapshot"), fresh per
object, so the all-zero nonce is used once per key.  The AAD is
SNAPSHOT_AAD_PREFIX || the 44-byte header.  The document is canonical JSON
``{"body": {...}, "signature": hex}``, the signature being Ed25519 over the
canonical JSON of ``body``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from replicator import constants as C
from replicator.core import crypto
from replicator.errors import IntegrityError, UnsupportedVersion
from replicator.format import envelope

SNAPSHOT_INFO = C.HKDF_INFO_PREFIX + b"snapshot"
ZERO_NONCE = bytes(crypto.NONCE_SIZE)


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class Snapshot:
    id: str  # hex sha256 of the stored object
    repository: str
    source: str
    generation: int
    time_ns: int
    tree: bytes
    hostname: str
    stats: dict = field(default_factory=dict)
    parent: str | None = None

    @property
    def short_id(self) -> str:
        return self.id[:16]

    def body(self) -> dict:
        return {
            "version": C.FORMAT_VERSION_CURRENT,
            "repository": self.repository,
            "source": self.source,
            "generation": self.generation,
            "time_ns": self.time_ns,
            "tree": self.tree.hex(),
            "hostname": self.hostname,
            "stats": self.stats,
            "parent": self.parent,
        }


def seal_snapshot(snap: Snapshot, encrypt_key: bytes, signer: crypto.SigningKey) -> tuple[str, bytes]:
    """:returns: (object name, object bytes).  ``snap.id`` is ignored."""
    body = snap.body()
    doc = canonical_json({"body": body, "signature": signer.sign(canonical_json(body)).hex()})
    if len(doc) > C.MAX_SNAPSHOT_SIZE:
        raise ValueError("snapshot document too large")
    salt = crypto.random_bytes(32)
    header = envelope.make_header(C.SNAPSHOT_MAGIC, salt)
    aead = crypto.Aead(crypto.hkdf(encrypt_key, salt=salt, info=SNAPSHOT_INFO))
    data = header + aead.seal(ZERO_NONCE, doc, C.SNAPSHOT_AAD_PREFIX + header)
    return "snapshots/" + hashlib.sha256(data).hexdigest(), data


def open_snapshot(name: str, data: bytes, encrypt_key: bytes, public_key: bytes, repo_id: str) -> Snapshot:
    """Authenticate, decrypt, check the signature and fields of a snapshot object.

    :raises IntegrityError: tampered, truncated, foreign or badly signed.
    """
    snap_id = name.rsplit("/", 1)[-1]
    if len(data) > C.MAX_SNAPSHOT_SIZE + 1024:
        raise IntegrityError(f"snapshot {snap_id[:16]} is impossibly large")
    if hashlib.sha256(data).hexdigest() != snap_id:
        raise IntegrityError(f"snapshot {snap_id[:16]}: content does not match its name")
    if len(data) < envelope.HEADER_SIZE + crypto.TAG_SIZE:
        raise IntegrityError(f"snapshot {snap_id[:16]} is truncated")
    salt = envelope.parse_header(data, C.SNAPSHOT_MAGIC, f"snapshot {snap_id[:16]}")
    header = data[: envelope.HEADER_SIZE]
    aead = crypto.Aead(crypto.hkdf(encrypt_key, salt=salt, info=SNAPSHOT_INFO))
    try:
        doc = json.loads(aead.open(ZERO_NONCE, data[envelope.HEADER_SIZE :], C.SNAPSHOT_AAD_PREFIX + header))
        body = doc["body"]
        signature = bytes.fromhex(doc["signature"])
    except crypto.AuthenticationFailed:
        raise IntegrityError(f"snapshot {snap_id[:16]} fails authentication") from None
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"snapshot {snap_id[:16]}: document is malformed") from None
    if not crypto.verify_signature(public_key, signature, canonical_json(body)):
        raise IntegrityError(f"snapshot {snap_id[:16]}: signature does not verify")
    try:
        if body["repository"] != repo_id:
            raise IntegrityError(f"snapshot {snap_id[:16]} belongs to another repository")
        if type(body["version"]) is not int or not C.FORMAT_VERSION_MIN <= body["version"] <= C.FORMAT_VERSION_MAX:
            raise UnsupportedVersion(f"snapshot {snap_id[:16]}", body["version"], C.FORMAT_VERSION_MIN,
                                     C.FORMAT_VERSION_MAX)
        tree = bytes.fromhex(body["tree"])
        if len(tree) != C.ID_SIZE or type(body["generation"]) is not int or body["generation"] < 1:
            raise ValueError
        if type(body["time_ns"]) is not int or not isinstance(body["source"], str):
            raise ValueError
        if body.get("parent") is not None and not isinstance(body["parent"], str):
            raise ValueError
        return Snapshot(
            id=snap_id,
            repository=body["repository"],
            source=str(body["source"]),
            generation=int(body["generation"]),
            time_ns=int(body["time_ns"]),
            tree=tree,
            hostname=str(body["hostname"]),
            stats=dict(body.get("stats") or {}),
            parent=body.get("parent"),
        )
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"snapshot {snap_id[:16]}: fields are malformed") from None

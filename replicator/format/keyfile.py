"""Key material: the passphrase-wrapped master key and the subkeys derived from it.

Key file (object ``keys/<name>``, JSON, see docs/FORMAT.md "Key files"): the
32-byte master key sealed with AES-256-GCM under scrypt(passphrase).  All
working keys are HKDF-SHA256 subkeys of the master key, one per purpose, with
the repository id as salt, so that keys of two repositories never coincide
and no key serves two purposes.

Since 0.4 a key file is one *key slot* of several (repo/keys.py) and may carry
clear, unauthenticated labels (``name``, ``created_by``, ``created``,
``changed_by``, ``changed``): ``slot_info`` reads them; key files without
them (0.1 to 0.3) stay valid, and readers of those releases ignore them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from replicator import constants as C
from replicator.core import crypto
from replicator.errors import IntegrityError, UnsupportedVersion, WrongPassphrase
from replicator.times import parse_rfc3339

# Purposes (HKDF info = HKDF_INFO_PREFIX + purpose).  Never reuse a purpose string.
PURPOSE_CHUNK_ID = b"chunk-id"
PURPOSE_TREE_ID = b"tree-id"
PURPOSE_GEAR = b"gear"
PURPOSE_ENCRYPT = b"encrypt"
PURPOSE_SIGN = b"sign"
PURPOSE_PREFILTER = b"prefilter"
PURPOSE_SOURCE_TAG = b"source-tag"  # the clear tag naming a source at the receiver (heads/), since 0.4


@dataclass(frozen=True)
class KeySet:
    """The working keys of one repository, derived from its master key."""

    chunk_id: bytes
    tree_id: bytes
    gear: bytes
    encrypt: bytes
    sign_seed: bytes
    prefilter: bytes
    source_tag: bytes

    @classmethod
    def derive(cls, master: bytes, repo_id: bytes) -> KeySet:
        def sub(purpose: bytes) -> bytes:
            return crypto.hkdf(master, salt=repo_id, info=C.HKDF_INFO_PREFIX + purpose)

        return cls(
            chunk_id=sub(PURPOSE_CHUNK_ID),
            tree_id=sub(PURPOSE_TREE_ID),
            gear=sub(PURPOSE_GEAR),
            encrypt=sub(PURPOSE_ENCRYPT),
            sign_seed=sub(PURPOSE_SIGN),
            prefilter=sub(PURPOSE_PREFILTER),
            source_tag=sub(PURPOSE_SOURCE_TAG),
        )


def _wrap_aad(repo_id: bytes) -> bytes:
    return C.KEY_AAD_PREFIX + repo_id


SLOT_LABELS = ("name", "created_by", "created", "changed_by", "changed")  # clear, informational, optional
_TIME_LABELS = ("created", "changed")


def make_keyfile(master: bytes, repo_id: bytes, passphrase: bytes, log2n: int,
                 labels: dict[str, str] | None = None) -> bytes:
    """:param labels: the slot's labels (``SLOT_LABELS``), written beside the seal; none: a 0.3 key file.
    :returns: the JSON key file sealing ``master`` under ``passphrase``."""
    if not C.SCRYPT_LOG2N_MIN <= log2n <= C.SCRYPT_LOG2N_MAX:
        raise ValueError(f"scrypt work factor must be {C.SCRYPT_LOG2N_MIN}..{C.SCRYPT_LOG2N_MAX}")
    salt = crypto.random_bytes(32)
    nonce = crypto.random_bytes(crypto.NONCE_SIZE)
    kek = crypto.scrypt(passphrase, salt, log2n, C.SCRYPT_R, C.SCRYPT_P)
    sealed = crypto.Aead(kek).seal(nonce, master, _wrap_aad(repo_id))
    signing = crypto.SigningKey(KeySet.derive(master, repo_id).sign_seed)
    doc = {
        "magic": C.KEYFILE_MAGIC,
        "version": C.FORMAT_VERSION_CURRENT,
        "kdf": {"name": "scrypt", "log2n": log2n, "r": C.SCRYPT_R, "p": C.SCRYPT_P, "salt": salt.hex()},
        "aead": "aes-256-gcm",
        "nonce": nonce.hex(),
        "sealed_master_key": sealed.hex(),
        "signing_public_key": signing.public_bytes().hex(),
    }
    for label, value in (labels or {}).items():
        if label not in SLOT_LABELS or not isinstance(value, str):
            raise ValueError(f"bad key slot label {label!r}")
        doc[label] = value
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def parse_keyfile(data: bytes) -> dict:
    """:raises IntegrityError: when the key file is not a well-formed key file."""
    try:
        doc = json.loads(data)
        kdf = doc["kdf"]
        if doc["magic"] != C.KEYFILE_MAGIC or kdf["name"] != "scrypt" or doc["aead"] != "aes-256-gcm":
            raise ValueError("unknown key file kind")
        version = doc["version"]
        if type(version) is not int:
            raise ValueError("version is not an integer")
        for name in ("log2n", "r", "p"):
            if type(kdf[name]) is not int:
                raise ValueError(f"scrypt {name} is not an integer")
        if not C.SCRYPT_LOG2N_MIN <= kdf["log2n"] <= C.SCRYPT_LOG2N_MAX:
            raise ValueError("scrypt work factor out of range")
        # Only the parameters this program writes: a tampered key file must not
        # be able to ask for gigabytes of scrypt memory.
        if kdf["r"] != C.SCRYPT_R or kdf["p"] != C.SCRYPT_P:
            raise ValueError("scrypt parameters out of range")
        lengths = {"nonce": 12, "sealed_master_key": C.KEY_SIZE + 16, "signing_public_key": 32}
        for field, size in lengths.items():
            if len(bytes.fromhex(doc[field])) != size:
                raise ValueError(f"{field} has the wrong length")
        if len(bytes.fromhex(kdf["salt"])) != 32:
            raise ValueError("salt has the wrong length")
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"key file is damaged: {exc}") from None
    if not C.FORMAT_VERSION_MIN <= version <= C.FORMAT_VERSION_MAX:
        raise UnsupportedVersion("key file", version, C.FORMAT_VERSION_MIN, C.FORMAT_VERSION_MAX)
    return doc


def unlock(data: bytes, repo_id: bytes, passphrase: bytes, location: str) -> bytes:
    """:returns: the master key.  :raises WrongPassphrase: when it does not open."""
    doc = parse_keyfile(data)
    kdf = doc["kdf"]
    kek = crypto.scrypt(passphrase, bytes.fromhex(kdf["salt"]), int(kdf["log2n"]), int(kdf["r"]), int(kdf["p"]))
    try:
        master = crypto.Aead(kek).open(
            bytes.fromhex(doc["nonce"]), bytes.fromhex(doc["sealed_master_key"]), _wrap_aad(repo_id)
        )
    except crypto.AuthenticationFailed:
        raise WrongPassphrase(location) from None
    public = crypto.SigningKey(KeySet.derive(master, repo_id).sign_seed).public_bytes()
    if public.hex() != doc["signing_public_key"]:
        raise IntegrityError("key file's signing public key does not match its master key")
    return master


def slot_info(doc: dict, max_length: int) -> dict[str, str | None]:
    """The labels of a parsed key file (None where absent, as in key files before 0.4).

    :raises IntegrityError: a label that is not a string of at most ``max_length`` characters,
        or a time that is not RFC 3339.
    """
    info: dict[str, str | None] = {}
    for label in SLOT_LABELS:
        value = doc.get(label)
        if value is not None:
            if not isinstance(value, str) or not value or len(value) > max_length or not value.isprintable():
                raise IntegrityError(f"key file is damaged: {label} is not a short printable string")
            if label in _TIME_LABELS:
                try:
                    parse_rfc3339(value)
                except ValueError:
                    raise IntegrityError(f"key file is damaged: {label} is not an RFC 3339 time") from None
        info[label] = value
    return info

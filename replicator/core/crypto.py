"""Cryptography: AEAD, key derivation, signatures, passphrase hashing.

The only module that imports ``cryptography``.  Nothing here implements a
primitive; it names the constructions replicator uses and fixes their
parameters:

* AEAD: AES-256-GCM, 96-bit nonces.  Nonce uniqueness is the caller's duty
  and is guaranteed by construction (docs/FORMAT.md, "Nonces"): every pack and
  snapshot object uses a fresh random 256-bit salt from which a one-off key is
  derived, and nonces inside that key's lifetime are counters.
* Subkeys: HKDF-SHA256.
* Signatures: Ed25519.
* Passphrase: scrypt.
"""
from __future__ import annotations

import os

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from replicator.constants import KEY_SIZE

NONCE_SIZE = 12
TAG_SIZE = 16


class AuthenticationFailed(Exception):
    """Ciphertext, nonce, key or associated data do not match (tampering or the wrong key)."""


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def hkdf(key: bytes, salt: bytes, info: bytes, length: int = KEY_SIZE) -> bytes:
    """HKDF-SHA256(key, salt, info) -> ``length`` bytes."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)


def scrypt(passphrase: bytes, salt: bytes, log2n: int, r: int, p: int) -> bytes:
    """scrypt(passphrase, salt, N=2**log2n, r, p) -> 32 bytes."""
    return Scrypt(salt=salt, length=KEY_SIZE, n=1 << log2n, r=r, p=p).derive(passphrase)


class Aead:
    """AES-256-GCM under one key."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("AEAD key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, nonce: bytes, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        """:returns: ciphertext || 16-byte tag."""
        return self._aead.encrypt(nonce, plaintext, aad)

    def open(self, nonce: bytes, ciphertext: bytes | memoryview, aad: bytes) -> bytes:
        """:raises AuthenticationFailed: when the tag does not verify."""
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise AuthenticationFailed() from None


class SigningKey:
    """Ed25519 private key built from a 32-byte seed."""

    __slots__ = ("_key",)

    def __init__(self, seed: bytes) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(seed)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def public_bytes(self) -> bytes:
        return self._key.public_key().public_bytes(
            encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
        )


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """:returns: True when ``signature`` is a valid Ed25519 signature of ``message``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True

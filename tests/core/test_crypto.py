"""crypto: AEAD, HKDF, Ed25519, scrypt wrappers."""
from __future__ import annotations

import pytest

from replicator.core import crypto

KEY = bytes(range(32))
NONCE = bytes(12)


def test_aead_round_trip():
    a = crypto.Aead(KEY)
    sealed = a.seal(NONCE, b"secret record", b"aad")
    assert len(sealed) == len(b"secret record") + crypto.TAG_SIZE
    assert b"secret record" not in sealed
    assert a.open(NONCE, sealed, b"aad") == b"secret record"


@pytest.mark.parametrize("change", ["aad", "nonce", "key", "ciphertext", "tag", "truncate"])
def test_aead_detects_any_change(change):
    a = crypto.Aead(KEY)
    sealed = bytearray(a.seal(NONCE, b"secret record", b"aad"))
    aad, nonce, opener = b"aad", NONCE, a
    if change == "aad":
        aad = b"aae"
    elif change == "nonce":
        nonce = b"\x00" * 11 + b"\x01"
    elif change == "key":
        opener = crypto.Aead(bytes(32))
    elif change == "ciphertext":
        sealed[0] ^= 1
    elif change == "tag":
        sealed[-1] ^= 0x80
    else:
        sealed = sealed[:-1]
    with pytest.raises(crypto.AuthenticationFailed):
        opener.open(nonce, bytes(sealed), aad)


@pytest.mark.parametrize("n", [0, 16, 31, 33])
def test_aead_key_size(n):
    with pytest.raises(ValueError):
        crypto.Aead(bytes(n))


def test_hkdf_deterministic_and_separated():
    a = crypto.hkdf(KEY, salt=b"s", info=b"one")
    assert a == crypto.hkdf(KEY, salt=b"s", info=b"one")
    assert len(a) == 32
    assert a != crypto.hkdf(KEY, salt=b"s", info=b"two")
    assert a != crypto.hkdf(KEY, salt=b"t", info=b"one")
    assert a != crypto.hkdf(bytes(32), salt=b"s", info=b"one")
    assert len(crypto.hkdf(KEY, b"s", b"one", length=64)) == 64


def test_hkdf_known_answer():
    # RFC 5869 test case 1: pins the construction (SHA-256, salt/info roles).
    ikm = bytes.fromhex("0b" * 22)
    okm = crypto.hkdf(ikm, salt=bytes.fromhex("000102030405060708090a0b0c"),
                      info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"), length=42)
    assert okm.hex() == ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                         "34007208d5b887185865")


def test_scrypt_deterministic():
    a = crypto.scrypt(b"pw", b"salt", 10, 8, 1)
    assert a == crypto.scrypt(b"pw", b"salt", 10, 8, 1)
    assert len(a) == 32
    assert a != crypto.scrypt(b"pw2", b"salt", 10, 8, 1)
    assert a != crypto.scrypt(b"pw", b"salu", 10, 8, 1)


def test_ed25519_sign_verify():
    key = crypto.SigningKey(bytes(range(32)))
    pub = key.public_bytes()
    assert len(pub) == 32
    sig = key.sign(b"snapshot body")
    assert crypto.verify_signature(pub, sig, b"snapshot body")
    assert not crypto.verify_signature(pub, sig, b"snapshot bodY")
    bad = bytearray(sig)
    bad[5] ^= 1
    assert not crypto.verify_signature(pub, bytes(bad), b"snapshot body")
    other = crypto.SigningKey(bytes(32)).public_bytes()
    assert not crypto.verify_signature(other, sig, b"snapshot body")


def test_ed25519_deterministic_from_seed():
    assert crypto.SigningKey(KEY).public_bytes() == crypto.SigningKey(KEY).public_bytes()
    assert crypto.SigningKey(KEY).public_bytes() != crypto.SigningKey(bytes(32)).public_bytes()


@pytest.mark.parametrize("pub", [b"", b"\x01" * 31, b"\x01" * 33])
def test_verify_signature_malformed_public_key_is_false(pub):
    assert crypto.verify_signature(pub, bytes(64), b"m") is False


def test_random_bytes():
    a, b = crypto.random_bytes(32), crypto.random_bytes(32)
    assert len(a) == 32 and a != b

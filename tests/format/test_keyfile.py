"""Key files and subkey derivation."""
from __future__ import annotations

import json
import os

import pytest

from replicator import constants as C
from replicator.errors import IntegrityError, UnsupportedVersion, WrongPassphrase
from replicator.format import keyfile as K

MASTER = bytes(range(32))
REPO = bytes(range(100, 132))
LOG2N = C.SCRYPT_LOG2N_MIN


@pytest.fixture(scope="module")
def keyfile() -> bytes:
    return K.make_keyfile(MASTER, REPO, b"pw", LOG2N)


def mutate(data: bytes, fn) -> bytes:
    doc = json.loads(data)
    fn(doc)
    return json.dumps(doc).encode()


def test_round_trip(keyfile):
    assert K.unlock(keyfile, REPO, b"pw", "here") == MASTER
    doc = json.loads(keyfile)
    assert doc["magic"] == C.KEYFILE_MAGIC
    assert doc["kdf"]["log2n"] == LOG2N
    assert MASTER.hex() not in keyfile.decode()


def test_keyfiles_are_salted():
    a = json.loads(K.make_keyfile(MASTER, REPO, b"pw", LOG2N))
    b = json.loads(K.make_keyfile(MASTER, REPO, b"pw", LOG2N))
    assert a["kdf"]["salt"] != b["kdf"]["salt"]
    assert a["sealed_master_key"] != b["sealed_master_key"]
    assert a["signing_public_key"] == b["signing_public_key"]


def test_wrong_passphrase(keyfile):
    with pytest.raises(WrongPassphrase) as info:
        K.unlock(keyfile, REPO, b"pW", "/srv/repo")
    assert "/srv/repo" in str(info.value)


def test_other_repository_id(keyfile):
    with pytest.raises(WrongPassphrase):
        K.unlock(keyfile, bytes(32), b"pw", "here")


def test_other_sealed_key_with_matching_public_key_refused(keyfile):
    """A master key swapped in (sealed under the right passphrase) but not matching the public key."""
    other = json.loads(K.make_keyfile(os.urandom(32), REPO, b"pw", LOG2N))
    doc = json.loads(keyfile)
    other["signing_public_key"] = doc["signing_public_key"]
    with pytest.raises(IntegrityError):
        K.unlock(json.dumps(other).encode(), REPO, b"pw", "here")


@pytest.mark.parametrize("log2n", [C.SCRYPT_LOG2N_MIN - 1, C.SCRYPT_LOG2N_MAX + 1, 0])
def test_make_keyfile_refuses_work_factor(log2n):
    with pytest.raises(ValueError):
        K.make_keyfile(MASTER, REPO, b"pw", log2n)


DAMAGE = {
    "not-json": lambda d: None,  # replaced below
    "magic": lambda d: d.__setitem__("magic", "other-key"),
    "kdf-name": lambda d: d["kdf"].__setitem__("name", "argon2"),
    "aead": lambda d: d.__setitem__("aead", "chacha20"),
    "no-kdf": lambda d: d.pop("kdf"),
    "no-magic": lambda d: d.pop("magic"),
    "no-nonce": lambda d: d.pop("nonce"),
    "no-sealed": lambda d: d.pop("sealed_master_key"),
    "no-public": lambda d: d.pop("signing_public_key"),
    "no-salt": lambda d: d["kdf"].pop("salt"),
    "no-log2n": lambda d: d["kdf"].pop("log2n"),
    "bad-hex-nonce": lambda d: d.__setitem__("nonce", "zz"),
    "bad-hex-salt": lambda d: d["kdf"].__setitem__("salt", "0g"),
    "bad-hex-sealed": lambda d: d.__setitem__("sealed_master_key", "abc"),
    "log2n-low": lambda d: d["kdf"].__setitem__("log2n", C.SCRYPT_LOG2N_MIN - 1),
    "log2n-high": lambda d: d["kdf"].__setitem__("log2n", 40),
    "log2n-text": lambda d: d["kdf"].__setitem__("log2n", "many"),
    "r-high": lambda d: d["kdf"].__setitem__("r", 1 << 20),
    "p-high": lambda d: d["kdf"].__setitem__("p", 1 << 20),
    "kdf-not-object": lambda d: d.__setitem__("kdf", [1, 2]),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_keyfile(keyfile, case):
    data = b"{not json" if case == "not-json" else mutate(keyfile, DAMAGE[case])
    with pytest.raises(IntegrityError):
        K.parse_keyfile(data)
    with pytest.raises(IntegrityError):
        K.unlock(data, REPO, b"pw", "here")


@pytest.mark.parametrize("data", [b"", b"[]", b"null", b"\"key\"", b"\xff\xfe", b"{}"])
def test_not_a_keyfile(data):
    with pytest.raises(IntegrityError):
        K.unlock(data, REPO, b"pw", "here")


LOW_PARAMS = {
    "r-zero": lambda d: d["kdf"].__setitem__("r", 0),
    "p-zero": lambda d: d["kdf"].__setitem__("p", 0),
    "r-negative": lambda d: d["kdf"].__setitem__("r", -1),
    "nonce-too-short": lambda d: d.__setitem__("nonce", "00"),
}


@pytest.mark.parametrize("case", sorted(LOW_PARAMS))
def test_damaged_keyfile_low_params(keyfile, case):
    with pytest.raises(IntegrityError):
        K.unlock(mutate(keyfile, LOW_PARAMS[case]), REPO, b"pw", "here")


def test_keyfile_of_unknown_version_refused(keyfile):
    with pytest.raises((UnsupportedVersion, IntegrityError)):
        K.unlock(mutate(keyfile, lambda d: d.__setitem__("version", 99)), REPO, b"pw", "here")


def test_keyset_purposes_are_distinct():
    ks = K.KeySet.derive(MASTER, REPO)
    values = [ks.chunk_id, ks.tree_id, ks.gear, ks.encrypt, ks.sign_seed, ks.prefilter]
    assert all(len(v) == 32 for v in values)
    assert len(set(values)) == len(values)
    assert MASTER not in values


def test_keyset_deterministic_and_per_repository():
    a = K.KeySet.derive(MASTER, REPO)
    assert a == K.KeySet.derive(MASTER, REPO)
    b = K.KeySet.derive(MASTER, bytes(32))
    c = K.KeySet.derive(bytes(32), REPO)
    for field in ("chunk_id", "tree_id", "gear", "encrypt", "sign_seed", "prefilter", "source_tag"):
        assert getattr(a, field) != getattr(b, field)
        assert getattr(a, field) != getattr(c, field)


def test_purpose_strings_unique():
    purposes = [v for k, v in vars(K).items() if k.startswith("PURPOSE_")]
    assert len(purposes) == len(set(purposes)) == 7

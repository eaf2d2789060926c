"""ids: keyed BLAKE3 ids, constant-time check, hex forms."""
from __future__ import annotations

import blake3
import pytest

from replicator.core.ids import IdHasher, id_hex, parse_id, short_id

K1 = bytes(range(32))
K2 = bytes(range(1, 33))


def test_id_is_keyed_blake3():
    h = IdHasher(K1)
    assert h(b"data") == blake3.blake3(b"data", key=K1).digest()
    assert len(h(b"data")) == 32


def test_different_keys_different_ids():
    assert IdHasher(K1)(b"data") != IdHasher(K2)(b"data")
    assert IdHasher(K1)(b"data") != blake3.blake3(b"data").digest()


def test_deterministic_and_content_sensitive():
    h = IdHasher(K1)
    assert h(b"data") == h(memoryview(b"data"))
    assert h(b"data") != h(b"datb")


def test_check():
    h = IdHasher(K1)
    good = h(b"data")
    assert h.check(b"data", good)
    assert not h.check(b"datb", good)
    assert not h.check(b"data", good[:-1] + bytes((good[-1] ^ 1,)))
    assert not h.check(b"data", IdHasher(K2)(b"data"))


@pytest.mark.parametrize("n", [0, 16, 31, 33, 64])
def test_key_size(n):
    with pytest.raises(ValueError):
        IdHasher(bytes(n))


def test_hex_forms():
    i = bytes(range(32))
    assert id_hex(i) == i.hex()
    assert short_id(i) == i[:8].hex() and len(short_id(i)) == 16
    assert parse_id(i.hex()) == i
    assert parse_id(i.hex().upper()) == i


@pytest.mark.parametrize("text", ["", "00", "0" * 62, "0" * 66, "g" * 64, "0" * 63, " " + "0" * 63])
def test_parse_id_rejects(text):
    with pytest.raises(ValueError):
        parse_id(text)

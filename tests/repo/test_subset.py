"""verify --read-data-subset: a secondary that acknowledged packs it does not hold, holds damaged ones, or
declares chunks a pack does not hold, is caught by reading a sample back with the key (0.1.0: exit 0)."""
from __future__ import annotations

import random

import pytest

from replicator import constants as C
from replicator.format import layout as L
from replicator.repo.local_sink import LocalSink
from replicator.repo.repository import Repository
from replicator.repo.subset import parse_subset, verify_subset
from tests.conftest import sync_repo

PW = b"pw"


@pytest.fixture
def secondary(tmp_path):
    path = tmp_path / "secondary"
    src = tmp_path / "src"
    src.mkdir()
    rnd = random.Random(8)
    for i in range(6):
        (src / f"scan-{i}.dcm").write_bytes(rnd.randbytes(600_000))
    with Repository.init(str(path), PW, log2n=C.SCRYPT_LOG2N_MIN) as repo:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(C, "PACK_TARGET_SIZE", 1 << 20)  # several packs from a small tree
            sync_repo(str(src), repo, "ward")
    return path


def _check(path, **kw):
    with Repository.open(str(path), PW) as repo, LocalSink.open(str(path), writable=False, untrusted=True) as sink:
        return verify_subset(repo.keyring, sink, **kw)


def test_a_clean_secondary_passes_and_the_sample_is_bounded(secondary):
    full = _check(secondary, share=1.0)
    assert full.ok and full.packs_checked == full.packs_total >= 3
    one = _check(secondary, count=1, rng=random.Random(1))
    assert one.ok and one.packs_checked == 1


def test_a_damaged_pack_is_caught(secondary):
    victim = sorted((secondary / "data").rglob("*/*"))[0]
    data = bytearray(victim.read_bytes())
    data[100] ^= 1
    victim.write_bytes(bytes(data))
    report = _check(secondary, share=1.0)
    assert not report.ok and any("does not match its name" in p for p in report.problems)


def test_an_id_list_declaring_chunks_the_pack_does_not_hold_is_caught(secondary):
    ids = sorted((secondary / "ids").iterdir())[0]
    ids.write_bytes(ids.read_bytes() + b"\xee" * 32)  # a lying declaration
    report = _check(secondary, share=1.0)
    assert any("declares 1 chunk(s) the pack does not hold" in p for p in report.problems), report.problems


class Pretender(LocalSink):
    """A secondary that lists a pack it never stored (it acknowledged the upload and dropped it)."""

    def list(self, prefix):
        names = super().list(prefix)
        return names + [L.pack_name("ab" * 32)] if prefix == L.PACKS else names


def test_a_listed_pack_that_is_not_held_is_caught(secondary):
    with Repository.open(str(secondary), PW) as repo:
        sink = Pretender(repo.storage, writable=False)
        report = verify_subset(repo.keyring, sink, share=1.0)
    assert any("listed but not held" in p for p in report.problems)


@pytest.mark.parametrize("text,expected", [("5%", (0.05, None)), ("100%", (1.0, None)), ("20", (None, 20))])
def test_parse_subset(text, expected):
    assert parse_subset(text) == expected


@pytest.mark.parametrize("bad", ["0%", "101%", "0", "-3", "many"])
def test_parse_subset_refuses(bad):
    with pytest.raises(ValueError):
        parse_subset(bad)

"""Key slots: several passphrases, each in its own object keys/<name>, sealing one master key."""
from __future__ import annotations

import json
import os

import pytest

from replicator import constants as C
from replicator.core import crypto
from replicator.errors import IntegrityError, ReplicatorError, StorageError, UsageError, WrongPassphrase
from replicator.format import keyfile as K
from replicator.repo import keys as S
from replicator.repo.repository import Repository
from replicator.times import parse_rfc3339

PW, ALICE, BOB = b"pw", b"alice's passphrase", b"bob's passphrase"
LOG2N = C.SCRYPT_LOG2N_MIN


@pytest.fixture
def repo_path(tmp_path):
    path = tmp_path / "repo"
    Repository.init(str(path), PW, log2n=LOG2N).close()
    return path


def slots(path) -> S.KeySlots:
    return S.KeySlots.open(str(path))


def add(path, name, passphrase, *, unlock_with=PW, **kw) -> S.KeySlot:
    ks = slots(path)
    return ks.add(ks.unlock(unlock_with), name, passphrase, **kw)


def key_doc(path, name="default") -> dict:
    return json.loads((path / "keys" / name).read_bytes())


def opens_with(path, passphrase, key=None) -> str:
    with Repository.open(str(path), passphrase, key=key) as repo:
        return repo.key_slot


# --- what init and add write -------------------------------------------------------
def test_init_writes_the_default_slot_with_who_and_when(repo_path):
    doc = key_doc(repo_path)
    assert doc["name"] == "default"
    user, _, host = doc["created_by"].partition("@")
    assert user and host
    assert doc["created"].endswith("Z") and abs(parse_rfc3339(doc["created"]) - __import__("time").time()) < 60
    assert opens_with(repo_path, PW) == "default"


def test_added_slot_is_its_own_object_sealing_the_same_master_key(repo_path):
    slot = add(repo_path, "alice", ALICE)
    assert slot.name == "alice" and slot.object == "keys/alice"
    doc, default = key_doc(repo_path, "alice"), key_doc(repo_path)
    assert doc["name"] == "alice" and "@" in doc["created_by"] and parse_rfc3339(doc["created"])
    assert doc["signing_public_key"] == default["signing_public_key"]  # the same master key
    assert doc["kdf"]["salt"] != default["kdf"]["salt"] and doc["sealed_master_key"] != default["sealed_master_key"]
    with Repository.open(str(repo_path), PW) as a, Repository.open(str(repo_path), ALICE) as b:
        assert a.keys == b.keys and a.id == b.id


def test_open_with_each_slot_says_which_matched(repo_path):
    add(repo_path, "alice", ALICE)
    add(repo_path, "bob", BOB, unlock_with=ALICE)  # any slot's holder may add one
    assert opens_with(repo_path, PW) == "default"
    assert opens_with(repo_path, ALICE) == "alice"
    assert opens_with(repo_path, BOB) == "bob"
    listing = slots(repo_path).listing()
    assert [s.name for s in listing.slots] == ["default", "alice", "bob"] and not listing.damaged


def test_named_slot_is_the_only_one_tried(repo_path, monkeypatch):
    add(repo_path, "alice", ALICE)
    add(repo_path, "bob", BOB)
    runs = []
    real = crypto.scrypt
    monkeypatch.setattr(crypto, "scrypt", lambda *a: runs.append(a) or real(*a))
    assert opens_with(repo_path, BOB, key="bob") == "bob"
    assert len(runs) == 1
    with pytest.raises(WrongPassphrase):  # alice's passphrase is not bob's
        opens_with(repo_path, ALICE, key="bob")
    assert len(runs) == 2
    with pytest.raises(UsageError, match="no key slot named 'carol'.*default, alice, bob"):
        opens_with(repo_path, ALICE, key="carol")


def test_unlock_stops_at_the_first_match_trying_the_cheapest_first(repo_path, monkeypatch):
    add(repo_path, "zz-cheap", ALICE)  # the same work factor as default: default comes first
    add(repo_path, "costly", BOB, log2n=LOG2N + 1)
    runs = []
    real = crypto.scrypt
    monkeypatch.setattr(crypto, "scrypt", lambda p, s, n, r, q: runs.append(n) or real(p, s, n, r, q))
    unlocked = slots(repo_path).unlock(BOB)
    assert unlocked.slot.name == "costly" and unlocked.tried == 3 and runs == [LOG2N, LOG2N, LOG2N + 1]
    runs.clear()
    assert slots(repo_path).unlock(PW).slot.name == "default" and runs == [LOG2N]


def test_wrong_passphrase_for_every_slot_is_the_usual_error(repo_path):
    add(repo_path, "alice", ALICE)
    with pytest.raises(WrongPassphrase) as info:
        opens_with(repo_path, b"nobody's")
    message = str(info.value)
    assert message.startswith("wrong passphrase for repository ") and "tried 2 key slots" in message
    assert "\n" not in message and info.value.exit_code == C.EXIT_PASSPHRASE


def test_a_repository_with_one_slot_keeps_the_old_message(repo_path):
    with pytest.raises(WrongPassphrase) as info:
        opens_with(repo_path, b"nope")
    assert str(info.value) == f"wrong passphrase for repository {repo_path}"


def test_key_file_of_an_older_release_opens_and_lists(repo_path):
    """0.1/0.2 wrote keys/default without name, created_by, created: it opens and lists unchanged."""
    ks = slots(repo_path)
    master = ks.unlock(PW).master
    (repo_path / "keys" / "default").write_bytes(K.make_keyfile(master, bytes.fromhex(ks.repo_id), PW, LOG2N))
    assert opens_with(repo_path, PW) == "default"
    (slot,) = slots(repo_path).listing().slots
    assert slot.name == "default" and slot.created is None and slot.created_by is None
    add(repo_path, "alice", ALICE)
    assert opens_with(repo_path, ALICE) == "alice"


# --- passwd ------------------------------------------------------------------------
def test_passwd_replaces_one_slots_passphrase_and_keeps_when_it_was_created(repo_path):
    add(repo_path, "alice", ALICE)
    before = key_doc(repo_path, "alice")
    ks = slots(repo_path)
    slot = ks.change(ks.unlock(ALICE), "alice", b"alice's new one")
    assert slot.name == "alice" and slot.changed and "@" in (slot.changed_by or "")
    after = key_doc(repo_path, "alice")
    assert after["created"] == before["created"] and after["created_by"] == before["created_by"]
    assert parse_rfc3339(after["changed"])
    assert opens_with(repo_path, b"alice's new one") == "alice"
    with pytest.raises(WrongPassphrase):
        opens_with(repo_path, ALICE)
    assert opens_with(repo_path, PW) == "default"  # the other slots are untouched


def test_passwd_of_another_slot_by_any_key_holder(repo_path):
    add(repo_path, "alice", ALICE)
    ks = slots(repo_path)
    ks.change(ks.unlock(PW), "alice", b"reset by the admin")
    assert opens_with(repo_path, b"reset by the admin") == "alice"
    with pytest.raises(UsageError, match="no key slot named 'bob'"):
        ks.change(ks.unlock(PW), "bob", b"x")


def test_passwd_that_fails_to_write_leaves_the_old_slot(repo_path, monkeypatch):
    ks = slots(repo_path)
    unlocked = ks.unlock(PW)

    def no_rename(*a):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(StorageError):
        ks.change(unlocked, "default", b"new")
    monkeypatch.undo()
    assert opens_with(repo_path, PW) == "default"
    assert [n for n in os.listdir(repo_path / "keys") if n != "default"] == []  # no temporary left


# --- remove ------------------------------------------------------------------------
def test_removed_slot_no_longer_opens(repo_path):
    add(repo_path, "alice", ALICE)
    ks = slots(repo_path)
    ks.remove(ks.unlock(PW), "alice")
    assert not (repo_path / "keys" / "alice").exists()
    with pytest.raises(WrongPassphrase):
        opens_with(repo_path, ALICE)
    assert [s.name for s in slots(repo_path).listing().slots] == ["default"]


def test_last_slot_cannot_be_removed(repo_path):
    ks = slots(repo_path)
    with pytest.raises(UsageError, match="last key slot"):
        ks.remove(ks.unlock(PW), "default")
    assert opens_with(repo_path, PW) == "default"


def test_default_slot_cannot_be_removed(repo_path):
    add(repo_path, "alice", ALICE)
    ks = slots(repo_path)
    with pytest.raises(UsageError, match="keys/default.*key passwd"):
        ks.remove(ks.unlock(ALICE), "default")
    assert opens_with(repo_path, PW) == "default"


def test_slot_in_use_cannot_remove_itself(repo_path):
    add(repo_path, "alice", ALICE)
    add(repo_path, "bob", BOB)
    ks = slots(repo_path)
    with pytest.raises(UsageError, match="unlocked with"):
        ks.remove(ks.unlock(ALICE), "alice")
    ks.remove(ks.unlock(BOB), "alice")
    with pytest.raises(UsageError, match="no key slot named 'alice'"):
        ks.remove(ks.unlock(BOB), "alice")


# --- names and limits ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["", "Alice", "-x", ".x", "a/b", "a b", "é", "x" * 65, "a..b", "a/"])
def test_bad_slot_names_refused(repo_path, name):
    with pytest.raises(UsageError, match="key slot name"):
        add(repo_path, name, ALICE)


def test_existing_name_refused(repo_path):
    add(repo_path, "alice", ALICE)
    with pytest.raises(UsageError, match="key slot 'alice' exists.*key passwd"):
        add(repo_path, "alice", BOB)
    assert opens_with(repo_path, ALICE) == "alice"


def test_at_most_key_slots_max(repo_path, monkeypatch):
    monkeypatch.setattr(S, "KEY_SLOTS_MAX", 3)
    add(repo_path, "a", ALICE)
    add(repo_path, "b", BOB)
    with pytest.raises(UsageError, match="already has 3 key slots"):
        add(repo_path, "c", b"c")


def test_only_key_slots_max_are_tried_and_the_rest_named(repo_path, monkeypatch):
    add(repo_path, "a", ALICE)
    add(repo_path, "b", BOB)
    monkeypatch.setattr(S, "KEY_SLOTS_MAX", 2)
    with pytest.raises(WrongPassphrase, match="tried 2 key slots"):
        slots(repo_path).unlock(BOB)  # b is third in order: never tried
    unlocked = slots(repo_path).unlock(ALICE)
    assert unlocked.slot.name == "a" and any("1 key slot beyond the first 2" in w for w in unlocked.warnings)


# --- damaged slots -------------------------------------------------------------------
DAMAGE = {
    "not json": lambda raw: b"{not json",
    "truncated": lambda raw: raw[: len(raw) // 2],
    "no sealed key": lambda raw: _edit(raw, lambda d: d.pop("sealed_master_key")),
    "name of another slot": lambda raw: _edit(raw, lambda d: d.__setitem__("name", "mallory")),
    "created_by not a string": lambda raw: _edit(raw, lambda d: d.__setitem__("created_by", 5)),
    "created not RFC 3339": lambda raw: _edit(raw, lambda d: d.__setitem__("created", "yesterday")),
    "another master key": None,  # filled in by the test: a valid key file of another master key
}


def _edit(raw: bytes, fn) -> bytes:
    doc = json.loads(raw)
    fn(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_slot_is_skipped_with_a_warning_and_never_blocks_a_good_one(repo_path, case):
    add(repo_path, "alice", ALICE)
    path = repo_path / "keys" / "alice"
    if case == "another master key":
        ks = slots(repo_path)
        path.write_bytes(S.seal_slot(os.urandom(32), bytes.fromhex(ks.repo_id), "alice", ALICE, LOG2N, "x@y"))
    else:
        path.write_bytes(DAMAGE[case](path.read_bytes()))
    with Repository.open(str(repo_path), PW) as repo:
        assert repo.key_slot == "default"
        (warning,) = [w for w in repo.warnings if "keys/alice" in w]
        assert "\n" not in warning and "skipped" in warning
    listing = slots(repo_path).listing()
    assert [s.name for s in listing.slots] == ["default"]
    assert [d.object for d in listing.damaged] == ["keys/alice"] and listing.damaged[0].problem
    with pytest.raises(WrongPassphrase, match="damaged, skipped: keys/alice"):
        opens_with(repo_path, ALICE)
    ks = slots(repo_path)
    ks.remove(ks.unlock(PW), "alice")  # a damaged slot can be removed
    assert not path.exists()


def test_damaged_default_slot_does_not_block_another(repo_path):
    add(repo_path, "alice", ALICE)
    (repo_path / "keys" / "default").write_bytes(b"garbage")
    with Repository.open(str(repo_path), ALICE) as repo:
        assert repo.key_slot == "alice" and any("keys/default" in w for w in repo.warnings)


def test_damaged_named_slot_is_a_clear_error(repo_path):
    add(repo_path, "alice", ALICE)
    (repo_path / "keys" / "alice").write_bytes(b"garbage")
    with pytest.raises(IntegrityError, match="keys/alice"):
        opens_with(repo_path, ALICE, key="alice")


def test_only_slot_damaged_is_an_integrity_error_as_before(repo_path):
    (repo_path / "keys" / "default").write_bytes(b"garbage")
    with pytest.raises(IntegrityError, match="key file is damaged"):
        opens_with(repo_path, PW)


def test_names_that_are_not_slots_are_ignored(repo_path):
    (repo_path / "keys" / "sub").mkdir()
    (repo_path / "keys" / "sub" / "x").write_bytes(b"x")
    (repo_path / "keys" / ".tmp-1-abc").write_bytes(b"x")
    listing = slots(repo_path).listing()
    assert [s.name for s in listing.slots] == ["default"] and not listing.damaged


def test_keys_of_another_repository_are_not_slots_here(tmp_path, repo_path):
    other = tmp_path / "other"
    Repository.init(str(other), ALICE, log2n=LOG2N).close()
    (repo_path / "keys" / "alice").write_bytes((other / "keys" / "default").read_bytes().replace(b'"default"',
                                                                                                 b'"alice"'))
    with pytest.raises(WrongPassphrase):  # sealed with the other repository's id: never opens here
        opens_with(repo_path, ALICE)


def test_every_failure_is_a_replicator_error(repo_path):
    for data in (b"", b"[]", b"null", b'{"magic": "replicator-key"}'):
        (repo_path / "keys" / "default").write_bytes(data)
        with pytest.raises(ReplicatorError):
            opens_with(repo_path, PW)


def test_damaged_default_slot_is_sealed_again_with_another_slots_passphrase(repo_path):
    add(repo_path, "alice", ALICE)
    (repo_path / "keys" / "default").write_bytes(b"garbage")
    ks = slots(repo_path)
    slot = ks.change(ks.unlock(ALICE), "default", b"new default")
    assert slot.name == "default" and slot.created and slot.changed is None  # sealed afresh: its old labels are lost
    assert opens_with(repo_path, b"new default") == "default"
    with Repository.open(str(repo_path), ALICE, exclusive=True) as repo:  # the local sink reads keys/default
        assert not repo.warnings
        repo.writer().close()


def test_a_file_under_keys_with_dotdot_in_its_name_is_not_a_slot(repo_path):
    """The storage refuses names with '..'; such a file used to crash every open (internal error, exit 70)."""
    with open(os.path.join(repo_path, "keys", "a..b"), "wb") as f:
        f.write(open(os.path.join(repo_path, "keys", "default"), "rb").read())
    assert opens_with(repo_path, PW) == "default"
    listing = slots(repo_path).listing()
    assert "a..b" not in listing.names() and not listing.damaged

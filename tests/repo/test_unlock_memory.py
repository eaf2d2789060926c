"""The daemon runs scrypt once per key slot and passphrase, not at every sync (repo/keyring.py).

Before, every sync of every job unlocked the key file again: 0.3 s and 128 MiB of scrypt each time at
the default work factor.  What must hold with the memory on: a second open of the same repository
with the same passphrase runs no scrypt; a wrong passphrase is refused every time (never remembered);
a passphrase changed in its slot (key passwd, here by rewriting the slot) runs scrypt again; off (the
one-shot commands) nothing is remembered.  The daemon turns it on.
"""
from __future__ import annotations

import pytest

from replicator.core import crypto
from replicator.errors import WrongPassphrase
from replicator.repo import keyring
from replicator.repo.repository import Repository
from tests.conftest import PASSPHRASE, run_cli


@pytest.fixture
def scrypt_runs(monkeypatch):
    runs = []
    real = crypto.scrypt

    def counting(*args, **kw):
        runs.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(crypto, "scrypt", counting)
    yield runs
    keyring.remember_unlocked(False)


def _repo(tmp_path):
    repo = tmp_path / "repo"
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    return str(repo)


def test_remembered_once_per_slot_and_passphrase(tmp_path, scrypt_runs):
    repo = _repo(tmp_path)
    keyring.remember_unlocked(True)
    for _ in range(3):
        Repository.open(repo, PASSPHRASE.encode()).close()
    assert len(scrypt_runs) == 1
    for _ in range(2):
        with pytest.raises(WrongPassphrase):
            Repository.open(repo, b"not the passphrase").close()
    assert len(scrypt_runs) == 3  # each wrong one ran scrypt: nothing remembered for it


def test_a_changed_passphrase_runs_scrypt_again(tmp_path, scrypt_runs, monkeypatch):
    repo = _repo(tmp_path)
    keyring.remember_unlocked(True)
    Repository.open(repo, PASSPHRASE.encode()).close()
    new = tmp_path / "new-passphrase"
    new.write_text("a new passphrase\n")
    new.chmod(0o600)
    r = run_cli("key", "passwd", repo, "--new-passphrase-file", str(new), "--kdf-work", "14")
    assert r.returncode == 0, r.stderr
    runs = len(scrypt_runs)
    with pytest.raises(WrongPassphrase):  # the old one no longer opens the changed slot, remembered or not
        Repository.open(repo, PASSPHRASE.encode()).close()
    Repository.open(repo, b"a new passphrase").close()
    assert len(scrypt_runs) == runs + 2


def test_off_nothing_is_remembered(tmp_path, scrypt_runs):
    repo = _repo(tmp_path)
    keyring.remember_unlocked(False)
    for _ in range(2):
        Repository.open(repo, PASSPHRASE.encode()).close()
    assert len(scrypt_runs) == 2


def test_the_daemon_turns_it_on(tmp_path):
    from replicator.daemon.service import Service

    config = tmp_path / "replicator.toml"
    src = tmp_path / "src"
    src.mkdir()
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE)
    secret.chmod(0o600)
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[[job]]\nname = "j"\nsource = "{src}"\n'
                      f'destination = "{tmp_path / "repo"}"\nsource_name = "j"\npassphrase_file = "{secret}"\n')
    keyring.remember_unlocked(False)
    try:
        Service(str(config))
        assert keyring._memo is not None
    finally:
        keyring.remember_unlocked(False)

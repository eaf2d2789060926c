"""Keyring: a repository's config and unlocked working keys, the one thing only a key holder has.

Built from the two objects every repository hands out in the clear (the
config and a sealed key file) and the passphrase: ``unlock`` opens one key
file (``keys/default``, as ``serve`` hands it out), repo/keys.py tries a
local repository's key slots and calls ``from_master``.  The writer, the
read side and verification all take a Keyring; a sink never sees one.

Must never: be serialised, logged, or sent anywhere.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

from replicator.core import crypto
from replicator.core.chunker import Chunker, gear_table
from replicator.core.ids import IdHasher
from replicator.core.params import ChunkerParams
from replicator.format import keyfile as K
from replicator.format.idlist import Declarer, Verifier
from replicator.format.repoconfig import parse_config


@dataclass(frozen=True)
class Keyring:
    config: dict
    id: str  # repository id, 64 hex digits
    keys: K.KeySet
    public_key: bytes  # Ed25519, from the key file; verifies snapshots
    signer: crypto.SigningKey
    chunk_hasher: IdHasher
    tree_hasher: IdHasher

    @property
    def params(self) -> ChunkerParams:
        return self.config["params"]

    @property
    def compression_level(self) -> int:
        return self.config["compression_level"]

    @classmethod
    def unlock(cls, config_bytes: bytes, keyfile: bytes, passphrase: bytes, location: str) -> Keyring:
        """:raises RepositoryError: bad config.  :raises WrongPassphrase: :raises IntegrityError: bad key file."""
        config = parse_config(config_bytes, location)
        id_bytes = bytes.fromhex(config["id"])
        master = unlock_master(keyfile, id_bytes, passphrase, location)
        return cls.from_master(config, master, K.parse_keyfile(keyfile))

    @classmethod
    def from_master(cls, config: dict, master: bytes, keydoc: dict) -> Keyring:
        keys = K.KeySet.derive(master, bytes.fromhex(config["id"]))
        return cls(config=config, id=config["id"], keys=keys,
                   public_key=bytes.fromhex(keydoc["signing_public_key"]),
                   signer=crypto.SigningKey(keys.sign_seed),
                   chunk_hasher=IdHasher(keys.chunk_id), tree_hasher=IdHasher(keys.tree_id))

    @property
    def declarer(self) -> Declarer:
        """Signs packs' id declarations and snapshots' proofs (format/idlist.py)."""
        return Declarer(self.id, self.signer)

    @property
    def verifier(self) -> Verifier:
        """Checks declarations read from a sink against this key's public half (known from the passphrase)."""
        return Verifier(self.id, self.public_key)

    def chunker(self) -> Chunker:
        return Chunker(self.params, gear_table(self.keys.gear))


# --- unlocked master keys remembered by a long-running process ---------------------------------
# scrypt is memory-hard on purpose (0.3 s and 128 MiB at the default work factor): the daemon pays it
# once per key slot and passphrase, at its first sync, not at every sync.  Keyed by a hash of the
# sealed slot and the passphrase, so a slot changed by 'key passwd' or a passphrase changed in its
# file runs scrypt again, and a wrong passphrase is never remembered.  Off in one-shot commands.
_MEMO_MAX = 64
_memo: dict[bytes, bytes] | None = None
_memo_lock = threading.Lock()


def remember_unlocked(on: bool = True) -> None:
    """Keep (on) or forget and stop keeping (off) the master keys this process unlocks."""
    global _memo
    with _memo_lock:
        _memo = {} if on else None


def unlock_master(keyfile: bytes, repo_id: bytes, passphrase: bytes, location: str) -> bytes:
    """``format.keyfile.unlock``, remembered when ``remember_unlocked`` is on.

    :raises WrongPassphrase: :raises IntegrityError: (never remembered)
    """
    if _memo is None:
        return K.unlock(keyfile, repo_id, passphrase, location)
    h = hashlib.sha256(b"replicator/unlocked\x00")
    for part in (repo_id, keyfile, passphrase):
        h.update(len(part).to_bytes(8, "big") + part)
    key = h.digest()
    with _memo_lock:
        master = _memo.get(key) if _memo is not None else None
    if master is not None:
        return master
    master = K.unlock(keyfile, repo_id, passphrase, location)
    with _memo_lock:
        if _memo is not None:
            if len(_memo) >= _MEMO_MAX:
                _memo.pop(next(iter(_memo)))
            _memo[key] = master
    return master

"""Keyring: a repository's config and unlocked working keys, the one thing only a key holder has.

Built from the two objects every repository hands out in the clear (the
config and a sealed key file) and the passphrase: ``unlock`` opens one key
file (``keys/default``, as ``serve`` hands it out), repo/keys.py tries a
local repository's key slots and calls ``from_master``.  The writer, the
read side and verification all take a Keyring; a sink never sees one.

Must never: be serialised, logged, or sent anywhere.
"""
from __future__ import annotations

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
        master = K.unlock(keyfile, id_bytes, passphrase, location)
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

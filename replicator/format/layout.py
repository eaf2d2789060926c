"""Object names of a repository (docs/FORMAT.md "Repository layout"): the one place they are spelled.

    config                      the config (JSON, clear)
    keys/default                the first key slot: the master key sealed under a passphrase (JSON)
    keys/<name>                 further key slots, each sealing the same master key (since 0.4)
    data/<xx>/<sha256>          packs, named by the SHA-256 of their bytes, fanned out by its first byte
    ids/<sha256 of a pack>      the blob ids that pack holds (key-less, for dedup and checks)
    snapshots/<sha256>          signed, encrypted snapshot roots
    refs/<sha256 of a snapshot> every blob id that snapshot references (key-less pre-commit check)
    quarantine/<sha256 of a pack> that pack was found damaged: its ids no longer count as held
    heads/<tag>                 the latest snapshot of one source and who may write it (clear JSON, since 0.4)

Must never: do I/O.
"""
from __future__ import annotations

import re

CONFIG = "config"
KEY = "keys/default"  # the first key slot: serve hands it out, key-less checks read its public key
KEYS, DEFAULT_KEY_SLOT = "keys/", "default"
PACKS, IDS, SNAPSHOTS, REFS, QUARANTINE, HEADS = "data/", "ids/", "snapshots/", "refs/", "quarantine/", "heads/"

_HEX64 = "[0-9a-f]{64}"
# \Z, not $: "$" would also match before a final newline, and names are exact.
PACK_RE = re.compile(rf"^data/([0-9a-f]{{2}})/({_HEX64})\Z")
SNAPSHOT_RE = re.compile(rf"^snapshots/({_HEX64})\Z")
IDS_RE = re.compile(rf"^ids/({_HEX64})\Z")
REFS_RE = re.compile(rf"^refs/({_HEX64})\Z")
QUARANTINE_RE = re.compile(rf"^quarantine/({_HEX64})\Z")
KEY_SLOT_RE = re.compile(r"^(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,63}\Z")  # the <name> of keys/<name>; no ".."
KEY_RE = re.compile(r"^keys/((?!.*\.\.)[a-z0-9][a-z0-9._-]{0,63})\Z")
HEAD_RE = re.compile(r"^heads/([0-9a-f]{32})\Z")  # a 16-byte source tag (format/head.py)


def digest_of(name: str) -> str:
    """The hash part of a pack, id list, snapshot or refs name."""
    return name.rsplit("/", 1)[-1]


def pack_name(digest: str) -> str:
    return f"data/{digest[:2]}/{digest}"


def ids_name(digest: str) -> str:
    return f"ids/{digest}"


def snapshot_name(digest: str) -> str:
    return f"snapshots/{digest}"


def refs_name(digest: str) -> str:
    return f"refs/{digest}"


def quarantine_name(digest: str) -> str:
    return f"quarantine/{digest}"


def key_name(slot: str) -> str:
    return f"keys/{slot}"


def head_name(tag: bytes) -> str:
    return f"heads/{tag.hex()}"


def is_pack(name: str) -> bool:
    m = PACK_RE.match(name)
    return m is not None and m.group(1) == m.group(2)[:2]

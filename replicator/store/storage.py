"""Storage: the repository's objects behind four operations.

Everything a repository is (config, key files, packs, snapshots) is a named,
immutable object.  The index is only a cache and is rebuilt from these
objects.  Keeping storage this small lets an S3-compatible object store hold a
repository later: nothing here needs rename, append or locking.

Names are '/'-separated relative paths made of [a-z0-9._-] components.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Protocol

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")


def check_name(name: str) -> str:
    """:raises ValueError: unless ``name`` is a valid object name."""
    if not _NAME_RE.match(name) or ".." in name:
        raise ValueError(f"invalid object name {name!r}")
    return name


class Storage(Protocol):
    """Named immutable objects.

    Obligations of every implementation (tests/repo/test_storage.py runs one
    conformance suite against each):

    * ``put`` is durable when it returns (fsync or the store's equivalent) and
      all-or-nothing: a crash leaves either no object or the whole object
      under ``name``, never a prefix.  Putting a name that exists raises
      FileExistsError unless ``overwrite`` (used for the config and key files
      only, never for packs or snapshots).
    * ``get`` returns the whole object, or with ``offset``/``length`` a range
      of it; ObjectNotFound when missing.
    * ``list(prefix)`` yields the names under ``prefix`` ("data/", ...), in
      no particular order, never temporary files.
    * ``delete`` removes a name; deleting a missing name is not an error.
    * ``clean_temporaries`` removes what a crashed ``put`` left (called under
      the writer lock); ``close`` releases cached resources and never raises.
    """

    location: str

    def put(self, name: str, data: bytes | bytearray | memoryview, *, overwrite: bool = False) -> None: ...

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes: ...

    def size(self, name: str) -> int: ...

    def exists(self, name: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[str]: ...

    def delete(self, name: str) -> None: ...

    def clean_temporaries(self) -> int: ...

    def close(self) -> None: ...

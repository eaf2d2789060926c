"""Destination: what a sync writes to.

The sync engine never knows whether the far side is a local repository
(repo.repository.Repository implements this) or a remote one over SSH
(transport.client, later).  Methods are called from the engine's thread,
except ``has_blob`` and the hashers, which worker threads call too.
"""
from __future__ import annotations

from typing import Protocol

from replicator.core.chunker import Chunker
from replicator.core.ids import IdHasher
from replicator.repo.snapshot import Snapshot
from replicator.repo.tree import TreeItem


class Destination(Protocol):
    id: str
    compression_level: int
    chunk_hasher: IdHasher

    def chunker(self) -> Chunker: ...

    def has_blob(self, blob_id: bytes) -> bool: ...

    def store_blob(self, blob_type: int, blob_id: bytes, method: int, payload: bytes, raw_len: int) -> bool: ...

    def store_tree(self, items: list[TreeItem]) -> bytes: ...

    def flush(self) -> None: ...

    def commit_snapshot(self, source: str, tree_id: bytes, stats: dict) -> Snapshot: ...

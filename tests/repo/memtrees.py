"""Trees in memory, as a repository's read side serves them: deep trees for the walks without a
repository on disk (the browse and stats tests)."""
from __future__ import annotations

import hashlib

from replicator.format.tree import TreeItem, decode_tree, encode_tree


class MemTrees:
    def __init__(self) -> None:
        self.blobs: dict[bytes, bytes] = {}

    def put(self, items: list[TreeItem]) -> bytes:
        data = encode_tree(items)
        tree_id = hashlib.sha256(data).digest()
        self.blobs[tree_id] = data
        return tree_id

    def read_blobs(self, ids, ahead: int = 0, gap: int = 0):
        return (self.blobs[i] for i in ids)

    def read_tree(self, tree_id, parent):
        return decode_tree(self.blobs[tree_id], parent)

"""Bytes the writer holds for a snapshot's refs: 20,000 directories x 10 one-chunk files (220,000 refs).

Run from a checkout (self-contained, so it measures an older tree too, issue 11):
    PYTHONPATH=. python scripts/refs_memory.py [directories]
"""
from __future__ import annotations

import random
import sys
import tracemalloc

from replicator.format import layout as L
from replicator.format.entry import KIND_FILE, Entry
from replicator.format.tree import TreeItem
from replicator.repo.keyring import Keyring
from replicator.repo.local_sink import LocalSink
from replicator.repo.writer import Writer
from tests.conformance.test_sink import PW, memory_repository


def main() -> None:
    trees = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    storage = memory_repository()
    keyring = Keyring.unlock(storage.get(L.CONFIG), storage.get(L.KEY), PW, "memory")
    rng = random.Random(11)
    with Writer(keyring, LocalSink(storage, untrusted=True)) as w:
        w.has_blob = lambda _id: True  # type: ignore[method-assign]  # collect refs, store nothing
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(trees):
            w.store_tree([TreeItem(Entry(f"f{i}", KIND_FILE, 0o600, 0, 0, 0, 1, chunks=(rng.randbytes(32),)))
                          for i in range(10)])
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    refs = trees * 11
    print(f"{refs} refs: {held / 2**20:.1f} MiB held by the writer, {held / refs:.1f} bytes per ref")


if __name__ == "__main__":
    main()

"""The writer holds at most two packs: the one filling and one being sealed and handed to the sink
(issue 11, memory).  Before, two more could wait for a slow sink (PACKS_WAITING = 2), and sealing a
pack held its payloads, the sealed blobs and their join at once (three copies of 16 MiB)."""
from __future__ import annotations

import os
import threading
import time

from replicator import constants as C
from replicator.format import layout as L
from replicator.format.pack import PackWriter, read_table
from replicator.repo.keyring import Keyring
from replicator.repo.local_sink import LocalSink
from replicator.repo.writer import Writer
from tests.conformance.test_sink import PW, memory_repository

MiB = 1024 * 1024


class SlowSink(LocalSink):
    """A LocalSink over memory whose put_pack takes a while, counting the packs it has stored."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.puts = 0
        self.lock = threading.Lock()

    def put_pack(self, name, data, ids, proof) -> None:
        time.sleep(0.05)
        super().put_pack(name, data, ids, proof)
        with self.lock:
            self.puts += 1


def test_at_most_one_pack_waits_for_the_sink_beside_the_one_filling(monkeypatch):
    storage = memory_repository()
    keyring = Keyring.unlock(storage.get(L.CONFIG), storage.get(L.KEY), PW, "memory")
    sink = SlowSink(storage, untrusted=True)
    handed = 0
    real = Writer._hand_off

    def counting(self) -> None:
        nonlocal handed
        if self._pack is not None and self._pack.count:
            handed += 1
        real(self)

    monkeypatch.setattr(Writer, "_hand_off", counting)
    most = 0
    with Writer(keyring, sink) as w:
        for i in range(16 * 5):  # five packs of sixteen 1 MiB blobs
            w.store_blob(C.BLOB_DATA, i.to_bytes(32, "big"), C.COMPRESSION_NONE, os.urandom(MiB), MiB)
            with sink.lock:
                most = max(most, handed - sink.puts)
        w.flush()
    assert sink.puts == handed == 5
    assert most <= 1, f"{most} packs were handed off and not yet stored"


def test_finish_seals_into_one_buffer_of_the_exact_size():
    key = os.urandom(32)
    w = PackWriter(key)
    payloads = [os.urandom(1000 + i) for i in range(20)]
    for i, p in enumerate(payloads):
        w.add(C.BLOB_DATA, i.to_bytes(32, "big"), C.COMPRESSION_NONE, p, len(p))
    name, data, entries = w.finish()
    assert w.count == 0  # the payloads are let go
    assert data.__alloc__() == len(data) + 1  # allocated once at its size: no join, no growth
    assert [(e.id, e.length) for e in read_table(bytes(data), name, key)] == [(e.id, e.length) for e in entries]


def refs_bytes_held(w: Writer, trees: int = 20_000, files: int = 10) -> tuple[int, int]:
    """(bytes the writer still holds, refs collected) after ``trees`` directories of ``files`` one-chunk files
    went through ``store_tree`` (each directory's items dropped after it, as the sync drops them)."""
    import random
    import tracemalloc

    from replicator.format.entry import KIND_FILE, Entry
    from replicator.format.tree import TreeItem

    rng = random.Random(11)
    w.has_blob = lambda _id: True  # type: ignore[method-assign]  # every tree held: collect refs, store nothing
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(trees):
            items = [TreeItem(Entry(f"f{i}", KIND_FILE, 0o600, 0, 0, 0, 1, chunks=(rng.randbytes(32),)))
                     for i in range(files)]
            w.store_tree(items)
            del items
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return held, trees * (files + 1)


def test_the_refs_of_200000_files_cost_under_twice_32_bytes_each():
    """Issue 11: the refs were a set of bytes objects (~103 bytes per ref: 21.6 MiB for 220,000); now one
    buffer of 32 bytes per ref, sorted and de-duplicated in place at the commit."""
    storage = memory_repository()
    keyring = Keyring.unlock(storage.get(L.CONFIG), storage.get(L.KEY), PW, "memory")
    with Writer(keyring, LocalSink(storage, untrusted=True)) as w:
        held, refs = refs_bytes_held(w)
        assert held < 2 * 32 * refs, f"{held / refs:.0f} bytes per ref"

"""Sink: what a key-less store can do for the one key-holding writer (repo/writer.py).

A sink stores sealed objects and answers questions about them; it never
needs, sees or derives a key.  Three implementations pass one conformance
suite (tests/conformance/test_sink.py): ``LocalSink`` over a directory (a
local sync, and ``replicator serve`` at the other site), ``LocalSink`` over
memory (tests), and ``transport.client.RemoteSink`` (the protocol client).
The writer never knows which one it has.

Obligations of every implementation:

* ``describe()`` returns the repository's config and sealed key file, as
  stored (the writer unlocks the key file itself, with the passphrase).
* ``has(id)`` is thread-safe and True only for ids of packs the sink holds
  durably, or that this session handed to ``put_pack`` (a pack in flight
  counts: if it never lands, nothing referencing it is committed, because
  ``commit`` checks its refs).  It never says True for an id of a pack that
  is gone.
* ``put_pack(name, data, ids)``: store a sealed pack under its SHA-256 name
  with the sorted, unique ids it holds.  It may return before the pack is
  durable; ``flush()`` returns only once every pack put so far is durable
  (and raises the first failure).  Putting a pack that exists is not an error.
  A sink facing an untrusted writer refuses a pack whose bytes do not hash
  to its name or are not shaped like a pack (IntegrityError).
* ``list(prefix)`` names the objects under ``snapshots/``, ``ids/`` (only
  lists whose pack exists) or ``data/``; ``get_many(names)`` yields
  ``(name, bytes)`` in the order asked (pipelined where that matters);
  ObjectNotFound for a missing name.
* ``commit(name, data, refs)``: the commit point.  Stores ``refs/<h>`` (the
  ids the snapshot references) and then the snapshot object ``snapshots/<h>``,
  durable when it returns; refuses (MissingChunks) when any ref is not held,
  and (IntegrityError) when ``data`` does not hash to the name.  Never writes
  a snapshot without its refs.
* ``stats`` (a dict of counters) and ``warnings`` (strings for the operator).
* ``close()`` releases the session (and any lock); never raises.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol


class Sink(Protocol):
    location: str
    stats: dict
    warnings: list[str]

    def describe(self) -> tuple[bytes, bytes]: ...

    def has(self, blob_id: bytes) -> bool: ...

    def put_pack(self, name: str, data: bytes, ids: Sequence[bytes]) -> None: ...

    def flush(self) -> None: ...

    def list(self, prefix: str) -> list[str]: ...

    def get_many(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]: ...

    def commit(self, name: str, data: bytes, refs: Sequence[bytes]) -> None: ...

    def close(self) -> None: ...

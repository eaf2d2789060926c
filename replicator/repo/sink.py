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
* ``trust(verifier)``: the writer hands over the verifier of its own public
  key (format/idlist.py) before asking ``has``; a sink whose lists come from
  elsewhere counts only lists whose proof it accepts (RemoteSink), and lists
  the others in ``legacy_packs`` (digests), as a sink over its own disk does
  for lists stored without proof.
* ``put_pack(name, data, ids, proof)``: store a sealed pack under its SHA-256 name
  with the sorted, unique ids it holds and the key holder's proof of that
  declaration; a sink refuses a proof that does not verify (IntegrityError).  It may return before the pack is
  durable; ``flush()`` returns only once every pack put so far is durable
  (and raises the first failure).  Putting a pack that exists is not an error.
  A sink facing an untrusted writer refuses a pack whose bytes do not hash
  to its name or are not shaped like a pack (IntegrityError).
* ``list(prefix)`` names the objects under ``snapshots/``, ``ids/`` (only
  lists whose pack exists) or ``data/``; ``get_many(names)`` yields
  ``(name, bytes)`` in the order asked (pipelined where that matters);
  ObjectNotFound for a missing name.
* ``get_ranges([(pack name, offset, length), ...])``: ``(size, bytes)`` of
  each, pipelined where that matters (a key holder reads pack tables).
* ``declare_pack(name, ids, proof)`` and ``declare_snapshot(name, proof)``:
  a proof for an object already stored (the upgrade of lists written without
  one); answered by ``flush``.
* ``commit(name, data, refs, proof, claim)``: the commit point; ``proof`` is the key
  holder's proof of the snapshot, refused (IntegrityError) unless it verifies.  ``claim``
  (format/head.py) names the source's tag and the snapshot this one continues: refused
  (LineageConflict) unless that parent is the source's head at the sink, and (Fenced) when a
  ``promote`` fenced the source against the side committing.  ``refs`` is one buffer of the
  ids the snapshot references (sorted, unique, 32 bytes each: never a bytes object per id for
  the whole tree; a sink may take them a batch at a time).  Stores ``refs/<h>`` (those
  ids), the source's head, and then the snapshot object ``snapshots/<h>``,
  durable when it returns; refuses (MissingChunks) when any ref is not held,
  and (IntegrityError) when ``data`` does not hash to the name.  Never writes
  a snapshot without its refs.
* ``stats`` (a dict of counters) and ``warnings`` (strings for the operator).
* ``close()`` releases the session (and any lock); never raises.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from replicator.format.head import Claim
from replicator.format.idlist import Verifier


class Sink(Protocol):
    location: str
    stats: dict
    warnings: list[str]
    legacy_packs: set[str]

    def describe(self) -> tuple[bytes, bytes]: ...

    def trust(self, verifier: Verifier) -> None: ...

    def has(self, blob_id: bytes) -> bool: ...

    def put_pack(self, name: str, data: bytes | bytearray | memoryview, ids: Sequence[bytes], proof: bytes) -> None: ...

    def get_ranges(self, wanted: Sequence[tuple[str, int, int]]) -> list[tuple[int, bytes]]: ...

    def declare_pack(self, name: str, ids: Sequence[bytes], proof: bytes) -> None: ...

    def declare_snapshot(self, name: str, proof: bytes) -> None: ...

    def flush(self) -> None: ...

    def list(self, prefix: str) -> list[str]: ...

    def get_many(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]: ...

    def commit(self, name: str, data: bytes, refs: bytes | bytearray | memoryview, proof: bytes,
               claim: Claim) -> None: ...

    def close(self) -> None: ...

"""RemoteStorage: a read-only Storage over one protocol session, so a key holder reads the other site.

``snapshots``, ``restore``, ``verify`` and ``diff`` of ``ssh://USER@HOST:PORT/NAME``
open an ordinary ``Repository`` over this storage (app/destinations.py): the
same reading code as a local repository, with the index cache kept in the
cache directory instead of the repository's.  Objects are read with GET (whole)
and GET_RANGE (pack ranges; ``get_ranges`` pipelines many), so catching the
index up reads only pack tables, and restore reads only the blobs it needs.
The config and key file come from OPEN_OK.  LIST covers ``ids/``,
``snapshots/`` and ``data/``; the other prefixes list as empty (a reader with
the key does not need ``refs/``, and ``quarantine/`` only orders the index).

The session is the receiver's: an object it cannot find ends it (PROTOCOL.md
6), so ObjectNotFound is raised once and later reads fail with a transport
error.

Writes nothing itself: ``forget`` hands the key holder's signed orders to the
other site, which deletes under its own lock (a session opened for write).

Must never: write, or import asyncssh (client.py and ssh.py do the talking).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

from replicator.errors import ObjectNotFound, ReadOnly
from replicator.format import layout as L
from replicator.transport import protocol as P
from replicator.transport.client import RemoteSink


class RemoteStorage:
    def __init__(self, sink: RemoteSink) -> None:
        self.sink = sink
        self.location = sink.location
        config, keyfile = sink.describe()
        self._given = {L.CONFIG: config, L.KEY: keyfile}

    def _found(self, call, name: str):
        try:
            return call()
        except P.RemoteError as exc:
            if exc.code == P.E_NOT_FOUND:
                raise ObjectNotFound(name) from None
            raise

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if name in self._given:
            data = self._given[name]
            return data[offset : None if length is None else offset + length]
        if length is None and offset == 0:
            return self._found(lambda: bytes(dict(self.sink.get_many([name]))[name]), name)
        if length is None:
            length = self.size(name) - offset
        return self.get_ranges([(name, offset, length)])[0][1]

    def forget(self, names_and_proofs: Sequence[tuple[str, bytes]]) -> None:
        """Snapshots deleted by the other site under its lock, each on a key holder's forget proof (a session
        opened for write)."""
        self.sink.forget(names_and_proofs)

    def get_ranges(self, wanted: Sequence[tuple[str, int, int]]) -> list[tuple[int, bytes]]:
        """(size, bytes) of each (pack, offset, length), pipelined; a range over MAX_RANGE is read in pieces."""
        if all(length <= P.MAX_RANGE for _n, _o, length in wanted):
            return self._found(lambda: self.sink.get_ranges(wanted), wanted[0][0] if wanted else "")
        out = []
        for name, offset, length in wanted:
            pieces = [(name, o, min(P.MAX_RANGE, offset + length - o)) for o in range(offset, offset + length,
                                                                                          P.MAX_RANGE)]
            got = self.get_ranges(pieces)
            out.append((got[0][0], b"".join(data for _size, data in got)))
        return out

    def size(self, name: str) -> int:
        return self.get_ranges([(name, 0, 0)])[0][0]

    def exists(self, name: str) -> bool:
        if name in self._given:
            return True
        if L.is_pack(name):
            try:
                self.size(name)
            except ObjectNotFound:
                return False
            return True
        return name in self.list(name.split("/", 1)[0] + "/")

    def list(self, prefix: str) -> Iterator[str]:
        if prefix in P.LIST_PREFIXES:
            yield from self.sink.list(prefix)

    def put(self, name: str, data, *, overwrite: bool = False) -> None:
        raise ReadOnly(self.location, "writing over ssh:// outside a sync")

    def delete(self, name: str) -> None:
        raise ReadOnly(self.location, "deleting over ssh://")

    def clean_temporaries(self) -> int:
        return 0

    def close(self) -> None:
        self.sink.close()

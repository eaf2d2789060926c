"""State cache: what a file looked like when it was last chunked.

Maps a relative path to (size, mtime_ns, inode, ctime_ns) and the chunk ids
it had then, so an unchanged file is not read again.  A cached row is only a
hint: the engine uses it only when every chunk id in it is still in the
repository, so a stale or damaged cache can cost time, never correctness.
One SQLite file per (repository, source name), kept outside the repository.

It also remembers the snapshot the last sync committed (id, generation,
stats): the engine's second witness, beside the repository's own latest
snapshot, for "has this source vanished?" (sync/engine.py).  Deleting the
cache never disables that check, which reads the snapshots first.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import urllib.parse

from replicator.constants import ID_SIZE

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ino INTEGER, ctime_ns INTEGER, chunks BLOB
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
"""
_LAST_SNAPSHOT = "last_snapshot"


def state_path(cache_dir: str, repo_id: str, source: str) -> str:
    tag = hashlib.sha256(source.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return os.path.join(cache_dir, repo_id, f"state-{tag}.sqlite")


class StateCache:
    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path = path
        try:
            self._db = sqlite3.connect(path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            # A damaged cache is thrown away: it is only a hint.
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(path + suffix)
                except FileNotFoundError:
                    pass
            self._db = sqlite3.connect(path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        # Paths are kept as their file-system bytes: a name that is not UTF-8 (os.fsdecode gives it
        # surrogates) is a valid file name and must not crash the cache.
        self._seen: set[bytes] = set()

    @classmethod
    def open_read_only(cls, path: str) -> StateCache | None:
        """The cache at ``path`` for reading only (``sync --dry-run``), or None when there is none.

        Nothing is created, converted or deleted: no directory, no ``-wal``/``-shm`` of its own (the
        file is opened immutable unless another connection has them), and a damaged file is
        simply not used.  Only ``lookup``, ``known``, ``keep``, ``last_snapshot`` and ``close``
        may be called on it.
        """
        if not os.path.isfile(path):
            return None
        in_use = os.path.exists(path + "-wal") and os.path.exists(path + "-shm")
        uri = "file:" + urllib.parse.quote(path) + ("?mode=ro" if in_use else "?mode=ro&immutable=1")
        self = cls.__new__(cls)
        self.path = path
        self._seen = set()
        try:
            self._db = sqlite3.connect(uri, uri=True)
            self._db.execute("SELECT path, size, mtime_ns, ino, ctime_ns, chunks FROM files LIMIT 1").fetchall()
            self._db.execute("SELECT key, value FROM meta LIMIT 1").fetchall()
        except sqlite3.DatabaseError:
            return None  # damaged, or not ours: only a hint, and a dry run leaves it to the next sync
        return self

    def lookup(self, path: str, key: tuple[int, int, int, int]) -> tuple[bytes, ...] | None:
        """:returns: the cached chunk ids when the file's stat key is unchanged."""
        row = self._db.execute(
            "SELECT size, mtime_ns, ino, ctime_ns, chunks FROM files WHERE path=?", (os.fsencode(path),)
        ).fetchone()
        if row is None or tuple(row[:4]) != key:
            return None
        raw = row[4]
        if len(raw) % ID_SIZE:
            return None
        return tuple(raw[i : i + ID_SIZE] for i in range(0, len(raw), ID_SIZE))

    def known(self, path: str) -> bool:
        """Whether the cache has a row for ``path`` (whatever its stat): a file the last sync saw."""
        try:
            return self._db.execute("SELECT 1 FROM files WHERE path=?", (os.fsencode(path),)).fetchone() is not None
        except sqlite3.DatabaseError:
            return False

    def record(self, path: str, key: tuple[int, int, int, int], chunks: tuple[bytes, ...]) -> None:
        raw = os.fsencode(path)
        self._seen.add(raw)
        self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)", (raw, *key, b"".join(chunks)))

    def keep(self, path: str) -> None:
        self._seen.add(os.fsencode(path))

    def remember_snapshot(self, snapshot_id: str, generation: int, stats: dict) -> None:
        """Record the snapshot this sync committed (written at the next ``commit``)."""
        value = json.dumps({"id": snapshot_id, "generation": generation, "stats": stats}, sort_keys=True)
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_LAST_SNAPSHOT, value))

    def last_snapshot(self) -> dict | None:
        """:returns: ``{"id", "generation", "stats"}`` of the last snapshot recorded, or None (none, or
        unreadable: the cache is only a hint)."""
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (_LAST_SNAPSHOT,)).fetchone()
        try:
            doc = json.loads(row[0]) if row else None
        except (TypeError, ValueError):
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not isinstance(doc.get("stats"), dict) \
                or type(doc.get("generation")) is not int:
            return None
        return doc

    def commit(self) -> None:
        self._db.commit()

    def forget_unseen(self) -> None:
        """Drop rows of files that no longer exist at the source (after a complete sync)."""
        # Rows of older caches hold text paths: never in _seen, so they go (a cache miss, once).
        rows = [p for (p,) in self._db.execute("SELECT path FROM files") if p not in self._seen]
        self._db.executemany("DELETE FROM files WHERE path=?", [(p,) for p in rows])
        self._db.commit()

    def close(self) -> None:
        self._db.commit()
        self._db.close()

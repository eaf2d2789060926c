"""Index: chunk id -> (pack, offset, length), a rebuildable cache in SQLite.

The index is never the truth: every row can be recomputed from the pack
tables (``rebuild``), and packs that reached storage before a crash but not
the index are found and added at open (``Repository._catch_up``).  WAL mode
lets worker threads look ids up while the writer adds packs.
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator

from replicator.errors import DiskFull, StorageError
from replicator.format.pack import BlobEntry

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS packs (name TEXT PRIMARY KEY, size INTEGER NOT NULL, blobs INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (
    id BLOB PRIMARY KEY, type INTEGER NOT NULL, pack TEXT NOT NULL,
    offset INTEGER NOT NULL, length INTEGER NOT NULL, raw_len INTEGER NOT NULL, seq INTEGER NOT NULL
) WITHOUT ROWID;
"""


class Index:
    def __init__(self, path: str, repo_id: str) -> None:
        self.path = path
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        db = self._db()
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key='repository'").fetchone()
        version = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None or row[0] != repo_id or version is None or int(version[0]) != SCHEMA_VERSION:
            # Another repository's cache, an older schema, or a new file: start over.
            with db:
                db.execute("DELETE FROM blobs")
                db.execute("DELETE FROM packs")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('repository', ?)", (repo_id,))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.isolation_level = "DEFERRED"
            self._local.db = db
            with self._write_lock:
                self._connections.append(db)
        return db

    def lookup(self, blob_id: bytes) -> tuple[str, BlobEntry] | None:
        row = self._db().execute(
            "SELECT pack, type, offset, length, raw_len, seq FROM blobs WHERE id=?", (blob_id,)
        ).fetchone()
        if row is None:
            return None
        return row[0], BlobEntry(row[1], blob_id, row[2], row[3], row[4], row[5])

    def has(self, blob_id: bytes) -> bool:
        return self._db().execute("SELECT 1 FROM blobs WHERE id=?", (blob_id,)).fetchone() is not None

    def add_pack(self, name: str, size: int, entries: Iterable[BlobEntry]) -> None:
        """Record a pack and its blobs in one transaction; its rows replace any row for the same blob.

        The pack was just read or written, so it is a real home of the blob; an
        older row may be stale or forged (the index is an unauthenticated cache).

        :raises StorageError: the index cannot be written (e.g. disk full); the pack
            stays in storage and the next open indexes it.
        """
        try:
            self._add_pack(name, size, entries)
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                raise DiskFull(self.path) from None
            raise StorageError(f"index {self.path}: {exc}") from None

    def _add_pack(self, name: str, size: int, entries: Iterable[BlobEntry]) -> None:
        db = self._db()
        with self._write_lock, db:
            db.execute("INSERT OR REPLACE INTO packs VALUES (?, ?, ?)", (name, size, 0))
            n = 0
            for e in entries:
                db.execute(
                    "INSERT OR REPLACE INTO blobs VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (e.id, e.type, name, e.offset, e.length, e.raw_len, e.seq),
                )
                n += 1
            db.execute("UPDATE packs SET blobs=? WHERE name=?", (n, name))

    def remove_pack(self, name: str) -> None:
        db = self._db()
        with self._write_lock, db:
            db.execute("DELETE FROM blobs WHERE pack=?", (name,))
            db.execute("DELETE FROM packs WHERE name=?", (name,))

    def packs(self) -> dict[str, int]:
        return dict(self._db().execute("SELECT name, size FROM packs"))

    def blobs_in(self, pack: str) -> list[BlobEntry]:
        rows = self._db().execute(
            "SELECT type, id, offset, length, raw_len, seq FROM blobs WHERE pack=? ORDER BY offset", (pack,)
        )
        return [BlobEntry(*r) for r in rows]

    def all_ids(self) -> Iterator[bytes]:
        for (blob_id,) in self._db().execute("SELECT id FROM blobs"):
            yield blob_id

    def count(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM blobs").fetchone()[0]

    def clear(self) -> None:
        db = self._db()
        with self._write_lock, db:
            db.execute("DELETE FROM blobs")
            db.execute("DELETE FROM packs")

    def close(self) -> None:
        """Close every thread's connection (call when no other thread uses the index)."""
        with self._write_lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()

"""Index: chunk id -> (pack, offset, length), a rebuildable cache in SQLite.

The index is never the truth: every row can be recomputed from the pack
tables (``rebuild``), and packs that reached storage before a crash but not
the index are found and added at open (``Repository._catch_up``).  WAL mode
lets worker threads look ids up while the writer adds packs.

Because it is only a cache, a damaged index never stops a command.  At open,
a file SQLite calls damaged (not a database, malformed, truncated: SQLite
compares the page count in the header with the file) or one holding any
other schema than ours is moved aside to ``<name>.damaged`` (its ``-wal``
and ``-shm`` are deleted, so a stale log is never replayed onto the new
file), and an empty index is started; the Repository then indexes every
pack again.  ``rebuilt_because`` says why, in one line, for the operator
(also for an empty, zero-byte file, which SQLite takes as a new database).
What is not checked at open: damage deep inside a healthy looking file
(that needs ``PRAGMA quick_check``, which reads the whole file: about 0.7 s
per million blobs).

Must never: delete or move a file it did not find damaged itself (the
file's inode is checked again just before it is moved), or hold keys.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator

from replicator.errors import DiskFull, StorageError
from replicator.format.pack import BlobEntry

SCHEMA_VERSION = 1
LOOKUP_BATCH = 500  # ids in one lookup_many statement (SQLite allows 999 parameters before 3.32)
DAMAGED_SUFFIX = ".damaged"  # where a damaged index is moved (one generation kept, replaced next time)

# An index whose tables differ from these statements (whitespace aside) is set aside and
# rebuilt: a change here makes every existing index "another schema" once, so bump
# SCHEMA_VERSION with it and say so in the release notes.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS packs (name TEXT PRIMARY KEY, size INTEGER NOT NULL, blobs INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (
    id BLOB PRIMARY KEY, type INTEGER NOT NULL, pack TEXT NOT NULL,
    offset INTEGER NOT NULL, length INTEGER NOT NULL, raw_len INTEGER NOT NULL, seq INTEGER NOT NULL
) WITHOUT ROWID;
"""

#: SQLite's primary result codes meaning "this file is damaged": SQLITE_CORRUPT, SQLITE_NOTADB.
_DAMAGE_CODES = frozenset({11, 26})
#: The same, by message, for Pythons without ``sqlite_errorcode`` (3.10).
_DAMAGE_MESSAGES = ("file is not a database", "database disk image is malformed")
_OPEN_ATTEMPTS = 3  # another process may set the same damaged file aside meanwhile: look again


class _Damaged(Exception):
    """Internal: the index file is damaged or not ours; the message is the reason."""


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _DAMAGE_CODES
    return any(m in str(exc) for m in _DAMAGE_MESSAGES)


def _schema_of(db: sqlite3.Connection) -> set[tuple[str, str, str]]:
    """(type, name, statement with whitespace collapsed) of every table and index, SQLite's own left out."""
    rows = db.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
    return {(kind, name, " ".join((sql or "").split())) for kind, name, sql in rows}


def _expected_schema() -> set[tuple[str, str, str]]:
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(_SCHEMA)
        return _schema_of(db)
    finally:
        db.close()


_EXPECTED = _expected_schema()


def _identity(path: str) -> tuple[int, int, int] | None:
    """(dev, ino, size) of ``path``, or None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_size


class Index:
    """The blob-location cache of one repository, at ``path``.

    ``rebuilt_because``: None, or one line saying why the index was started
    empty (a damaged file set aside, an empty file): the Repository shows it
    to the operator and indexes every pack again.

    :raises StorageError: the file cannot be opened or created, or is damaged
        and cannot be moved aside (a read-only directory).
    """

    def __init__(self, path: str, repo_id: str) -> None:
        self.path = path
        self.rebuilt_because: str | None = None
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        for _attempt in range(_OPEN_ATTEMPTS):
            seen = _identity(path)
            try:
                self._open(repo_id)
            except _Damaged as exc:
                self.close()
                self._set_aside(seen, str(exc))
                continue
            if seen is not None and seen[2] == 0 and self.rebuilt_because is None:
                self.rebuilt_because = f"the index {path} was empty (0 bytes); rebuilt from the packs"
            return
        raise StorageError(f"index {path} is damaged again after being set aside {_OPEN_ATTEMPTS} times")

    def _open(self, repo_id: str) -> None:
        """Open (or create) the file and check it is our schema.  :raises _Damaged: :raises StorageError:"""
        try:
            # Nothing is written before the file is known to be ours (the WAL switch
            # writes the header): a file set aside keeps the bytes it was found with.
            db = self._db(configure=False)
            schema = _schema_of(db)
            if not schema:
                # A new (or empty) file: the tables in one transaction, so
                # another process opening it meanwhile never sees half a schema.
                db.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
                schema = _schema_of(db)
            if schema != _EXPECTED:
                raise _Damaged("it holds another schema")
            self._configure(db)
            row = db.execute("SELECT value FROM meta WHERE key='repository'").fetchone()
            version = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None or row[0] != repo_id or version is None or version[0] != str(SCHEMA_VERSION):
                # Another repository's cache, an older schema version, or a new file: start over.
                with db:
                    db.execute("DELETE FROM blobs")
                    db.execute("DELETE FROM packs")
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('repository', ?)", (repo_id,))
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError as exc:
            if _is_damage(exc):
                raise _Damaged(str(exc)) from None
            self.close()
            raise StorageError(f"index {self.path}: {exc}") from None

    def _set_aside(self, seen: tuple[int, int, int] | None, reason: str) -> None:
        """Move the damaged file aside and delete its -wal and -shm.  :raises StorageError:"""
        now = _identity(self.path)
        if now is None or seen is None or now[:2] != seen[:2]:
            return  # replaced since we looked (another process set it aside): look at the new one
        aside = self.path + DAMAGED_SUFFIX
        try:
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):  # never replayed onto the new file
                try:
                    os.unlink(self.path + suffix)
                except FileNotFoundError:
                    pass
        except OSError as exc:
            raise StorageError(f"index {self.path} is damaged ({reason}) and cannot be moved aside: "
                               f"{exc.strerror or exc}; delete it and run again") from None
        self.rebuilt_because = (f"the index {self.path} was damaged ({reason}); moved to {aside} "
                                "and rebuilt from the packs")

    def _db(self, *, configure: bool = True) -> sqlite3.Connection:
        """This thread's connection; ``configure=False`` for the first one, whose file is not checked yet."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            with self._write_lock:
                self._connections.append(db)
            self._local.db = db
            if configure:
                self._configure(db)
        return db

    @staticmethod
    def _configure(db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.isolation_level = "DEFERRED"

    def get_meta(self, key: str) -> str | None:
        """A note the program keeps in this cache (lost with it, which only costs the work it saves)."""
        row = self._db().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._write_lock, self._db() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def lookup(self, blob_id: bytes) -> tuple[str, BlobEntry] | None:
        row = self._db().execute(
            "SELECT pack, type, offset, length, raw_len, seq FROM blobs WHERE id=?", (blob_id,)
        ).fetchone()
        if row is None:
            return None
        return row[0], BlobEntry(row[1], blob_id, row[2], row[3], row[4], row[5])

    def lookup_many(self, blob_ids: Iterable[bytes]) -> dict[bytes, tuple[str, BlobEntry]]:
        """Where each of ``blob_ids`` is, in one query per ``LOOKUP_BATCH`` ids (a restore asks for a round of
        blobs at once: one statement per blob cost its read-ahead thread more than the reading).

        :returns: id -> (pack, entry) for the ids found; ids not in the index are absent.
        """
        wanted = list(dict.fromkeys(blob_ids))
        found: dict[bytes, tuple[str, BlobEntry]] = {}
        db = self._db()
        for i in range(0, len(wanted), LOOKUP_BATCH):
            part = wanted[i : i + LOOKUP_BATCH]
            rows = db.execute("SELECT id, pack, type, offset, length, raw_len, seq FROM blobs WHERE id IN "
                              f"({','.join('?' * len(part))})", part)
            for blob_id, pack, *rest in rows:
                found[blob_id] = (pack, BlobEntry(rest[0], blob_id, *rest[1:]))
        return found

    def has(self, blob_id: bytes) -> bool:
        return self._db().execute("SELECT 1 FROM blobs WHERE id=?", (blob_id,)).fetchone() is not None

    def add_pack(self, name: str, size: int, entries: Iterable[BlobEntry], *, replace: bool = True) -> None:
        """Record a pack and its blobs in one transaction; its rows replace any row for the same blob.

        The pack was just read or written, so it is a real home of the blob; an
        older row may be stale or forged (the index is an unauthenticated cache).
        ``replace=False`` (a quarantined, i.e. damaged, pack): its rows only fill in
        blobs no other pack holds, a last resort for reading what is still intact.

        :raises StorageError: the index cannot be written (e.g. disk full); the pack
            stays in storage and the next open indexes it.
        """
        try:
            self._add_pack(name, size, entries, replace)
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                raise DiskFull(self.path) from None
            raise StorageError(f"index {self.path}: {exc}") from None

    def _add_pack(self, name: str, size: int, entries: Iterable[BlobEntry], replace: bool) -> None:
        db = self._db()
        with self._write_lock, db:
            db.execute("INSERT OR REPLACE INTO packs VALUES (?, ?, ?)", (name, size, 0))
            rows = [(e.id, e.type, name, e.offset, e.length, e.raw_len, e.seq) for e in entries]
            # One statement per pack (not one per blob): the pack writer's thread spent most of its time here.
            db.executemany(f"INSERT OR {'REPLACE' if replace else 'IGNORE'} INTO blobs VALUES (?, ?, ?, ?, ?, ?, ?)",
                           rows)
            db.execute("UPDATE packs SET blobs=? WHERE name=?", (len(rows), name))

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

"""State cache: what a file looked like when it was last chunked.

Maps a relative path to (size, mtime_ns, inode, ctime_ns) and the chunk ids
it had then, so an unchanged file is not read again.  A cached row is only a
hint: the engine uses it only when every chunk id in it is still in the
repository, so a stale or damaged cache can cost time, never correctness.
One SQLite file per (repository, source name), kept outside the repository.

Rows are keyed by (directory, name), and read one directory at a time: the
first lookup in a directory fetches all its rows in one query, and the rows of
the directories on the walk's current path stay in memory until the walk
leaves them (memory bounded by the directories on one path, not the tree).
What the walk saw is tracked the same way: when it leaves a directory, the
names of its rows it did not see go to a temporary table, as does the
directory; after a complete sync ``forget_unseen`` deletes those rows and
the rows of every directory the walk never entered (nothing per file in RAM).
Rows are written in the sync's one transaction, committed after the snapshot:
a kill at any moment leaves the cache as the last complete sync left it.

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
CREATE TABLE IF NOT EXISTS entries (
    dir BLOB, name BLOB, size INTEGER, mtime_ns INTEGER, ino INTEGER, ctime_ns INTEGER, chunks BLOB,
    PRIMARY KEY (dir, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
"""
# Caches before per-directory rows keyed each file by its whole path; their rows are moved over once.
_OLD_TABLE = "files"
_LAST_SNAPSHOT = "last_snapshot"


def state_path(cache_dir: str, repo_id: str, source: str) -> str:
    tag = hashlib.sha256(source.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return os.path.join(cache_dir, repo_id, f"state-{tag}.sqlite")


class StateCache:
    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path = path
        try:
            self._db = _open_writable(path)
        except sqlite3.DatabaseError:
            # A damaged cache is thrown away: it is only a hint.
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(path + suffix)
                except FileNotFoundError:
                    pass
            self._db = _open_writable(path)
        # Paths are kept as their file-system bytes: a name that is not UTF-8 (os.fsdecode gives it
        # surrogates) is a valid file name and must not crash the cache.
        self._dirs: dict[bytes, dict[bytes, tuple]] = {}  # the rows of the directories on the current path
        self._seen_names: dict[bytes, set[bytes]] = {}  # and the names the walk saw in each of them
        self._track = True
        self._db.executescript("CREATE TEMP TABLE IF NOT EXISTS visited (dir BLOB PRIMARY KEY) WITHOUT ROWID;"
                               "CREATE TEMP TABLE IF NOT EXISTS gone (dir BLOB, name BLOB);")

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
        self._dirs = {}
        self._seen_names = {}
        self._track = False  # a dry run forgets nothing
        try:
            self._db = sqlite3.connect(uri, uri=True)
            # A cache of the older layout is not converted here (nothing is written): not used.
            self._db.execute("SELECT dir, name, size, mtime_ns, ino, ctime_ns, chunks FROM entries LIMIT 1").fetchall()
            self._db.execute("SELECT key, value FROM meta LIMIT 1").fetchall()
        except sqlite3.DatabaseError:
            return None  # damaged, or not ours: only a hint, and a dry run leaves it to the next sync
        return self

    def _rows(self, path: str) -> tuple[dict[bytes, tuple], bytes]:
        """The rows of ``path``'s directory (one query when the walk enters it) and its name; ``path`` is seen."""
        raw = os.fsencode(path)
        cut = raw.rfind(b"/")
        parent, name = (raw[:cut], raw[cut + 1:]) if cut >= 0 else (b"", raw)
        rows = self._dirs.get(parent)
        if rows is None:
            # Keep the directories on the path to this one (the walk comes back to them), drop the rest.
            keep = {d: r for d, r in self._dirs.items() if d == b"" or parent.startswith(d + b"/")}
            for d in self._dirs.keys() - keep.keys():
                self._left(d)
            self._dirs = keep
            rows = self._dirs[parent] = {
                n: tuple(rest) for n, *rest in self._db.execute(
                    "SELECT name, size, mtime_ns, ino, ctime_ns, chunks FROM entries WHERE dir=?", (parent,))}
            if self._track:
                self._seen_names[parent] = set()
                self._db.execute("INSERT OR IGNORE INTO temp.visited VALUES (?)", (parent,))
        self._saw(parent, name)  # the walk looked the file up: it exists
        return rows, name

    def _left(self, directory: bytes) -> None:
        """The walk is done with ``directory``: its rows it did not see are to go (at ``forget_unseen``)."""
        seen = self._seen_names.pop(directory, None)
        if seen is None:
            return
        gone = [(directory, n) for n in self._dirs.get(directory, {}) if n not in seen]
        if gone:
            self._db.executemany("INSERT INTO temp.gone VALUES (?, ?)", gone)

    def _saw(self, parent: bytes, name: bytes) -> None:
        seen = self._seen_names.get(parent)
        if seen is not None:
            seen.add(name)

    def lookup(self, path: str, key: tuple[int, int, int, int]) -> tuple[bytes, ...] | None:
        """:returns: the cached chunk ids when the file's stat key is unchanged."""
        rows, name = self._rows(path)
        row = rows.get(name)
        if row is None or tuple(row[:4]) != key:
            return None
        raw = row[4]
        if not isinstance(raw, bytes) or len(raw) % ID_SIZE:
            return None
        return tuple(raw[i : i + ID_SIZE] for i in range(0, len(raw), ID_SIZE))

    def known(self, path: str) -> bool:
        """Whether the cache has a row for ``path`` (whatever its stat): a file the last sync saw."""
        try:
            rows, name = self._rows(path)
        except sqlite3.DatabaseError:
            return False
        return name in rows

    def record(self, path: str, key: tuple[int, int, int, int], chunks: tuple[bytes, ...]) -> None:
        """A file chunked now (the pipeline's consumer calls this after the walk looked the file up, which is
        what marks it seen: this never moves the walk's directories)."""
        raw = os.fsencode(path)
        cut = raw.rfind(b"/")
        parent, name = (raw[:cut], raw[cut + 1:]) if cut >= 0 else (b"", raw)
        data = b"".join(chunks)
        self._db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)", (parent, name, *key, data))
        if parent not in self._seen_names:  # a directory the walk has left (or never looked up): still visited
            self._db.execute("INSERT OR IGNORE INTO temp.visited VALUES (?)", (parent,))
        rows = self._dirs.get(parent)
        if rows is not None:
            rows[name] = (*key, data)

    def keep(self, path: str) -> None:
        """Nothing to do: the lookup that found the file unchanged marked it seen (kept for callers)."""

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
        """Drop rows of files that no longer exist at the source (after a complete sync): the names the walk
        did not see in the directories it entered, and every row of the directories it never entered."""
        for d in list(self._seen_names):
            self._left(d)
        self._db.execute("DELETE FROM entries WHERE (dir, name) IN (SELECT dir, name FROM temp.gone)")
        self._db.execute("DELETE FROM entries WHERE dir NOT IN (SELECT dir FROM temp.visited)")
        self._db.execute("DELETE FROM temp.gone")
        self._db.execute("DELETE FROM temp.visited")
        self._db.commit()
        self._dirs = {}

    def close(self) -> None:
        self._db.commit()
        self._db.close()


def _split(path: object) -> tuple[bytes, bytes] | None:
    """A whole-path key of the older layout as (directory, name); None for a row that is not bytes."""
    if not isinstance(path, bytes):
        return None  # text paths of still older caches: dropped (a cache miss, once)
    cut = path.rfind(b"/")
    return (path[:cut], path[cut + 1:]) if cut >= 0 else (b"", path)


def _open_writable(path: str) -> sqlite3.Connection:
    """Open (create) the cache at ``path`` and move the rows of an older layout over, in one transaction."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_SCHEMA)
    old = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (_OLD_TABLE,)).fetchone()
    if old is not None:
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(f"SELECT path, size, mtime_ns, ino, ctime_ns, chunks FROM {_OLD_TABLE}")
            db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                           ((*where, *rest) for p, *rest in rows if (where := _split(p)) is not None))
            db.execute(f"DROP TABLE {_OLD_TABLE}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    db.isolation_level = "DEFERRED"  # the sync's rows in one implicit transaction, committed after the snapshot
    return db

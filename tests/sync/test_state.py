"""The state cache: rows read one directory at a time, the older layout moved over, nothing half-written."""
from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3

from replicator.sync.state import StateCache
from tests.conftest import sync_repo

ID = bytes(range(32))


def _count_selects(state: StateCache) -> list[str]:
    seen: list[str] = []
    state._db.set_trace_callback(lambda sql: seen.append(sql) if "FROM entries" in sql else None)
    return seen


def test_lookup_is_one_query_per_directory(tmp_path):
    state = StateCache(str(tmp_path / "s.sqlite"))
    key = (1, 2, 3, 4)
    paths = [f"{d}f{i}" for d in ("", "a/", "a/b/", "c/") for i in range(10)]
    for p in paths:
        state.record(p, key, (ID,))
    state.commit()
    state.close()
    state = StateCache(str(tmp_path / "s.sqlite"))
    queries = _count_selects(state)
    # the walk's order: a directory's files around its subdirectory's
    order = [p for p in paths if p.startswith("a/f")][:5] + [p for p in paths if p.startswith("a/b/")] + \
        [p for p in paths if p.startswith("a/f")][5:] + [p for p in paths if p.startswith("c/")] + \
        [p for p in paths if "/" not in p]
    assert all(state.lookup(p, key) == (ID,) for p in order)
    assert len(queries) == 4, queries  # a, a/b, c and the root: once each
    assert state.lookup("a/f0", (9, 9, 9, 9)) is None and state.known("a/f0") and not state.known("a/none")
    state.close()


def test_rows_of_the_older_layout_are_kept(tmp_path):
    path = str(tmp_path / "old.sqlite")
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ino INTEGER, "
                     "ctime_ns INTEGER, chunks BLOB) WITHOUT ROWID;"
                     "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;")
    db.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?)",
                   [(b"ward/a.hl7", 1, 2, 3, 4, ID), (b"top", 5, 6, 7, 8, ID), ("text/path", 1, 1, 1, 1, ID)])
    db.commit()
    db.close()
    state = StateCache(path)
    assert state.lookup("ward/a.hl7", (1, 2, 3, 4)) == (ID,) and state.lookup("top", (5, 6, 7, 8)) == (ID,)
    assert not state.known("text/path")
    state.close()
    tables = {n for (n,) in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "files" not in tables


def _record_and_die(path: str) -> None:
    state = StateCache(path)
    state.record("ward/new", (1, 1, 1, 1), (ID,))
    state._db.execute("SELECT 1")  # the row is written in the open transaction, not committed
    os.kill(os.getpid(), signal.SIGKILL)


def test_kill_before_commit_leaves_the_last_complete_sync(tmp_path):
    path = str(tmp_path / "s.sqlite")
    state = StateCache(path)
    state.record("ward/old", (2, 2, 2, 2), (ID,))
    state.commit()
    state.close()
    proc = multiprocessing.get_context("fork").Process(target=_record_and_die, args=(path,))
    proc.start()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    state = StateCache(path)
    assert state.lookup("ward/old", (2, 2, 2, 2)) == (ID,) and not state.known("ward/new")
    state.close()


def test_sync_with_the_cache_reads_nothing_unchanged(tmp_path, src, repo):
    for d in ("a", "a/deep", "b"):
        (src / d).mkdir()
        for i in range(20):
            (src / d / f"f{i:02d}").write_bytes(f"{d}/{i}".encode())
    state = StateCache(str(tmp_path / "state.sqlite"))
    sync_repo(str(src), repo, "ward", state=state)
    state.close()
    state = StateCache(str(tmp_path / "state.sqlite"))
    queries = _count_selects(state)
    again = sync_repo(str(src), repo, "ward", state=state)
    assert again.files_unchanged == 60 and again.bytes_read == 0
    assert len([q for q in queries if q.startswith("SELECT name")]) == 3  # a, a/deep, b (the root holds no file)
    state.close()


def _rows(path) -> set[bytes]:
    db = sqlite3.connect(path)
    try:
        return {d + b"/" + n if d else n for d, n in db.execute("SELECT dir, name FROM entries")}
    finally:
        db.close()


def test_rows_of_files_gone_are_dropped_and_what_is_kept_in_memory_is_one_path(tmp_path, src, repo):
    import shutil

    for d in [f"ward{w}" for w in range(30)] + ["ward0/sub"]:
        (src / d).mkdir()
        for i in range(10):
            (src / d / f"f{i}").write_bytes(f"{d}/{i}".encode())
    path = str(tmp_path / "state.sqlite")
    state = StateCache(path)
    sync_repo(str(src), repo, "ward", state=state)
    state.close()
    assert len(_rows(path)) == 310
    os.unlink(src / "ward3" / "f1")  # a file gone from a directory still there
    shutil.rmtree(src / "ward7")  # a whole directory gone
    for i in range(10):
        os.unlink(src / "ward9" / f"f{i}")  # a directory left with no file
    state = StateCache(path)
    again = sync_repo(str(src), repo, "ward", state=state)
    assert again.files_unchanged == 289
    # what the cache tracks for the walk is the directories on its current path, not every file it saw
    assert sum(len(v) for v in state._seen_names.values()) <= 20
    state.close()
    rows = _rows(path)
    assert len(rows) == 289
    assert b"ward3/f1" not in rows and not any(r.startswith((b"ward7/", b"ward9/")) for r in rows)
    assert b"ward0/sub/f3" in rows and b"ward3/f2" in rows

"""A damaged index.sqlite (a cache) is set aside and rebuilt from the packs, with a warning.

Each damage is planted in a copy of one repository, then the repository is
opened in-process (the warning, the rebuilt rows, the file set aside) and
through each command an operator would run (``snapshots``, ``restore``,
``verify --data``, ``sync``): none may fail because of the cache.
"""
from __future__ import annotations

import os
import random
import shutil
import sqlite3

import pytest

from replicator.cli import main
from replicator.format.entry import KIND_FILE
from replicator.repo.repository import INDEX_FILE, Repository
from tests.conftest import PASSPHRASE, run_cli, sync_repo
from tests.treecompare import diff, manifest

PW = PASSPHRASE.encode()


def _other_schema(tmp_path) -> bytes:
    """A healthy SQLite file whose tables clash with the index's (an older or foreign cache)."""
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE meta (k, v); CREATE TABLE blobs (x BLOB); INSERT INTO blobs VALUES (x'00');")
    db.commit()
    db.close()
    return path.read_bytes()


def _damage(kind: str, good: bytes, tmp_path) -> tuple[bytes, bytes | None, bytes | None]:
    """(index bytes, -wal bytes or None, -shm bytes or None) for one kind of damage."""
    rnd = random.Random(kind)
    if kind == "garbage":
        return rnd.randbytes(len(good)), None, None
    if kind == "garbage-with-wal-and-shm":
        return rnd.randbytes(len(good)), rnd.randbytes(40_000), rnd.randbytes(32_768)
    if kind == "truncated":
        return good[: len(good) // 2], None, None
    if kind == "truncated-in-header":
        return good[:60], None, None
    if kind == "other-schema":
        return _other_schema(tmp_path), None, None
    if kind == "zero-length":
        return b"", None, None
    raise AssertionError(kind)


DAMAGES = ["garbage", "garbage-with-wal-and-shm", "truncated", "truncated-in-header", "other-schema", "zero-length"]
SET_ASIDE = {"garbage", "garbage-with-wal-and-shm", "truncated", "truncated-in-header", "other-schema"}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A repository with one snapshot of a small tree, closed cleanly (no -wal left)."""
    root = tmp_path_factory.mktemp("base")
    src = root / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "notes.txt").write_text("patient record\n" * 2000)
    (src / "scan.bin").write_bytes(random.Random(1).randbytes(700_000))
    with Repository.init(str(root / "repo"), PW, log2n=14) as repo:
        snap = sync_repo(str(src), repo, "s").snapshot
        blobs = repo.index.count()
        assert len(repo.index.packs()) >= 1
    assert not os.path.exists(root / "repo" / (INDEX_FILE + "-wal"))
    return {"src": src, "repo": root / "repo", "snapshot": snap.id, "blobs": blobs}


def _damaged_copy(base, tmp_path, kind: str):
    repo = tmp_path / "repo"
    shutil.copytree(base["repo"], repo)
    index = repo / INDEX_FILE
    good = index.read_bytes()
    assert len(good) > 8192  # several pages, so "truncated" cuts real content
    data, wal, shm = _damage(kind, good, tmp_path)
    index.write_bytes(data)
    for suffix, content in (("-wal", wal), ("-shm", shm)):
        if content is not None:
            (repo / (INDEX_FILE + suffix)).write_bytes(content)
    return repo, data


@pytest.mark.parametrize("kind", DAMAGES)
def test_damaged_index_is_set_aside_and_rebuilt_with_a_warning(base, tmp_path, kind):
    repo_path, planted = _damaged_copy(base, tmp_path, kind)
    with Repository.open(str(repo_path), PW) as repo:
        assert len(repo.warnings) == 1, repo.warnings
        warning = repo.warnings[0]
        assert "index" in warning and "rebuilt from the packs" in warning and "\n" not in warning
        assert repo.index.count() == base["blobs"]
        snap = repo.find_snapshot()
        assert snap.id == base["snapshot"]
        for e in repo.walk_tree(snap.tree):
            if e.kind == KIND_FILE:
                data = b"".join(repo.read_blob(c) for c in e.chunks)
                assert data == (base["src"] / e.path).read_bytes()
    aside = repo_path / (INDEX_FILE + ".damaged")
    if kind in SET_ASIDE:
        assert "damaged" in warning and str(aside) in warning
        assert aside.read_bytes() == planted  # kept for the operator to look at, never reused
    else:
        assert "empty" in warning and not aside.exists()
    # The rebuilt index is healthy: the next open is silent.
    with Repository.open(str(repo_path), PW) as repo:
        assert repo.warnings == [] and repo.index.count() == base["blobs"]


def test_a_locked_open_also_rebuilds(base, tmp_path):
    repo_path, _ = _damaged_copy(base, tmp_path, "truncated")
    with Repository.open(str(repo_path), PW, exclusive=True) as repo:
        assert len(repo.warnings) == 1 and repo.index.count() == base["blobs"]


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _works(rc: int, out: str, err: str) -> None:
    """The command did its job; the only change a damaged cache may bring is the warning (exit code 1)."""
    assert "internal error" not in err and "Traceback" not in err, err
    assert rc in (0, 1), (rc, err)
    if rc == 1:
        assert "rebuilt from the packs" in out + err, (out, err)


@pytest.mark.parametrize("kind", DAMAGES)
@pytest.mark.parametrize("command", ["snapshots", "restore", "verify", "sync"])
def test_every_command_works_on_a_damaged_index(base, tmp_path, capsys, monkeypatch, kind, command):
    monkeypatch.setenv("REPLICATOR_PASSPHRASE", PASSPHRASE)
    repo_path, _ = _damaged_copy(base, tmp_path, kind)
    repo = str(repo_path)
    if command == "snapshots":
        rc, out, err = _cli(capsys, "snapshots", repo)
        _works(rc, out, err)
        assert base["snapshot"][:16] in out
    elif command == "restore":
        target = tmp_path / "restored"
        rc, out, err = _cli(capsys, "restore", repo, str(target))
        _works(rc, out, err)
        assert diff(manifest(str(base["src"])), manifest(str(target))) == []
    elif command == "verify":
        rc, out, err = _cli(capsys, "verify", repo, "--data")
        _works(rc, out, err)
        assert "no problems found" in out
    else:
        rc, out, err = _cli(capsys, "sync", str(base["src"]), repo, "--name", "s", "--no-cache")
        _works(rc, out, err)
        with Repository.open(repo, PW) as r:
            snaps = r.snapshots()
            assert [s.generation for s in snaps] == [1, 2]
            assert snaps[1].tree == snaps[0].tree  # the same tree again, found in the rebuilt index


def test_operator_run_on_a_garbage_index(base, tmp_path):
    repo_path, _ = _damaged_copy(base, tmp_path, "garbage")
    r = run_cli("snapshots", str(repo_path))
    _works(r.returncode, r.stdout, r.stderr)
    assert base["snapshot"][:16] in r.stdout


def test_index_that_cannot_be_set_aside_is_a_one_line_storage_error(base, tmp_path, monkeypatch):
    from replicator.errors import StorageError
    from replicator.store import index as index_mod

    repo_path, _ = _damaged_copy(base, tmp_path, "garbage")

    def refuse(src, dst, *a, **kw):
        raise PermissionError(13, "Permission denied", src)

    monkeypatch.setattr(index_mod.os, "replace", refuse)
    with pytest.raises(StorageError) as err:
        Repository.open(str(repo_path), PW)
    assert "index" in str(err.value) and "\n" not in str(err.value)

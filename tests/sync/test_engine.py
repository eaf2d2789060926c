"""The sync engine: torn reads, the state cache, skipped files, dedup."""
from __future__ import annotations

import os

import pytest

from replicator.core.chunker import Chunker
from replicator.core.params import ChunkerParams
from replicator.repo.repository import Repository
from replicator.sync import engine
from replicator.sync.engine import sync
from replicator.sync.state import StateCache

SMALL = ChunkerParams(min_size=4096, avg_size=16384, max_size=65536)


@pytest.fixture
def repo(tmp_path):
    r = Repository.init(str(tmp_path / "repo"), b"pw", log2n=14, params=SMALL)
    yield r
    r.close()


def contents(repo, snap) -> dict[str, bytes]:
    return {e.path: b"".join(repo.read_blob(c) for c in e.chunks)
            for e in repo.walk_tree(snap.tree) if e.kind == "file"}


def _grow_while_reading(monkeypatch, target: str, times: int):
    """Append to ``target`` after its first chunk is read, the first ``times`` reads."""
    real = Chunker.chunks
    state = {"n": 0}

    def chunks(self, f, size_hint=None):
        first = True
        for c in real(self, f, size_hint):
            yield c
            if first and state["n"] < times and _is(f, target):
                state["n"] += 1
                with open(target, "ab") as g:
                    g.write(b"more data written by the application\n")
            first = False

    monkeypatch.setattr(Chunker, "chunks", chunks)
    return state


def _is(f, target: str) -> bool:
    try:
        return os.path.samefile(f"/proc/self/fd/{f.fileno()}", target)
    except OSError:
        return False


def test_file_changing_while_read_is_read_again(tmp_path, repo, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    log = src / "app.log"
    log.write_bytes(os.urandom(200_000))
    state = _grow_while_reading(monkeypatch, str(log), times=1)
    report = sync(str(src), repo, "s")
    assert state["n"] == 1
    assert not report.warnings
    assert contents(repo, report.snapshot)["app.log"] == log.read_bytes()


def test_file_that_keeps_changing_is_left_out_never_torn(tmp_path, repo, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "stable.txt").write_bytes(b"stable\n" * 1000)
    log = src / "busy.log"
    log.write_bytes(os.urandom(200_000))
    _grow_while_reading(monkeypatch, str(log), times=100)
    report = sync(str(src), repo, "s")
    assert [p for p, _m in report.warnings] == ["busy.log"]
    assert "changed while being read" in report.warnings[0][1]
    got = contents(repo, report.snapshot)
    assert "busy.log" not in got and got["stable.txt"] == b"stable\n" * 1000


def test_state_cache_skips_unchanged_files_and_notices_changes(tmp_path, repo):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(os.urandom(50_000))
    cache = StateCache(str(tmp_path / "state.sqlite"))
    first = sync(str(src), repo, "s", state=cache)
    assert first.bytes_read == 250_000 and first.files_unchanged == 0
    (src / "f2").write_bytes(os.urandom(50_000))
    second = sync(str(src), repo, "s", state=cache)
    assert second.files_unchanged == 4 and second.bytes_read == 50_000
    assert contents(repo, second.snapshot)["f2"] == (src / "f2").read_bytes()
    cache.close()


def test_state_cache_row_naming_missing_chunks_is_not_trusted(tmp_path, repo):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(100_000))
    cache = StateCache(str(tmp_path / "state.sqlite"))
    sync(str(src), repo, "s", state=cache)
    # A cache from another repository (or after a prune) names chunks this one lacks.
    other = Repository.init(str(tmp_path / "other"), b"pw", log2n=14, params=SMALL)
    report = sync(str(src), other, "s", state=cache)
    assert report.files_unchanged == 0 and report.bytes_read == 100_000
    assert contents(other, report.snapshot)["a"] == (src / "a").read_bytes()
    other.close()
    cache.close()


def test_only_missing_chunks_are_stored(tmp_path, repo):
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(1_000_000)
    (src / "one").write_bytes(data)
    first = sync(str(src), repo, "s")
    (src / "copy").write_bytes(data)
    second = sync(str(src), repo, "s")
    assert first.chunks_new == first.chunks_total > 10
    assert second.chunks_new == 0 and second.chunks_total == 2 * first.chunks_total


def test_unreadable_file_is_reported_and_skipped(tmp_path, repo, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok").write_bytes(b"fine")
    (src / "secret").write_bytes(b"no access")
    real_open = os.open

    def fake_open(path, flags, *a, **kw):
        if str(path).endswith("secret"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(engine.os, "open", fake_open)
    report = sync(str(src), repo, "s")
    assert report.warnings == [("secret", "cannot open: Permission denied")]
    assert set(contents(repo, report.snapshot)) == {"ok"}


def test_hard_links_share_chunks_and_are_recorded(tmp_path, repo):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(70_000))
    os.link(src / "a", src / "b")
    report = sync(str(src), repo, "s")
    assert report.hardlinks == 1 and report.files == 2
    entries = {e.path: e for e in repo.walk_tree(report.snapshot.tree)}
    assert entries["b"].link_to == "a" and entries["b"].chunks == entries["a"].chunks

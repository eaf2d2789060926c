"""A sync that changes nothing commits no new snapshot (unless asked to), and still checks everything."""
from __future__ import annotations

import json

import pytest

from replicator.errors import HistoryDiverged
from replicator.repo.lineage import LineageMemory, lineage_path
from replicator.sync.engine import SyncRun
from replicator.sync.options import SyncOptions


def _sync(repo, src, cache, **options):
    lineage = LineageMemory(lineage_path(str(cache), repo.id, repo.location), repo.location)
    with repo.writer(lineage=lineage) as writer:
        return SyncRun(str(src), writer, SyncOptions("ward", cache_dir=str(cache), **options)).run()


def _generations(repo) -> list[int]:
    with repo.writer() as w:
        return sorted(s.generation for s in w.snapshots([]) if s.source == "ward")


def test_unchanged_source_commits_nothing_and_reports_the_snapshot(tmp_path, src, repo):
    (src / "a.txt").write_bytes(b"record\n" * 100)
    (src / "sub").mkdir()
    (src / "sub" / "b.txt").write_bytes(b"other\n")
    first = _sync(repo, src, tmp_path / "cache")
    assert first.committed and not first.unchanged
    again = _sync(repo, src, tmp_path / "cache")
    assert again.unchanged and not again.committed
    assert again.snapshot.id == first.snapshot.id and again.files == 2  # walked and counted all the same
    assert _generations(repo) == [1]
    (src / "sub" / "b.txt").write_bytes(b"changed\n")
    changed = _sync(repo, src, tmp_path / "cache")
    assert changed.committed and changed.snapshot.generation == 2


def test_always_commit_forces_a_snapshot(tmp_path, src, repo):
    (src / "a.txt").write_bytes(b"x")
    _sync(repo, src, tmp_path / "cache")
    forced = _sync(repo, src, tmp_path / "cache", always_commit=True)
    assert forced.committed and forced.snapshot.generation == 2 and forced.snapshot.parent is not None


def test_same_tree_but_other_root_stats_is_a_change(tmp_path, src, repo, monkeypatch):
    """Nothing changed means the same root tree AND the same recorded stats (root filesystem, counts)."""
    import replicator.sync.engine as engine

    (src / "a.txt").write_bytes(b"x")
    _sync(repo, src, tmp_path / "cache")
    real = engine.SourceRoot.stats
    monkeypatch.setattr(engine.SourceRoot, "stats", lambda self: {**real(self), "root_fs": "other-fs"})
    moved = _sync(repo, src, tmp_path / "cache", confirm_source=True)
    assert moved.committed and moved.snapshot.generation == 2


def test_without_lineage_memory_a_commit_is_made(src, repo):
    """Only this site's own last commit, as its lineage memory records it, may stand for a no-change sync."""
    from tests.conftest import sync_repo

    (src / "a.txt").write_bytes(b"x")
    sync_repo(str(src), repo, "ward")
    assert sync_repo(str(src), repo, "ward").committed
    assert _generations(repo) == [1, 2]


def test_no_change_still_runs_the_lineage_check(tmp_path, src, repo):
    """A destination whose latest snapshot is not this site's last commit is refused, change or not."""
    (src / "a.txt").write_bytes(b"x")
    _sync(repo, src, tmp_path / "cache")
    _sync(repo, src, tmp_path / "other-site", always_commit=True)  # another writer continues the lineage
    with pytest.raises(HistoryDiverged):
        _sync(repo, src, tmp_path / "cache")


def test_cli_no_change_says_so_and_exits_0(tmp_path, src, cli_repo, cli):
    (src / "a.txt").write_bytes(b"record")
    cache = ["--cache-dir", str(tmp_path / "cache"), "--name", "ward"]
    first = json.loads(cli("sync", str(src), str(cli_repo), *cache, "--json").stdout)
    r = cli("sync", str(src), str(cli_repo), *cache)
    assert r.returncode == 0, r.stderr
    assert f"no change since snapshot {first['snapshot'][:16]}" in r.stdout and ") committed" not in r.stdout
    doc = json.loads(cli("sync", str(src), str(cli_repo), *cache, "--json").stdout)
    assert doc["committed"] is False and doc["snapshot"] == first["snapshot"] and doc["generation"] == 1
    r = cli("sync", str(src), str(cli_repo), *cache, "--always-commit", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["generation"] == 2
    snaps = json.loads(cli("snapshots", str(cli_repo), "--json").stdout)["snapshots"]
    assert [s["generation"] for s in snaps] == [1, 2]

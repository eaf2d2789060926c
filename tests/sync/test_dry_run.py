"""``sync --dry-run``: walks and chunks, says what would be read and sent, and writes nothing anywhere:
the repository (local or at the other site) and the cache directory are byte-identical afterwards."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from replicator.store.lock import FileLock
from replicator.sync.engine import SyncRun
from replicator.sync.options import SyncOptions
from tests.conftest import run_cli
from tests.transport.conftest import make_tree, site  # noqa: F401 - the fixture of a real serve

#: The fields a dry run and the real sync after it must agree on.
SAME = ("files", "files_new", "files_changed", "files_unchanged", "bytes_read", "chunks_total", "chunks_new",
        "bytes_new", "excluded")


def tree_state(*roots: Path) -> dict[str, object]:
    """Every directory and file under ``roots``: the file's bytes, or "dir" (absent roots: "absent")."""
    out: dict[str, object] = {}
    for root in roots:
        if not root.exists():
            out[str(root)] = "absent"
            continue
        for dirpath, _dirnames, filenames in os.walk(root):
            out[dirpath] = "dir"
            for name in filenames:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    out[path] = f.read()
    return out


def _source(src: Path) -> None:
    make_tree(src / "imaging", 3, 200_000, seed=11)
    (src / "reports").mkdir()
    for i in range(5):
        (src / "reports" / f"r{i}.txt").write_text(f"report {i}\n" * 300)
    (src / "scratch.tmp").write_text("left out")


def _change(src: Path) -> None:
    (src / "reports" / "r2.txt").write_text("amended\n" * 500)  # changed
    make_tree(src / "new", 1, 150_000, seed=12)  # new


@pytest.fixture
def local(tmp_path):
    repo = tmp_path / "repo"
    r = run_cli("init", str(repo), "--kdf-work", "14", "-q")
    assert r.returncode == 0, r.stderr
    src = tmp_path / "src"
    _source(src)
    return src, repo, tmp_path / "cache"


def _sync(src, repo, cache, *extra):
    return run_cli("sync", str(src), str(repo), "--name", "x", "--cache-dir", str(cache), "--exclude", "*.tmp",
                   *extra)


def test_local_dry_run_writes_nothing_and_predicts_the_sync(local):
    src, repo, cache = local
    assert _sync(src, repo, cache).returncode == 0
    _change(src)
    before = tree_state(repo, cache)
    dry = _sync(src, repo, cache, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert tree_state(repo, cache) == before  # no pack, no snapshot, no index, state cache or lineage change
    d = json.loads(dry.stdout)
    assert d["dry_run"] is True and d["snapshot"] is None and d["source"] == "x"
    assert (d["files"], d["files_new"], d["files_changed"], d["files_unchanged"]) == (9, 1, 1, 7)
    assert d["bytes_read"] == 150_000 + len("amended\n") * 500
    assert d["chunks_new"] >= 2 and 150_000 <= d["bytes_new"] <= d["bytes_read"]
    assert d["excluded"] == 1 and d["excluded_paths"] == [{"path": "scratch.tmp", "reason": "matches '*.tmp'"}]

    real = _sync(src, repo, cache, "--json")
    assert real.returncode == 0, real.stderr
    s = json.loads(real.stdout)
    assert s["dry_run"] is False and s["generation"] == 2
    assert {k: d[k] for k in SAME} == {k: s[k] for k in SAME}


def test_first_dry_run_creates_no_cache_and_counts_everything_new(local):
    src, repo, cache = local
    before = tree_state(repo, cache)
    dry = _sync(src, repo, cache, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert tree_state(repo, cache) == before and not cache.exists()
    lines = dry.stdout.splitlines()
    assert lines[0] == f"dry run of x to {repo}: nothing written, nothing committed", lines
    assert lines[1].startswith("  8 files (8 new, 0 changed, 0 unchanged), 2 dirs, 0 symlinks, ")
    assert lines[2].startswith("  would read ") and " new of " in lines[2] and "before compression" in lines[2]
    assert "left out: 1 excluded by pattern" in dry.stdout


def test_dry_run_takes_no_repository_lock(local):
    """A dry run does not wait for nor take the writer lock: a sync in progress elsewhere does not stop it."""
    src, repo, cache = local
    with FileLock(str(repo / "lock"), "a sync elsewhere"):
        dry = _sync(src, repo, cache, "--dry-run", "--json")
        locked = _sync(src, repo, cache, "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["files"] == 8
    assert locked.returncode == 3 and "locked" in locked.stderr  # the real sync needs it


def test_dry_run_warnings_are_printed_and_exit_0(local):
    src, repo, cache = local
    os.mkfifo(src / "pipe")
    dry = _sync(src, repo, cache, "--dry-run", "-q")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == "" and dry.stderr.startswith("replicator: warning: pipe: ")


def test_dry_run_with_accept_host_key_is_refused(local):
    src, repo, cache = local
    r = _sync(src, repo, cache, "--dry-run", "--accept-host-key", "SHA256:x")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--dry-run" in r.stderr


def test_engine_dry_run_stores_and_records_nothing(tmp_path, repo, src, monkeypatch):
    from replicator.sync.state import StateCache, state_path

    (src / "a").write_bytes(os.urandom(100_000))
    (src / "b").write_bytes(b"b" * 10)
    cache = tmp_path / "cache"
    with repo.writer() as dest:
        SyncRun(str(src), dest, SyncOptions("s", cache_dir=str(cache))).run()
    (src / "c").write_bytes(os.urandom(50_000))
    path = state_path(str(cache), repo.id, "s")
    before = tree_state(cache)
    calls: list[str] = []
    for name in ("record", "commit", "forget_unseen", "remember_snapshot"):
        monkeypatch.setattr(StateCache, name, lambda *a, _n=name, **k: calls.append(_n))
    with repo.writer() as dest:
        monkeypatch.setattr(dest, "store_blob", lambda *a: calls.append("store_blob"))
        monkeypatch.setattr(dest, "store_tree", lambda *a: calls.append("store_tree"))
        monkeypatch.setattr(dest, "commit_snapshot", lambda *a: calls.append("commit_snapshot"))
        report = SyncRun(str(src), dest, SyncOptions("s", cache_dir=str(cache), dry_run=True)).run()
    assert calls == [] and report.snapshot is None and report.dry_run
    assert (report.files, report.files_new, report.files_changed, report.files_unchanged) == (3, 1, 0, 2)
    assert report.bytes_read == report.bytes_new == 50_000
    assert tree_state(cache) == before and os.path.exists(path)


def test_engine_dry_run_counts_a_chunk_once(tmp_path, repo, src):
    data = os.urandom(60_000)
    (src / "one").write_bytes(data)
    (src / "two").write_bytes(data)  # the same chunks again: sent once
    with repo.writer() as dest:
        report = SyncRun(str(src), dest, SyncOptions("s", use_state=False, dry_run=True)).run()
    with repo.writer() as dest:
        real = SyncRun(str(src), dest, SyncOptions("s", use_state=False)).run()
    assert report.bytes_new == real.bytes_new == 60_000
    assert report.chunks_new == real.chunks_new and report.chunks_total == real.chunks_total


# --- over ssh:// ---------------------------------------------------------------------------------
def test_ssh_dry_run_sends_no_pack_and_commits_nothing(site, tmp_path):  # noqa: F811 - the fixture
    src = tmp_path / "src"
    _source(src)
    cache = tmp_path / "cache"
    site.pin()
    args = [*site.sync_args(src, extra=("--cache-dir", str(cache), "--exclude", "*.tmp"))]
    first = run_cli(*args, "--json")
    assert first.returncode == 0, first.stderr
    _change(src)
    before = tree_state(site.repo, cache)
    dry = run_cli(*args, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert tree_state(site.repo, cache) == before
    d = json.loads(dry.stdout)
    assert d["dry_run"] is True and d["snapshot"] is None
    assert (d["files_new"], d["files_changed"], d["files_unchanged"]) == (1, 1, 7)
    assert d["bytes_sent"] < 20_000, d  # the questions only, no pack
    assert "opened amiens for read" in site.server_log()

    real = run_cli(*args, "--json")
    assert real.returncode == 0, real.stderr
    s = json.loads(real.stdout)
    assert {k: d[k] for k in SAME} == {k: s[k] for k in SAME}
    assert s["bytes_sent"] > d["bytes_sent"] + d["bytes_new"] // 2


def test_ssh_first_dry_run_against_an_empty_repository(site, tmp_path):  # noqa: F811 - the fixture
    src = tmp_path / "src"
    _source(src)
    cache = tmp_path / "cache"
    site.pin()
    before = tree_state(site.repo, cache)
    dry = run_cli(*site.sync_args(src, extra=("--cache-dir", str(cache))), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert tree_state(site.repo, cache) == before
    d = json.loads(dry.stdout)
    assert d["files_new"] == d["files"] == 9 and d["bytes_new"] == d["bytes_read"] == d["bytes_total"]

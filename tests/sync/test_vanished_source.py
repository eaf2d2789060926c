"""A source that vanished is not a deletion.

An unmounted volume, an emptied mount point, a volume mounted over the source, a
share gone half-missing: each would be committed as a snapshot full of deletions,
and the live mirror at the secondary would then delete its standby copy.  The
engine refuses them (``SourceVanished``, exit code 8, nothing committed) unless
the run says ``confirm_source`` (``replicator sync --confirm-source``).  The
reference is the latest snapshot of the source, with the state cache as a
second, local witness (a receiver may withhold snapshots; a cache may be deleted).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from replicator import constants as C
from replicator.errors import SourceVanished, UsageError
from replicator.sync.engine import SyncRun
from replicator.sync.options import SyncOptions


def fill(src, n: int, sub: str = "") -> None:
    d = src / sub if sub else src
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (d / f"record-{i:03d}.txt").write_text(f"patient {i}\n")


def empty(src) -> None:
    for name in os.listdir(src):
        p = src / name
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def run(repo, src, **options):
    """One sync of ``src`` as source "s"; no state cache unless ``cache_dir`` is given."""
    options.setdefault("use_state", "cache_dir" in options)
    with repo.writer() as dest:
        return SyncRun(str(src), dest, SyncOptions("s", **options)).run()


def refused(repo, src, reason: str, **options) -> SourceVanished:
    before = len(repo.snapshots())
    with pytest.raises(SourceVanished) as info:
        run(repo, src, **options)
    exc = info.value
    assert exc.reason == reason, str(exc)
    assert exc.exit_code == C.EXIT_SOURCE and not exc.retryable
    assert "\n" not in str(exc) and "nothing committed" in str(exc)
    assert len(repo.snapshots()) == before  # nothing committed
    return exc


# --- an emptied source: the unmounted volume ------------------------------------------
def test_empty_source_is_refused_when_its_last_snapshot_had_files(repo, src):
    fill(src, 5)
    run(repo, src)
    empty(src)
    exc = refused(repo, src, "empty")
    assert str(src) in str(exc) and "5 files" in str(exc) and "--confirm-source" in str(exc)


def test_empty_source_is_committed_with_confirm_source(repo, src):
    fill(src, 5)
    run(repo, src)
    empty(src)
    report = run(repo, src, confirm_source=True)
    assert report.files == 0 and report.snapshot.generation == 2
    assert run(repo, src).snapshot.generation == 3  # the confirmed snapshot is the new reference


def test_first_sync_of_an_empty_source_is_committed(repo, src):
    assert run(repo, src).files == 0  # no reference: nothing at the destination came from this source
    assert run(repo, src).snapshot.generation == 2


def test_empty_source_after_a_snapshot_of_only_directories_is_refused(repo, src):
    (src / "a" / "b").mkdir(parents=True)
    run(repo, src)
    empty(src)
    refused(repo, src, "empty")


def test_emptied_subdirectory_counts_as_shrink_not_as_empty(repo, src):
    fill(src, 1)
    fill(src, 9, "volume")  # e.g. a volume mounted below the source
    run(repo, src)
    empty(src / "volume")
    exc = refused(repo, src, "shrunk")
    assert "90%" in str(exc) and "10 files" in str(exc) and "50%" in str(exc)


# --- lost a share of its files ----------------------------------------------------------
def test_source_that_lost_80_percent_of_its_files_is_refused(repo, src):
    fill(src, 10)
    run(repo, src)
    for i in range(8):
        (src / f"record-{i:03d}.txt").unlink()
    exc = refused(repo, src, "shrunk")
    assert "2 files" in str(exc) and "80%" in str(exc) and "--confirm-source" in str(exc)
    report = run(repo, src, confirm_source=True)
    assert report.files == 2 and report.snapshot.generation == 2
    assert run(repo, src).snapshot.generation == 3


def test_loss_at_or_below_the_share_is_committed(repo, src):
    fill(src, 10)
    run(repo, src)
    for i in range(5):  # exactly 50%: not more than the default share
        (src / f"record-{i:03d}.txt").unlink()
    assert run(repo, src).files == 5


def test_the_share_is_configurable(repo, src):
    fill(src, 10)
    run(repo, src)
    for i in range(3):
        (src / f"record-{i:03d}.txt").unlink()
    exc = refused(repo, src, "shrunk", max_shrink=0.2)
    assert "20%" in str(exc)
    assert run(repo, src, max_shrink=0.3).files == 7


def test_max_shrink_one_disables_the_share_but_not_the_empty_check(repo, src):
    fill(src, 10)
    run(repo, src)
    for i in range(9):
        (src / f"record-{i:03d}.txt").unlink()
    assert run(repo, src, max_shrink=1.0).files == 1
    empty(src)
    refused(repo, src, "empty", max_shrink=1.0)


def test_excluding_most_files_is_a_shrink_too(repo, src):
    fill(src, 10)
    run(repo, src)
    refused(repo, src, "shrunk", excludes=["record-00[0-8].txt"])


def test_unreadable_source_root_is_refused(repo, src, monkeypatch):
    fill(src, 3)
    run(repo, src)
    real = os.scandir
    target = str(src)

    def scandir(path="."):
        if os.fspath(path) == target:
            raise PermissionError(13, "Permission denied", target)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    exc = refused(repo, src, "unreadable")
    assert "Permission denied" in str(exc)


# --- the state cache: a second witness, never the only one --------------------------------
def test_deleted_state_cache_does_not_disable_the_check(tmp_path, repo, src):
    cache = tmp_path / "cache"
    fill(src, 10)
    run(repo, src, cache_dir=str(cache))
    shutil.rmtree(cache)
    empty(src)
    refused(repo, src, "empty", cache_dir=str(cache))
    fill(src, 2)
    refused(repo, src, "shrunk", cache_dir=str(cache))


def test_damaged_state_cache_does_not_disable_the_check(tmp_path, repo, src):
    cache = tmp_path / "cache"
    fill(src, 10)
    run(repo, src, cache_dir=str(cache))
    for dirpath, _dirs, files in os.walk(cache):
        for f in files:
            with open(os.path.join(dirpath, f), "wb") as g:
                g.write(b"not sqlite at all" * 100)
    fill(src, 2)
    for i in range(2, 10):
        (src / f"record-{i:03d}.txt").unlink()
    refused(repo, src, "shrunk", cache_dir=str(cache))


def test_state_cache_catches_a_withheld_snapshot(tmp_path, repo, src):
    """The receiver lists an older snapshot as the latest: the local cache knows better."""
    cache = tmp_path / "cache"
    fill(src, 2)
    run(repo, src, cache_dir=str(cache))
    before = set(os.listdir(os.path.join(repo.location, "snapshots")))
    fill(src, 10)
    run(repo, src, cache_dir=str(cache))
    newest = set(os.listdir(os.path.join(repo.location, "snapshots"))) - before
    for name in newest:  # the repository now says generation 1 (2 files) is the latest
        os.unlink(os.path.join(repo.location, "snapshots", name))
    for i in range(2, 10):
        (src / f"record-{i:03d}.txt").unlink()
    exc = refused(repo, src, "shrunk", cache_dir=str(cache))
    assert "state cache" in str(exc) and "generation 2" in str(exc)


def test_stale_state_cache_yields_to_a_newer_confirmed_snapshot(tmp_path, repo, src):
    """A shrink confirmed by a run with another cache (the CLI, while the daemon keeps its own)."""
    cache = tmp_path / "daemon-cache"
    fill(src, 10)
    run(repo, src, cache_dir=str(cache))
    for i in range(2, 10):
        (src / f"record-{i:03d}.txt").unlink()
    run(repo, src, confirm_source=True)  # no cache: the daemon's still says 10 files
    assert run(repo, src, cache_dir=str(cache)).files == 2


def test_cache_remembers_the_committed_snapshot(tmp_path, repo, src):
    cache = tmp_path / "cache"
    fill(src, 3)
    snap = run(repo, src, cache_dir=str(cache)).snapshot
    from replicator.sync.state import StateCache, state_path

    state = StateCache(state_path(str(cache), repo.id, "s"))
    try:
        last = state.last_snapshot()
    finally:
        state.close()
    assert last["id"] == snap.id and last["generation"] == 1 and last["stats"]["files"] == 3


def test_snapshot_records_the_root_it_was_taken_from(repo, src):
    fill(src, 1)
    snap = run(repo, src).snapshot
    assert snap.stats["root_dev"] == os.stat(src).st_dev
    assert snap.stats["root_mount"] == 0
    assert snap.stats["files"] == 1  # the documented keys stay


# --- another filesystem --------------------------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path):
    """Mount tmpfs at a directory of the caller's choice; unmounted at the end."""
    mounted: list[str] = []

    def mount(path, name: str | None = None) -> str:
        """``name``: the mount's source (same name, same filesystem as far as mountinfo tells)."""
        os.makedirs(path, exist_ok=True)
        name = name or f"replicator-test-{uuid.uuid4().hex[:8]}"
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", name, str(path)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount tmpfs (needs root with CAP_SYS_ADMIN): {r.stderr.strip()}")
        mounted.append(str(path))
        return str(path)

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", path], capture_output=True)


def umount(path) -> None:
    subprocess.run(["umount", str(path)], check=True)


def test_volume_mounted_over_the_source_is_refused(repo, src, tmpfs):
    fill(src, 4)
    run(repo, src)
    tmpfs(src)
    fill(src, 4)  # same files, same count: only the filesystem tells
    exc = refused(repo, src, "filesystem")
    assert "mount point" in str(exc) and "--confirm-source" in str(exc)
    assert run(repo, src, confirm_source=True).snapshot.stats["root_mount"] == 1


def test_unmounted_source_is_refused(repo, src, tmpfs):
    volume = f"replicator-test-{uuid.uuid4().hex[:8]}"
    tmpfs(src, volume)
    fill(src, 4)
    run(repo, src)
    umount(src)  # the mount point is left: an empty directory on the parent filesystem
    exc = refused(repo, src, "filesystem")
    assert "no longer a mount point" in str(exc)
    fill(src, 4)  # even with files in the bare directory below the mount
    refused(repo, src, "filesystem")
    tmpfs(src, volume)  # the volume is back: another st_dev (as after an NFS remount), the same mount source
    fill(src, 4)
    assert run(repo, src).files == 4


def test_another_volume_at_the_same_mount_point_is_refused(repo, src, tmpfs):
    tmpfs(src)
    fill(src, 4)
    run(repo, src)
    umount(src)
    tmpfs(src)  # another volume's name: mountinfo tells them apart
    fill(src, 4)
    exc = refused(repo, src, "filesystem")
    assert "another filesystem" in str(exc)


def test_source_root_moved_to_another_filesystem_is_refused(tmp_path, repo, tmpfs):
    """Not a mount point either time, but st_dev differs: a symlink re-pointed, a bind mount redone."""
    disk = tmp_path / "disk-copy"
    fill(disk, 3)
    other = os.path.join(tmpfs(tmp_path / "vol"), "copy")
    fill(Path(other), 3)
    link = tmp_path / "src-link"
    link.symlink_to(disk)
    run(repo, link)
    link.unlink()
    link.symlink_to(other)
    exc = refused(repo, link, "filesystem")
    assert "another filesystem" in str(exc)
    assert run(repo, link, confirm_source=True).files == 3
    assert run(repo, link).files == 3


def test_filesystem_of_a_snapshot_from_another_host_is_not_compared(repo, src, monkeypatch, tmpfs):
    """Device numbers mean nothing on another machine (failover with the same source name)."""
    import replicator.repo.writer as writer_module

    fill(src, 4)
    monkeypatch.setattr(writer_module.socket, "gethostname", lambda: "the-other-site")
    run(repo, src)
    monkeypatch.undo()
    tmpfs(src)
    fill(src, 4)
    assert run(repo, src).files == 4


# --- the marker (syncthing's .stfolder) ------------------------------------------------------
def test_required_marker_missing_is_refused_even_on_the_first_sync(repo, src):
    fill(src, 3)
    exc = refused(repo, src, "marker", require_marker=".replicator-source")
    assert ".replicator-source" in str(exc)
    refused(repo, src, "marker", require_marker=".replicator-source", confirm_source=True)
    (src / ".replicator-source").write_text("")
    assert run(repo, src, require_marker=".replicator-source").files == 4


def test_marker_may_be_a_directory(repo, src):
    (src / ".stfolder").mkdir()
    assert run(repo, src, require_marker=".stfolder").dirs == 1


# --- options ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    {"max_shrink": 1.5}, {"max_shrink": -0.1}, {"max_shrink": True}, {"max_shrink": "50%"},
    {"max_shrink": float("nan")}, {"require_marker": ""}, {"require_marker": "a/b"}, {"require_marker": ".."},
    {"require_marker": "."}, {"require_marker": 3}, {"confirm_source": "yes"},
])
def test_bad_options_are_usage_errors(kw):
    with pytest.raises(UsageError) as info:
        SyncOptions("s", **kw)
    assert "\n" not in str(info.value)


def test_default_share_is_the_documented_one():
    assert SyncOptions("s").max_shrink == C.DEFAULT_MAX_SHRINK == 0.5


# --- the command line ----------------------------------------------------------------------
def one_line_error(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("replicator: error: "), result.stderr
    return lines[0]


@pytest.fixture
def cli_repo(tmp_path, cli):
    path = tmp_path / "cli-repo"
    r = cli("init", str(path), "--kdf-work", "14", "-q")
    assert r.returncode == 0, r.stderr
    return path


def cli_snapshots(cli, repo) -> int:
    import json

    r = cli("snapshots", str(repo), "--json")
    assert r.returncode == 0, r.stderr
    return len(json.loads(r.stdout)["snapshots"])


def test_cli_refuses_an_emptied_source_with_exit_9_until_confirmed(cli, cli_repo, src):
    fill(src, 5)
    assert cli("sync", str(src), str(cli_repo), "-q").returncode == 0
    empty(src)
    r = cli("sync", str(src), str(cli_repo), "-q")
    assert r.returncode == C.EXIT_SOURCE == 9, r.stderr
    line = one_line_error(r)
    assert "is empty" in line and "--confirm-source" in line and "nothing committed" in line
    assert cli_snapshots(cli, cli_repo) == 1
    r = cli("sync", str(src), str(cli_repo), "--confirm-source", "-q")
    assert r.returncode == 0, r.stderr
    assert cli_snapshots(cli, cli_repo) == 2


def test_cli_max_shrink(cli, cli_repo, src):
    fill(src, 10)
    assert cli("sync", str(src), str(cli_repo), "-q").returncode == 0
    for i in range(8):
        (src / f"record-{i:03d}.txt").unlink()
    r = cli("sync", str(src), str(cli_repo), "-q")
    assert r.returncode == 9 and "80% fewer" in one_line_error(r)
    r = cli("sync", str(src), str(cli_repo), "--max-shrink", "0.9", "-q")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("value", ["1.5", "-1", "half", "nan", "50%"])
def test_cli_bad_max_shrink_is_a_usage_error(cli, cli_repo, src, value):
    r = cli("sync", str(src), str(cli_repo), f"--max-shrink={value}")
    assert r.returncode == 2
    assert "0 to 1" in one_line_error(r)


def test_cli_require_marker(cli, cli_repo, src):
    fill(src, 2)
    r = cli("sync", str(src), str(cli_repo), "--require-marker", ".stfolder", "-q")
    assert r.returncode == 9 and ".stfolder" in one_line_error(r)
    assert cli_snapshots(cli, cli_repo) == 0
    (src / ".stfolder").mkdir()
    assert cli("sync", str(src), str(cli_repo), "--require-marker", ".stfolder", "-q").returncode == 0
    r = cli("sync", str(src), str(cli_repo), "--require-marker", "a/b")
    assert r.returncode == 2 and "plain file name" in one_line_error(r)

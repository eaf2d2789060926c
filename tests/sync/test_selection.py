"""What a sync leaves out: exclude files, directories tagged by a file (CACHEDIR.TAG, .nobackup),
other filesystems (--one-file-system), and how an operator sees what was left out."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from replicator.constants import CACHEDIR_SIGNATURE, EXIT_USAGE
from replicator.errors import UsageError
from replicator.sync.engine import SyncRun
from replicator.sync.options import SyncOptions
from replicator.sync.select import REASON_MOUNT, REASON_PATTERN, REASON_TAGGED, Selection, check_tag_name, parse_exclude_file
from replicator.sync.walk import walk
from tests.conftest import run_cli
from tests.daemon.conftest import daemons  # noqa: F401 - the fixture of real daemon processes


def _sync(repo, src, **options):
    with repo.writer() as dest:
        return SyncRun(str(src), dest, SyncOptions("s", use_state=False, **options)).run()


def _paths(repo, report) -> set[str]:
    return {e.path for e in repo.walk_tree(report.snapshot.tree)}


def _walk(src, **kw):
    errors: list = []
    left: list = []
    items = list(walk(str(src), on_error=lambda p, r: errors.append((p, r)),
                      on_excluded=lambda p, why, what: left.append((p, why, what)), **kw))
    return [i.entry.path for i in items], left, errors




def _snapshot_paths(repo_path, name="x") -> set[str]:
    from replicator.repo.repository import Repository
    from tests.conftest import PASSPHRASE

    with Repository.open(str(repo_path), PASSPHRASE.encode()) as repo:
        snap = repo.find_snapshot(None, source=name)
        return {e.path for e in repo.walk_tree(snap.tree)}


# --- exclude files ------------------------------------------------------------------------
def test_exclude_file_lines_comments_blanks_and_whitespace():
    text = ("# scratch space of the PACS\n"
            "*.tmp\n"
            "\n"
            "   \n"
            "  cache  \n"
            "\t# an indented comment\n"
            "a/b\r\n"
            "name with spaces inside\n"
            "no-newline-at-end")
    assert parse_exclude_file(text, "f") == ("*.tmp", "cache", "a/b", "name with spaces inside", "no-newline-at-end")
    assert parse_exclude_file("", "f") == ()
    assert parse_exclude_file("# only a comment\n\n", "f") == ()


def test_exclude_file_refuses_binary_content():
    with pytest.raises(UsageError) as info:
        parse_exclude_file("*.tmp\n\0\0\0", "/etc/x")
    assert "/etc/x" in str(info.value) and "\n" not in str(info.value)


def test_patterns_match_relative_path_or_base_name_and_report_which():
    sel = Selection(excludes=("*.tmp", "cache", "a/b"))
    assert sel.excluded("x/y/file.tmp", "file.tmp") == "*.tmp"
    assert sel.excluded("deep/cache", "cache") == "cache"
    assert sel.excluded("a/b", "b") == "a/b"
    assert sel.excluded("c/a/b", "b") is None  # a path pattern is anchored at the source root
    assert sel.excluded("file.tmpx", "file.tmpx") is None
    assert sel.excluded("CACHE", "CACHE") is None  # case-sensitive, whatever the platform
    assert Selection().excluded("anything", "anything") is None


def test_cli_exclude_file_same_semantics_as_exclude_and_repeatable(tmp_path, cli_repo):
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "cache").mkdir()
    for f in ("keep.txt", "drop.tmp", "a/b/x", "a/keep", "cache/y", "scratch.swp", "core"):
        (src / f).write_text(f)
    one = tmp_path / "one.exclude"
    one.write_text("# temporary files\n*.tmp\n\ncache\na/b\n")
    two = tmp_path / "two.exclude"
    two.write_text("*.swp\n")
    r = run_cli("sync", str(src), str(cli_repo), "--name", "x", "--exclude-file", str(one),
                "--exclude-file", str(two), "--exclude", "core", "--json")
    assert r.returncode == 0, r.stderr
    assert _snapshot_paths(cli_repo) == {"a", "a/keep", "keep.txt"}
    s = json.loads(r.stdout)
    assert s["excluded"] == 5 and s["excluded_tagged"] == 0 and s["mounts_not_crossed"] == 0
    assert {(e["path"], e["reason"]) for e in s["excluded_paths"]} == {
        ("a/b", "matches 'a/b'"), ("cache", "matches 'cache'"), ("core", "matches 'core'"),
        ("drop.tmp", "matches '*.tmp'"), ("scratch.swp", "matches '*.swp'")}


@pytest.mark.parametrize("what", ["missing", "directory", "unreadable", "binary"])
def test_cli_bad_exclude_file_is_one_usage_line(tmp_path, cli_repo, what):
    src = tmp_path / "src"
    src.mkdir()
    path = tmp_path / "ex"
    if what == "directory":
        path.mkdir()
    elif what == "unreadable":
        path.write_text("*.tmp\n")
        path.chmod(0)
    elif what == "binary":
        path.write_bytes(b"\x7fELF\0\0\0")
    r = run_cli("sync", str(src), str(cli_repo), "--exclude-file", str(path))
    if what == "unreadable" and os.geteuid() == 0:
        # root reads a mode-0 file: only the other cases can be unreadable here
        assert r.returncode == 0, r.stderr
        return
    assert r.returncode == EXIT_USAGE, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"replicator: error: exclude file {path}: "), lines
    assert not (cli_repo / "snapshots").exists() or not os.listdir(cli_repo / "snapshots")


# --- directories tagged by a file -------------------------------------------------------------
def test_exclude_if_present_skips_the_directory_and_its_contents(tmp_path, repo):
    src = tmp_path / "src"
    (src / "scratch" / "deep").mkdir(parents=True)
    (src / "scratch" / ".nobackup").write_text("")
    (src / "scratch" / "deep" / "big").write_bytes(b"x" * 1000)
    (src / "other").mkdir()
    (src / "other" / "f").write_text("f")
    (src / "tagdir").mkdir()
    (src / "tagdir" / ".nobackup").mkdir()  # any kind of entry of that name tags its directory
    (src / "mark").mkdir()
    (src / "mark" / ".keepaway").write_text("")
    (src / ".nobackup").write_text("")  # in the root itself: the root is the source, never left out
    report = _sync(repo, src, exclude_if_present=(".nobackup", ".keepaway"))
    assert _paths(repo, report) == {".nobackup", "other", "other/f"}
    assert report.excluded_tagged == 3 and report.excluded == 0
    assert sorted(report.excluded_paths) == [("mark", "holds .keepaway"), ("scratch", "holds .nobackup"),
                                             ("tagdir", "holds .nobackup")]


def test_cachedir_tag_counts_only_with_its_signature(tmp_path, repo):
    src = tmp_path / "src"
    for d in ("real", "fake", "short", "linked", "fifo"):
        (src / d).mkdir(parents=True)
        (src / d / "data").write_text(d)
    (src / "real" / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE + b"\n# This file is a cache directory tag.\n")
    (src / "fake" / "CACHEDIR.TAG").write_text("not the signature, so this is data\n")
    (src / "short" / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE[:-1])
    (tmp_path / "tag").write_bytes(CACHEDIR_SIGNATURE)
    os.symlink(tmp_path / "tag", src / "linked" / "CACHEDIR.TAG")  # never followed
    os.mkfifo(src / "fifo" / "CACHEDIR.TAG")  # never opened to block on
    report = _sync(repo, src, exclude_if_present=("CACHEDIR.TAG",))
    paths = _paths(repo, report)
    assert "real" not in paths and "real/data" not in paths
    for d in ("fake", "short", "linked"):
        assert {d, f"{d}/data", f"{d}/CACHEDIR.TAG"} <= paths
    assert {"fifo", "fifo/data"} <= paths
    assert report.excluded_tagged == 1 and report.excluded_paths == [("real", "holds CACHEDIR.TAG")]


def test_cli_exclude_if_present_repeatable(tmp_path, cli_repo):
    src = tmp_path / "src"
    for d in ("a", "b", "c"):
        (src / d).mkdir(parents=True)
        (src / d / "f").write_text(d)
    (src / "a" / ".nobackup").write_text("")
    (src / "b" / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE)
    r = run_cli("sync", str(src), str(cli_repo), "--name", "x", "--exclude-if-present", ".nobackup",
                "--exclude-if-present", "CACHEDIR.TAG", "-v")
    assert r.returncode == 0, r.stderr
    assert _snapshot_paths(cli_repo) == {"c", "c/f"}
    assert "left out: 2 tagged directories" in r.stdout, r.stdout
    assert "  left out a: holds .nobackup" in r.stdout and "  left out b: holds CACHEDIR.TAG" in r.stdout


@pytest.mark.parametrize("bad", ["a/b", "", ".", "..", "x\0y"])
def test_tag_name_must_be_a_plain_name(bad):
    with pytest.raises(UsageError) as info:
        check_tag_name(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError):
        SyncOptions("s", exclude_if_present=(bad,))


def test_cli_bad_tag_name_is_a_usage_error(tmp_path, cli_repo):
    src = tmp_path / "src"
    src.mkdir()
    r = run_cli("sync", str(src), str(cli_repo), "--exclude-if-present", "sub/.nobackup")
    assert r.returncode == EXIT_USAGE
    assert len(r.stderr.strip().splitlines()) == 1 and "plain file name" in r.stderr


@pytest.mark.parametrize("kwargs", [{"exclude_if_present": ".nobackup"}, {"exclude_if_present": [3]},
                                    {"one_file_system": "yes"}, {"dry_run": 1}])
def test_bad_selection_options(kwargs):
    with pytest.raises(UsageError) as info:
        SyncOptions("s", **kwargs)
    assert str(info.value).startswith("sync: ") and "\n" not in str(info.value)


# --- other filesystems ------------------------------------------------------------------------
@pytest.fixture
def mounted(tmp_path):
    """``src/mnt`` with a tmpfs mounted on it (real mount(8); skipped where mounting is not permitted)."""
    src = tmp_path / "src"
    (src / "mnt").mkdir(parents=True)
    (src / "before").write_text("b")
    (src / "plain").mkdir()
    (src / "plain" / "f").write_text("same filesystem")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0750", "replicator-test", str(src / "mnt")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {r.stderr.strip() or r.returncode}")
    try:
        (src / "mnt" / "inside").mkdir()
        (src / "mnt" / "inside" / "file").write_text("on another filesystem")
        (src / "mnt" / "top").write_text("t")
        yield src
    finally:
        subprocess.run(["umount", str(src / "mnt")], check=True)


def test_one_file_system_records_the_mount_point_empty(mounted, repo):
    report = _sync(repo, mounted, one_file_system=True)
    entries = {e.path: e for e in repo.walk_tree(report.snapshot.tree)}
    assert set(entries) == {"before", "mnt", "plain", "plain/f"}
    assert entries["mnt"].kind == "dir" and entries["mnt"].mode == 0o750  # as seen through the mount
    assert report.mounts_not_crossed == 1 and report.excluded_paths == [
        ("mnt", "another filesystem: recorded as an empty directory")]
    assert report.dirs == 2 and report.files == 2


def test_without_one_file_system_mounts_are_crossed(mounted, repo):
    report = _sync(repo, mounted)
    assert {"mnt/inside/file", "mnt/top"} <= _paths(repo, report)
    assert report.mounts_not_crossed == 0


def test_walk_reports_what_it_leaves_out(mounted):
    (mounted / "x.tmp").write_text("")
    (mounted / "plain" / ".nobackup").write_text("")
    paths, left, errors = _walk(mounted, selection=Selection(excludes=("*.tmp",), exclude_if_present=(".nobackup",),
                                                             one_file_system=True))
    assert errors == [] and paths == ["before", "mnt"]
    assert left == [("mnt", REASON_MOUNT, ""), ("plain", REASON_TAGGED, ".nobackup"),
                    ("x.tmp", REASON_PATTERN, "*.tmp")]


def test_cli_one_file_system(mounted, cli_repo):
    r = run_cli("sync", str(mounted), str(cli_repo), "--name", "x", "--one-file-system")
    assert r.returncode == 0, r.stderr
    assert _snapshot_paths(cli_repo) == {"before", "mnt", "plain", "plain/f"}
    assert "left out: 1 mount point not crossed (recorded empty)" in r.stdout, r.stdout


# --- the daemon's jobs ------------------------------------------------------------------------
def test_daemon_job_applies_the_selection_keys(tmp_path, daemons):  # noqa: F811 - the fixture
    from tests.daemon.conftest import init_repo, job_toml, restored, snapshots, wait_for, write_config

    src = tmp_path / "src"
    (src / "build").mkdir(parents=True)
    (src / "build" / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE)
    (src / "build" / "obj").write_text("o")
    (src / "keep.txt").write_text("k")
    (src / "spool.part").write_text("p")
    ex = tmp_path / "job.exclude"
    ex.write_text("# partial uploads\n*.part\n")
    repo = init_repo(tmp_path / "repo")
    cfg = write_config(tmp_path / "r.toml", tmp_path / "state",
                       job_toml("j", src, repo, mode="every 1 hours", exclude_files=[str(ex)],
                                exclude_if_present=["CACHEDIR.TAG"], one_file_system=True))
    d = daemons(cfg, tmp_path / "daemon.log").start()
    wait_for(lambda: len(snapshots(repo)) >= 1, what="first sync")
    assert d.stop() == 0
    assert restored(repo, tmp_path / "out") == {"keep.txt": b"k"}

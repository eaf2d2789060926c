"""The CLI as an operator meets it: help, exit codes, one-line errors, --json."""
from __future__ import annotations

import json
import os

import pytest

SUBCOMMANDS = ["init", "sync", "snapshots", "restore", "verify", "diff"]


def one_line_error(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got: {result.stderr!r}"
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("replicator: error: ")
    return lines[0]


@pytest.fixture
def repo(tmp_path, cli):
    path = tmp_path / "repo"
    r = cli("init", str(path), "--kdf-work", "14")
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "a.txt").write_text("patient record\n" * 1000)
    (src / "b.bin").write_bytes(os.urandom(300_000))
    return src


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_help_on_every_subcommand(cli, sub):
    r = cli(sub, "--help")
    assert r.returncode == 0
    assert "usage: replicator " + sub in r.stdout


def test_wrong_passphrase_exit_4(cli, repo):
    r = cli("snapshots", str(repo), passphrase="not it")
    assert r.returncode == 4
    assert "wrong passphrase" in one_line_error(r)


def test_missing_repository_exit_3(cli, tmp_path):
    r = cli("snapshots", str(tmp_path / "nope"))
    assert r.returncode == 3
    assert "no replicator repository" in one_line_error(r)


def test_foreign_repository_exit_3(cli, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config").write_text('{"magic": "restic"}')
    r = cli("snapshots", str(foreign))
    assert r.returncode == 3
    assert "not a replicator repository" in one_line_error(r)


def test_init_refuses_non_empty_directory(cli, tmp_path, tree):
    r = cli("init", str(tree), "--kdf-work", "14")
    assert r.returncode == 3
    assert "not empty" in one_line_error(r)
    assert (tree / "b.bin").exists()


def test_no_passphrase_without_terminal(cli, repo):
    r = cli("snapshots", str(repo), passphrase=None)
    assert r.returncode == 2
    assert "REPLICATOR_PASSPHRASE" in one_line_error(r)


def test_passphrase_file(cli, repo, tmp_path):
    pf = tmp_path / "pass"
    pf.write_text("correct horse battery staple\n")
    pf.chmod(0o600)  # as the docs say (a readable one works too, with a warning and exit 1)
    r = cli("snapshots", str(repo), "--passphrase-file", str(pf), passphrase=None)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_json_summaries(cli, repo, tree):
    r = cli("sync", str(tree), str(repo), "--name", "amiens", "--json")
    assert r.returncode == 0
    s = json.loads(r.stdout)
    assert s["files"] == 2 and s["dirs"] == 1 and s["source"] == "amiens"
    snaps = json.loads(cli("snapshots", str(repo), "--json").stdout)["snapshots"]
    assert len(snaps) == 1 and snaps[0]["id"] == s["snapshot"] and snaps[0]["generation"] == 1
    v = json.loads(cli("verify", str(repo), "--json").stdout)
    assert v["ok"] is True and v["files"] == 2


def test_unreadable_entry_is_reported_and_sync_goes_on(cli, repo, tree):
    os.mkfifo(tree / "pipe")
    r = cli("sync", str(tree), str(repo), "--name", "x")
    assert r.returncode == 1, r.stderr
    assert "pipe" in r.stdout and "warning" in r.stdout
    snaps = json.loads(cli("snapshots", str(repo), "--json").stdout)["snapshots"]
    assert snaps[0]["files"] == 2


def test_corruption_is_reported_with_what_it_affects(cli, repo, tree, tmp_path):
    assert cli("sync", str(tree), str(repo), "--name", "x").returncode == 0
    packs = [os.path.join(d, f) for d, _s, fs in os.walk(repo / "data") for f in fs]
    assert packs
    with open(packs[0], "r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0x01]))
    r = cli("verify", str(repo), "--data")
    assert r.returncode == 5
    assert "damaged" in r.stdout
    assert "a.txt" in r.stdout or "b.bin" in r.stdout
    out = tmp_path / "out"
    r = cli("restore", str(repo), str(out))
    assert r.returncode == 5
    assert "integrity" in r.stdout


def test_restore_subpath(cli, repo, tree, tmp_path):
    assert cli("sync", str(tree), str(repo)).returncode == 0
    out = tmp_path / "out"
    r = cli("restore", str(repo), str(out), "--path", "dir")
    assert r.returncode == 0, r.stderr
    assert (out / "dir" / "a.txt").read_text() == (tree / "dir" / "a.txt").read_text()
    assert not (out / "b.bin").exists()
    (tree / "dir" / "deep" / "er").mkdir(parents=True)
    (tree / "dir" / "deep" / "er" / "x.hl7").write_text("MSH|")
    assert cli("sync", str(tree), str(repo)).returncode == 0
    out2 = tmp_path / "out2"
    r = cli("restore", str(repo), str(out2), "--path", "/dir/deep/er/x.hl7")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (out2 / "dir" / "deep" / "er" / "x.hl7").read_text() == "MSH|"
    assert not (out2 / "dir" / "a.txt").exists()
    r = cli("restore", str(repo), str(out), "--path", "nothing/here")
    assert r.returncode == 2


def test_second_writer_is_refused_while_locked(cli, repo, tree):
    import fcntl

    fd = os.open(repo / "lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        r = cli("sync", str(tree), str(repo))
        assert r.returncode == 3
        assert "locked" in one_line_error(r)
    finally:
        os.close(fd)


def test_diff_between_two_snapshots(cli, repo, tree):
    first = json.loads(cli("sync", str(tree), str(repo), "--json").stdout)["snapshot"]
    (tree / "dir" / "a.txt").write_text("changed\n")
    (tree / "c.hl7").write_text("MSH|")
    second = json.loads(cli("sync", str(tree), str(repo), "--json").stdout)["snapshot"]
    r = cli("diff", str(repo), first[:10], second[:10], "--json")
    assert r.returncode == 0, r.stderr
    changes = {(c["kind"], c["path"]) for c in json.loads(r.stdout)["changes"]}
    assert changes == {("M", "dir/a.txt"), ("+", "c.hl7"), ("M", "dir")} or \
        changes == {("M", "dir/a.txt"), ("+", "c.hl7")}


def test_restore_forget_and_prune_are_audited(cli, repo, tree, tmp_path):
    log = tmp_path / "audit.log"
    assert cli("sync", str(tree), str(repo)).returncode == 0
    (tree / "b.bin").write_bytes(os.urandom(1000))
    assert cli("sync", str(tree), str(repo)).returncode == 0
    r = cli("restore", str(repo), str(tmp_path / "out"), "--audit-log", str(log))
    assert r.returncode == 0, r.stderr
    env = {"REPLICATOR_AUDIT_LOG": str(log)}
    assert cli("forget", str(repo), "--keep-last", "1", env=env).returncode == 0
    assert cli("prune", str(repo), env=env).returncode == 0
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events == ["restore", "forget", "prune"]
    assert cli("audit", "verify", str(log)).returncode == 0
    lines = log.read_text().splitlines()
    lines[1] = lines[1].replace('"forget"', '"forgot"')
    log.write_text("\n".join(lines) + "\n")
    assert cli("audit", "verify", str(log)).returncode == 5


@pytest.mark.parametrize("value", ["0", "-3", "65"])
def test_sync_streams_out_of_range_is_a_usage_error(cli, repo, tree, value):
    r = cli("sync", str(tree), str(repo), f"--streams={value}")
    assert r.returncode == 2
    assert "--streams must be 1 to 64" in one_line_error(r)


def test_a_warning_of_one_command_does_not_change_the_exit_code_of_the_next(tmp_path, capsys):
    """main() may run several commands in one process (tests, embedding): each starts with no warning."""
    import os

    from replicator.cli import main

    repo = tmp_path / "repo"
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    pw.chmod(0o644)  # readable by others: a warning, exit 1
    assert main(["init", str(repo), "--kdf-work", "14", "-q", "--passphrase-file", str(pw)]) == 1
    os.chmod(pw, 0o600)
    assert main(["snapshots", str(repo), "-q", "--passphrase-file", str(pw)]) == 0


def test_a_damaged_tree_stops_a_restore_where_the_walk_meets_it(cli, repo, tmp_path):
    """A full restore writes while it walks the snapshot (restore/prefetch.py): what comes before a damaged
    directory tree is restored, the restore then fails with exit 5 naming that tree and its path."""
    from replicator.repo.repository import Repository
    from tests.conftest import PASSPHRASE

    src = tmp_path / "src"
    (src / "m-dir").mkdir(parents=True)
    (src / "a-first.txt").write_text("admission 1\n")
    (src / "m-dir" / "lab.hl7").write_text("MSH|^~\\&|LAB\n")
    (src / "z-last.txt").write_text("discharge\n")
    assert cli("sync", str(src), str(repo), "--name", "x").returncode == 0
    with Repository.open(str(repo), PASSPHRASE.encode()) as r:
        root = r.snapshots()[-1].tree
        subtree = next(i.subtree for i in r.read_tree(root, "") if i.entry.path == "m-dir")
        pack, entry = r.index.lookup_many([subtree])[subtree]
    with open(repo / pack, "r+b") as f:
        f.seek(entry.offset + entry.length // 2)
        byte = f.read(1)
        f.seek(entry.offset + entry.length // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    out = tmp_path / "out"
    r = cli("restore", str(repo), str(out))
    assert r.returncode == 5, r.stdout + r.stderr
    assert subtree.hex()[:16] in r.stdout + r.stderr and "m-dir" in r.stdout + r.stderr
    assert (out / "a-first.txt").read_text() == "admission 1\n"
    assert not (out / "z-last.txt").exists()

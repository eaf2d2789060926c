"""replicator key list|add|passwd|remove, as an operator runs them (real processes)."""
from __future__ import annotations

import json

import pytest

from replicator import constants as C
from replicator.app.audit import verify_audit
from tests.conftest import PASSPHRASE

ALICE, BOB = "alice's passphrase", "bob's passphrase"


@pytest.fixture
def repo(cli, tmp_path):
    path = str(tmp_path / "repo")
    r = cli("init", path, "--kdf-work", "14", "-q")
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture
def secret(tmp_path):
    def write(text: str, name: str = "new") -> str:
        p = tmp_path / f"{name}.pass"
        p.write_text(text + "\n")
        p.chmod(0o600)
        return str(p)
    return write


def one_line_error(r) -> str:
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("replicator: error: "), r.stderr
    return lines[0]


def listing(cli, repo, passphrase=PASSPHRASE) -> dict:
    r = cli("key", "list", repo, "--json", passphrase=passphrase)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_add_list_passwd_remove(cli, repo, secret, tmp_path):
    log = str(tmp_path / "audit.jsonl")
    r = cli("key", "add", repo, "--name", "alice", "--new-passphrase-file", secret(ALICE), "--audit-log", log)
    assert r.returncode == 0, r.stderr
    assert "added key slot alice (keys/alice)" in r.stdout and "unlocked with default" in r.stdout

    doc = listing(cli, repo, ALICE)
    assert doc["unlocked_with"] == "alice" and doc["damaged"] == []
    names = [s["name"] for s in doc["slots"]]
    assert names == ["default", "alice"]
    alice = doc["slots"][1]
    assert alice["object"] == "keys/alice" and "@" in alice["created_by"] and alice["created"].endswith("Z")
    assert alice["kdf_log2n"] == 14  # the work factor of the slot that unlocked, unless --kdf-work

    r = cli("key", "list", repo)
    assert r.returncode == 0 and "* default" in r.stdout and "  alice" in r.stdout, r.stdout

    r = cli("key", "passwd", repo, "--new-passphrase-file", secret(BOB, "bob"), "--audit-log", log,
            passphrase=ALICE)  # no --name: the slot that unlocked
    assert r.returncode == 0 and "changed the passphrase of key slot alice" in r.stdout, r.stderr
    assert cli("snapshots", repo, "-q", passphrase=ALICE).returncode == C.EXIT_PASSPHRASE
    assert cli("snapshots", repo, "-q", passphrase=BOB).returncode == 0

    r = cli("key", "remove", repo, "--name", "alice", "--audit-log", log)
    assert r.returncode == 0 and "removed key slot alice" in r.stdout, r.stderr
    assert cli("snapshots", repo, "-q", passphrase=BOB).returncode == C.EXIT_PASSPHRASE
    assert [s["name"] for s in listing(cli, repo)["slots"]] == ["default"]

    check = verify_audit(log)
    assert check.ok and check.lines == 3
    with open(log) as f:
        records = [json.loads(line) for line in f]
    assert [(d["event"], d["slot"], d["unlocked_with"]) for d in records] == [
        ("key-add", "alice", "default"), ("key-passwd", "alice", "alice"), ("key-remove", "alice", "default")]
    repo_id = listing(cli, repo)["id"]
    assert all(d["repository"] == repo_id and d["host"] and "time" in d for d in records)
    assert not any(ALICE in line or BOB in line or PASSPHRASE in line for line in open(log))


def test_audit_log_from_the_environment(cli, repo, secret, tmp_path):
    log = tmp_path / "env-audit.jsonl"
    r = cli("key", "add", repo, "--name", "ops", "--new-passphrase-file", secret(ALICE),
            env={"REPLICATOR_AUDIT_LOG": str(log)})
    assert r.returncode == 0, r.stderr
    assert json.loads(log.read_text())["event"] == "key-add"


def test_passwd_of_a_named_slot_and_kdf_work(cli, repo, secret):
    assert cli("key", "add", repo, "--name", "bob", "--new-passphrase-file", secret(BOB)).returncode == 0
    r = cli("key", "passwd", repo, "--name", "bob", "--kdf-work", "15", "--new-passphrase-file", secret(ALICE))
    assert r.returncode == 0, r.stderr
    bob = listing(cli, repo, ALICE)["slots"][1]
    assert bob["name"] == "bob" and bob["kdf_log2n"] == 15 and bob["changed"] and "@" in bob["changed_by"]


def test_key_option_tries_only_that_slot(cli, repo, secret):
    assert cli("key", "add", repo, "--name", "bob", "--new-passphrase-file", secret(BOB)).returncode == 0
    assert listing(cli, repo, BOB)["unlocked_with"] == "bob"
    r = cli("key", "list", repo, "--key", "default", passphrase=BOB)
    assert r.returncode == C.EXIT_PASSPHRASE and "wrong passphrase" in one_line_error(r)
    r = cli("key", "list", repo, "--key", "nobody")
    assert r.returncode == 2 and "no key slot named 'nobody'" in one_line_error(r)


def test_last_slot_refused(cli, repo):
    r = cli("key", "remove", repo, "--name", "default")
    assert r.returncode == 2 and "last key slot" in one_line_error(r)
    assert cli("snapshots", repo, "-q").returncode == 0


def test_default_and_in_use_slot_refused(cli, repo, secret):
    assert cli("key", "add", repo, "--name", "alice", "--new-passphrase-file", secret(ALICE)).returncode == 0
    r = cli("key", "remove", repo, "--name", "default", passphrase=ALICE)
    assert r.returncode == 2 and "key passwd" in one_line_error(r)
    r = cli("key", "remove", repo, "--name", "alice", passphrase=ALICE)
    assert r.returncode == 2 and "unlocked with" in one_line_error(r)


def test_wrong_passphrase(cli, repo, secret):
    for argv in (("list", repo), ("add", repo, "--name", "x", "--new-passphrase-file", secret(ALICE)),
                 ("passwd", repo, "--new-passphrase-file", secret(ALICE)), ("remove", repo, "--name", "default")):
        r = cli("key", *argv, passphrase="not it")
        assert r.returncode == C.EXIT_PASSPHRASE and "wrong passphrase" in one_line_error(r), argv
    assert [s["name"] for s in listing(cli, repo)["slots"]] == ["default"]


def test_damaged_slot_is_named_and_skipped(cli, repo, secret, tmp_path):
    assert cli("key", "add", repo, "--name", "alice", "--new-passphrase-file", secret(ALICE)).returncode == 0
    (tmp_path / "repo" / "keys" / "alice").write_bytes(b"{damaged")
    r = cli("key", "list", repo, "--json")
    assert r.returncode == 1, r.stderr  # done, with a warning
    assert "keys/alice" in r.stderr and "skipped" in r.stderr
    doc = json.loads(r.stdout)
    assert [d["object"] for d in doc["damaged"]] == ["keys/alice"] and [s["name"] for s in doc["slots"]] == ["default"]
    r = cli("snapshots", repo, "-q")
    assert r.returncode == 1 and "keys/alice" in r.stderr  # the good slot opens, with the warning
    r = cli("key", "remove", repo, "--name", "alice")
    assert r.returncode == 1 and "removed key slot alice" in r.stdout, r.stderr
    assert cli("snapshots", repo, "-q").returncode == 0


def test_bad_input_is_one_line(cli, repo, secret, tmp_path):
    cases = [
        (("add", repo, "--name", "Alice", "--new-passphrase-file", secret(ALICE)), 2, "key slot name"),
        (("add", repo, "--name", "default", "--new-passphrase-file", secret(ALICE)), 2, "exists"),
        (("add", repo, "--name", "x", "--new-passphrase-file", str(tmp_path / "missing")), 2,
         "cannot read passphrase file"),
        (("add", repo, "--name", "x"), 2, "--new-passphrase-file"),  # no terminal to prompt on
        (("add", repo, "--name", "x", "--new-passphrase-file", secret(ALICE), "--kdf-work", "30"), 2, "--kdf-work"),
        (("remove", repo, "--name", "nobody"), 2, "no key slot named 'nobody'"),
        (("list", str(tmp_path / "nothing")), C.EXIT_REPOSITORY, "no replicator repository"),
    ]
    for argv, code, what in cases:
        r = cli("key", *argv)
        assert r.returncode == code and what in one_line_error(r), (argv, r.stderr)


@pytest.mark.parametrize("action", [("list",), ("add", "--name", "x"), ("passwd",), ("remove", "--name", "x")])
def test_over_ssh_is_a_usage_error_naming_where_to_run_it(cli, action):
    r = cli("key", action[0], "ssh://replicator@127.0.0.1:2222/amiens", *action[1:])
    assert r.returncode == 2
    assert "run it at the site that holds the repository" in one_line_error(r)

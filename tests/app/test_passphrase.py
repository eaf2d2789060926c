"""Passphrase files: read as before, and one line of warning when the group or others can read one."""
from __future__ import annotations

import os

import pytest

from replicator.app.passphrase import passphrase_file_warning, read_passphrase_file
from tests.conftest import PASSPHRASE


@pytest.fixture
def pw(tmp_path):
    p = tmp_path / "pass phrase"
    p.write_text(PASSPHRASE + "\n")
    return p


@pytest.mark.parametrize("mode,who", [(0o644, "group and others"), (0o640, "group"), (0o604, "others"),
                                      (0o660, "group"), (0o444, "group and others")])
def test_readable_by_others_is_a_one_line_warning_naming_file_and_mode(pw, mode, who):
    os.chmod(pw, mode)
    message = passphrase_file_warning(str(pw))
    assert message is not None and "\n" not in message
    assert str(pw) in message and f"mode {mode:04o}" in message and f"readable by {who}" in message
    assert "chmod 600" in message
    assert read_passphrase_file(str(pw)) == PASSPHRASE.encode()  # still read: a warning, not an error


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o620, 0o700])
def test_private_file_gives_no_warning(pw, mode):
    os.chmod(pw, mode)
    assert passphrase_file_warning(str(pw)) is None


def test_missing_file_gives_no_warning_the_read_reports_it(tmp_path):
    assert passphrase_file_warning(str(tmp_path / "nope")) is None


def test_cli_prints_the_warning_on_stderr_still_works_and_exits_1(cli, tmp_path, pw):
    os.chmod(pw, 0o644)
    repo = tmp_path / "repo"
    r = cli("init", str(repo), "--kdf-work", "14", "-q", "--passphrase-file", str(pw), passphrase=None)
    assert r.returncode == 1 and (repo / "config").exists(), r.stderr  # done, with a warning: exit 1
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("replicator: warning: passphrase file "), r.stderr
    assert str(pw) in lines[0] and "0644" in lines[0]
    r = cli("snapshots", str(repo), "--json", "--passphrase-file", str(pw), passphrase=None)
    assert r.returncode == 1 and "0644" in r.stderr and r.stdout.startswith("{")  # stdout stays JSON
    os.chmod(pw, 0o600)
    r = cli("snapshots", str(repo), "-q", "--passphrase-file", str(pw), passphrase=None)
    assert r.returncode == 0 and r.stderr == ""


def test_environment_passphrase_gives_no_warning(cli, tmp_path):
    r = cli("init", str(tmp_path / "repo"), "--kdf-work", "14", "-q")
    assert r.returncode == 0 and r.stderr == ""

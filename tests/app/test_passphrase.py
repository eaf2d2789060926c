"""Passphrase sources: files (one line of warning when the group or others can read one), a command,
$REPLICATOR_PASSPHRASE and a systemd credential, in that order; the CLI and the daemon's jobs."""
from __future__ import annotations

import json
import os
import shlex
import sys

import pytest

from replicator import constants as C
from replicator.app.passphrase import (
    CREDENTIAL_NAME,
    credential_path,
    passphrase_file_warning,
    passphrase_from,
    read_passphrase_file,
    run_passphrase_command,
)
from replicator.errors import UsageError
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


# --- --passphrase-command and systemd credentials (issue 13) ------------------------------------
PY = shlex.quote(sys.executable)


def py(code: str) -> str:
    """A command line running ``code`` in Python (no shell: shlex.split, then exec)."""
    return f"{PY} -c {shlex.quote(code)}"


def test_command_stdout_is_the_passphrase_one_trailing_newline_stripped():
    assert run_passphrase_command(py("print('s3cret')")) == b"s3cret"
    assert run_passphrase_command(py("import sys; sys.stdout.write('a b\\n\\n')")) == b"a b\n"
    assert run_passphrase_command(py("import sys; sys.stdout.write('crlf\\r\\n')")) == b"crlf"
    assert run_passphrase_command(py("import sys; sys.stdout.write(' sp ')")) == b" sp "
    assert run_passphrase_command(py("import sys; sys.stdout.buffer.write(b'\\xff\\x00x')")) == b"\xff\x00x"


def test_command_runs_without_a_shell(tmp_path):
    assert run_passphrase_command("echo 'a;' $HOME") == b"a; $HOME"  # no expansion, no second command


@pytest.mark.parametrize("code,what", [
    ("import sys; print('leaked' + '-secret'); sys.exit(3)", "exited with status 3"),
    ("import sys; sys.stderr.write('oops'); sys.exit(1)", "exited with status 1"),
    ("import os, signal; print('leaked' + '-secret', flush=True); os.kill(os.getpid(), signal.SIGTERM)",
     "killed by signal 15"),
    ("pass", "printed no passphrase"),
    ("print()", "printed no passphrase"),
])
def test_failing_or_empty_command_is_one_line_naming_it_never_its_output(code, what):
    command = py(code)
    with pytest.raises(UsageError) as info:
        run_passphrase_command(command)
    message = str(info.value)
    assert "\n" not in message and "leaked-secret" not in message and what in message, message
    assert message.startswith("passphrase command ") and "-c" in message
    assert info.value.exit_code == C.EXIT_USAGE


@pytest.mark.parametrize("command,what", [
    ("/nonexistent/get-pass --x", "cannot run passphrase command '/nonexistent/get-pass --x'"),
    ("get-pass 'unbalanced", "passphrase command 'get-pass 'unbalanced' cannot be split"),
    ("   ", "passphrase command is empty"),
])
def test_unrunnable_command_is_a_usage_error(command, what):
    with pytest.raises(UsageError) as info:
        run_passphrase_command(command)
    assert what in str(info.value) and "\n" not in str(info.value)


def test_command_that_hangs_times_out():
    with pytest.raises(UsageError, match="did not finish within 0.5 s"):
        run_passphrase_command(py("import time; time.sleep(30)"), timeout=0.5)


@pytest.fixture
def creds(tmp_path):
    d = tmp_path / "credentials"
    d.mkdir()
    (d / CREDENTIAL_NAME).write_text("from-credential\n")
    return d


def test_credential_is_used_when_the_directory_holds_one(creds):
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert credential_path(env) == str(creds / CREDENTIAL_NAME)
    assert passphrase_from(None, environ=env) == b"from-credential"
    os.unlink(creds / CREDENTIAL_NAME)
    assert credential_path(env) is None and passphrase_from(None, environ=env) is None  # another credential's dir
    assert credential_path({}) is None and credential_path({"CREDENTIALS_DIRECTORY": ""}) is None


def test_unreadable_credential_is_a_usage_error_naming_it(creds):
    (creds / CREDENTIAL_NAME).write_text("")
    with pytest.raises(UsageError, match="passphrase file .*replicator-passphrase is empty"):
        passphrase_from(None, environ={"CREDENTIALS_DIRECTORY": str(creds)})


def test_order_file_command_environment_credential(tmp_path, creds, pw):
    env = {"CREDENTIALS_DIRECTORY": str(creds), "REPLICATOR_PASSPHRASE": "from-env"}
    command = py("print('from-command')")
    assert passphrase_from(str(pw), command, environ=env) == PASSPHRASE.encode()
    assert passphrase_from(None, command, environ=env) == b"from-command"
    assert passphrase_from(None, None, environ=env) == b"from-env"
    del env["REPLICATOR_PASSPHRASE"]
    assert passphrase_from(None, None, environ=env) == b"from-credential"
    assert passphrase_from(None, None, environ={}) is None


def test_cli_passphrase_command(cli, tmp_path):
    repo = str(tmp_path / "repo")
    good = py(f"print({PASSPHRASE!r})")
    r = cli("init", repo, "--kdf-work", "14", "-q", "--passphrase-command", good, passphrase=None)
    assert r.returncode == 0, r.stderr
    r = cli("snapshots", repo, "--json", "--passphrase-command", good, passphrase=None)
    assert r.returncode == 0 and r.stdout.startswith("{"), r.stderr
    r = cli("snapshots", repo, "--passphrase-command", py("import sys; print('lea' + 'ked'); sys.exit(1)"),
            passphrase=None)
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "leaked" not in r.stderr, r.stderr
    assert lines[0].startswith("replicator: error: passphrase command ") and "exited with status 1" in lines[0]
    r = cli("snapshots", repo, "--passphrase-command", py("print('wrong')"), passphrase=None)
    assert r.returncode == C.EXIT_PASSPHRASE, r.stderr


def test_cli_credential_and_its_place_in_the_order(cli, tmp_path, creds):
    repo = str(tmp_path / "repo")
    (creds / CREDENTIAL_NAME).write_text(PASSPHRASE)
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    r = cli("init", repo, "--kdf-work", "14", "-q", passphrase=None, env=env)
    assert r.returncode == 0, r.stderr
    assert cli("snapshots", repo, "-q", passphrase=None, env=env).returncode == 0
    # $REPLICATOR_PASSPHRASE comes before the credential: a wrong one there is what is tried
    assert cli("snapshots", repo, "-q", passphrase="wrong", env=env).returncode == C.EXIT_PASSPHRASE


def test_cli_without_any_source_names_every_source(cli, tmp_path):
    r = cli("snapshots", str(tmp_path), passphrase=None, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert r.returncode == 2, r.stderr
    for source in ("--passphrase-file", "--passphrase-command", "REPLICATOR_PASSPHRASE", CREDENTIAL_NAME):
        assert source in r.stderr


# --- the daemon's job configuration -----------------------------------------------------------
JOB = """\
[[job]]
name = "j"
source = "/srv/data"
destination = "/srv/replica"
"""


def load(tmp_path, text, env=None):
    from replicator.app.config import load_config

    p = tmp_path / "r.toml"
    p.write_text(text)
    return load_config(str(p), env={} if env is None else env)


def test_config_passphrase_command(tmp_path):
    (job,) = load(tmp_path, JOB + 'passphrase_command = "pass show replicator"\n').jobs
    assert job.passphrase_command == "pass show replicator" and job.passphrase_file is None


@pytest.mark.parametrize("value,what", [('"pass \'show"', "cannot be split"), ('"  "', "must not be empty"),
                                        ("5", "must be a string")])
def test_config_bad_passphrase_command(tmp_path, value, what):
    from replicator.app.config import ConfigError

    with pytest.raises(ConfigError) as info:
        load(tmp_path, JOB + f"passphrase_command = {value}\n")
    assert "r.toml:5: job[0].passphrase_command: " in str(info.value) and what in str(info.value)


def test_config_credential_is_a_passphrase_source(tmp_path, creds):
    from replicator.app.config import ConfigError

    with pytest.raises(ConfigError, match="passphrase_command.*CREDENTIALS_DIRECTORY"):
        load(tmp_path, JOB)
    (job,) = load(tmp_path, JOB, env={"CREDENTIALS_DIRECTORY": str(creds)}).jobs
    assert job.passphrase_file is None and job.passphrase_command is None


def test_daemon_job_reads_its_command_and_credential(tmp_path, creds, monkeypatch):
    from replicator.daemon.service import confirm_command, read_job_passphrase

    (job,) = load(tmp_path, JOB + f"passphrase_command = {json.dumps(py('print(1234)'))}\n").jobs
    assert read_job_passphrase(job) == b"1234"
    assert "--passphrase-command" in confirm_command(job, str(tmp_path))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    (job,) = load(tmp_path, JOB, env={"CREDENTIALS_DIRECTORY": str(creds)}).jobs
    assert read_job_passphrase(job) == b"from-credential"

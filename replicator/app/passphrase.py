"""Passphrase sources, the one place they are read.

In this order, the first one given wins:

1. a passphrase file (``--passphrase-file`` / ``passphrase_file``);
2. a command (``--passphrase-command`` / ``passphrase_command``): split with
   ``shlex.split`` and run without a shell; its standard output is the
   passphrase, one trailing newline removed;
3. ``$REPLICATOR_PASSPHRASE``;
4. a systemd credential: the file ``replicator-passphrase`` in
   ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=replicator-passphrase:PATH``),
   read like a passphrase file.

The CLI adds a terminal prompt after these (cli/common.py), the daemon never
prompts.  A passphrase file holds the passphrase and at most one trailing
newline.  One that the group or others can read is still read, and
``passphrase_file_warning`` says so in one line for the caller to print
(the CLI) or log (the daemon).

Must never: log or print a passphrase or a command's output (its errors name
the command only), run a command through a shell, or keep a passphrase beyond
the call.
"""
from __future__ import annotations

import os
import shlex
import stat
import subprocess
from collections.abc import Mapping

from replicator.constants import PASSPHRASE_COMMAND_TIMEOUT
from replicator.errors import UsageError

PASSPHRASE_ENV = "REPLICATOR_PASSPHRASE"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"  # set by systemd for a unit with LoadCredential= / SetCredential=
CREDENTIAL_NAME = "replicator-passphrase"  # the credential's name: LoadCredential=replicator-passphrase:FILE
SOURCES = (f"--passphrase-file FILE, --passphrase-command CMD, ${PASSPHRASE_ENV} or the systemd credential "
           f"{CREDENTIAL_NAME}")


def read_passphrase_file(path: str) -> bytes:
    """The passphrase in ``path`` (one trailing newline removed).  :raises UsageError: unreadable or empty."""
    try:
        with open(path, "rb") as f:
            data = f.read().rstrip(b"\r\n")
    except OSError as exc:
        raise UsageError(f"cannot read passphrase file {path}: {exc.strerror}") from None
    if not data:
        raise UsageError(f"passphrase file {path} is empty")
    return data


def _strip_newline(data: bytes) -> bytes:
    for end in (b"\r\n", b"\n"):
        if data.endswith(end):
            return data[: -len(end)]
    return data


def _named(command: str) -> str:
    """The command, quoted, for a one-line error (escaped when it holds anything unprintable)."""
    return f"'{command}'" if command.isprintable() else repr(command)


def split_command(command: str) -> list[str]:
    """``command`` as argv (``shlex.split``).  :raises UsageError: empty, or unbalanced quotes."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"passphrase command {_named(command)} cannot be split into words: {exc}") from None
    if not argv:
        raise UsageError("passphrase command is empty")
    return argv


def run_passphrase_command(command: str, timeout: float = PASSPHRASE_COMMAND_TIMEOUT) -> bytes:
    """Run ``command`` (no shell) and return its standard output, one trailing newline removed.

    Its standard input and error are ours (a command may ask on the terminal, e.g. a pinentry).
    :raises UsageError: it cannot be run, exits non-zero, is killed, takes longer than ``timeout``
        seconds, or prints nothing; one line naming the command, never its output.
    """
    argv = split_command(command)
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise UsageError(f"passphrase command {_named(command)} did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise UsageError(f"cannot run passphrase command {_named(command)}: {exc.strerror or exc}") from None
    if done.returncode < 0:
        raise UsageError(f"passphrase command {_named(command)} was killed by signal {-done.returncode}")
    if done.returncode:
        raise UsageError(f"passphrase command {_named(command)} exited with status {done.returncode}")
    data = _strip_newline(done.stdout)
    if not data:
        raise UsageError(f"passphrase command {_named(command)} printed no passphrase")
    return data


def credential_path(environ: Mapping[str, str] | None = None) -> str | None:
    """The systemd credential file ``$CREDENTIALS_DIRECTORY/replicator-passphrase``, when it exists."""
    env = os.environ if environ is None else environ
    directory = env.get(CREDENTIALS_ENV)
    if not directory:
        return None
    path = os.path.join(directory, CREDENTIAL_NAME)
    return path if os.path.lexists(path) else None


def passphrase_from(path: str | None, command: str | None = None, *,
                    environ: Mapping[str, str] | None = None) -> bytes | None:
    """The first source given: ``path``, ``command``, ``$REPLICATOR_PASSPHRASE``, the systemd credential.

    :param environ: the environment (default ``os.environ``).
    :returns: None when none is given.  :raises UsageError: the source given cannot be read or run.
    """
    if path:
        return read_passphrase_file(path)
    if command:
        return run_passphrase_command(command)
    if environ is None:
        value = os.environb.get(PASSPHRASE_ENV.encode())
    else:
        text = environ.get(PASSPHRASE_ENV)
        value = os.fsencode(text) if text else None
    if value:
        return value
    credential = credential_path(environ)
    return read_passphrase_file(credential) if credential else None


def passphrase_file_warning(path: str) -> str | None:
    """:returns: a one-line warning when the group or others may read ``path``, else None (also when
    it cannot be stat-ed: reading it reports that)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    who = [name for bit, name in ((stat.S_IRGRP, "group"), (stat.S_IROTH, "others")) if mode & bit]
    if not who:
        return None
    return (f"passphrase file {path} is readable by {' and '.join(who)} (mode {mode:04o}); "
            f"chmod 600 it (only the user who runs replicator needs it)")

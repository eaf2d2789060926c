"""Passphrase sources, the one place they are read: a file, or ``$REPLICATOR_PASSPHRASE``.

The CLI adds a terminal prompt on top (cli/common.py), the daemon never
prompts.  A passphrase file holds the passphrase and at most one trailing
newline.  One that the group or others can read is still read, and
``passphrase_file_warning`` says so in one line for the caller to print
(the CLI) or log (the daemon).

Must never: log or print a passphrase, or keep it beyond the call.
"""
from __future__ import annotations

import os
import stat

from replicator.errors import UsageError

PASSPHRASE_ENV = "REPLICATOR_PASSPHRASE"


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


def passphrase_from(path: str | None) -> bytes | None:
    """``path`` if given, else the environment variable; None when neither is set.  :raises UsageError:"""
    if path:
        return read_passphrase_file(path)
    return os.environb.get(PASSPHRASE_ENV.encode()) or None


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

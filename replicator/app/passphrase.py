"""Passphrase sources, the one place they are read: a file, or ``$REPLICATOR_PASSPHRASE``.

The CLI adds a terminal prompt on top (cli/common.py), the daemon never
prompts.  A passphrase file holds the passphrase and at most one trailing
newline.

Must never: log or print a passphrase, or keep it beyond the call.
"""
from __future__ import annotations

import os

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

"""Shared CLI plumbing: passphrase sources, output, progress bars."""
from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from replicator.app.passphrase import PASSPHRASE_ENV, passphrase_from
from replicator.errors import UsageError

CACHE_ENV = "REPLICATOR_CACHE_DIR"


def read_passphrase(args, *, confirm: bool = False) -> bytes:
    """--passphrase-file, then $REPLICATOR_PASSPHRASE, then a prompt on a terminal."""
    given = passphrase_from(getattr(args, "passphrase_file", None))
    if given:
        return given
    if not sys.stdin.isatty():
        raise UsageError(f"no passphrase: use --passphrase-file FILE or set {PASSPHRASE_ENV}")
    first = getpass.getpass("Passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise UsageError("the passphrases do not match")
    if not first:
        raise UsageError("empty passphrase")
    return first.encode()


def cache_dir(args) -> str:
    if getattr(args, "cache_dir", None):
        return args.cache_dir
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "replicator")


def emit(args, summary: dict, lines: list[str]) -> None:
    """Print the command's result: JSON with --json, else the human lines (unless --quiet)."""
    if getattr(args, "json", False):
        print(json.dumps(summary, sort_keys=True, default=str))
    elif not getattr(args, "quiet", False):
        for line in lines:
            print(line)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


@contextmanager
def progress_bar(args, desc: str, total: int | None) -> Iterator[Callable[[int], None] | None]:
    """A tqdm bar on a terminal (stderr), nothing otherwise or with --json/--quiet."""
    if getattr(args, "json", False) or getattr(args, "quiet", False) or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False) as bar:
        yield bar.update


AUDIT_ENV = "REPLICATOR_AUDIT_LOG"


def add_audit_option(p) -> None:
    p.add_argument("--audit-log", metavar="FILE",
                   help=f"append a hash-chained record of this action to FILE (default ${AUDIT_ENV}, if set)")


def audit(args, record: dict) -> bool:
    """Append ``record`` to the audit log named by --audit-log or $REPLICATOR_AUDIT_LOG, if any.

    :returns: False (after a one-line warning) when it could not be written: the
        action itself is done, so the caller exits with the warning code.
    """
    import socket

    from replicator.app.audit import append_audit

    path = getattr(args, "audit_log", None) or os.environ.get(AUDIT_ENV)
    if not path:
        return True
    record = {"host": socket.gethostname(), "user": os.environ.get("SUDO_USER") or os.environ.get("USER", ""),
              **record}
    try:
        append_audit(path, record)
    except (OSError, ValueError) as exc:
        print(f"replicator: warning: cannot append to the audit log {path}: {exc}", file=sys.stderr)
        return False
    return True


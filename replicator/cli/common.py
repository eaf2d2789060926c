"""Shared CLI plumbing: passphrase sources, output (terminal-safe names, warnings), progress bars."""
from __future__ import annotations

import getpass
import json
import os
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from replicator.app.passphrase import passphrase_from
from replicator.errors import UsageError
from replicator.store.location import default_cache_root


def read_passphrase(args, *, confirm: bool = False, new: bool = False) -> bytes:
    """--passphrase-file, --passphrase-command, $REPLICATOR_PASSPHRASE, the systemd credential
    ``replicator-passphrase`` in $CREDENTIALS_DIRECTORY, then a prompt on a terminal (app/passphrase.py).

    A passphrase file the group or others can read is used, with one warning line on stderr.
    :param new: the new passphrase of ``key add`` / ``key passwd``: --new-passphrase-file, else asked
        twice on a terminal.
    """
    from replicator.app.passphrase import SOURCES, passphrase_file_warning, read_passphrase_file

    if new:
        path = getattr(args, "new_passphrase_file", None)
        given = read_passphrase_file(path) if path else None
        missing, prompt, confirm = "--new-passphrase-file FILE (or run on a terminal to be asked)", "New passphrase", True
    else:
        path = getattr(args, "passphrase_file", None)
        given = passphrase_from(path, getattr(args, "passphrase_command", None))
        missing, prompt = SOURCES, "Passphrase"
    if given and path:
        problem = passphrase_file_warning(path)
        if problem is not None:
            warn(problem)
    if given:
        return given
    if not sys.stdin.isatty():
        raise UsageError(f"no {'new ' if new else ''}passphrase: use {missing}")
    first = getpass.getpass(f"{prompt}: ")
    if confirm and getpass.getpass(f"Repeat {prompt.lower()}: ") != first:
        raise UsageError("the passphrases do not match")
    if not first:
        raise UsageError("empty passphrase")
    return first.encode()


def cache_dir(args) -> str:
    if getattr(args, "cache_dir", None):
        return args.cache_dir
    return default_cache_root(os.environ)


def emit(args, summary: dict, lines: list[str]) -> None:
    """Print the command's result: JSON with --json, else the human lines (unless --quiet)."""
    if getattr(args, "json", False):
        print(json.dumps(summary, sort_keys=True, default=str))
    elif not getattr(args, "quiet", False):
        for line in lines:
            print(line)


# Characters that never reach a terminal raw: controls (ESC starts a terminal command, CR rewrites the
# line), format characters (bidirectional overrides reorder what is shown), line and paragraph
# separators, and lone surrogates (the bytes of a name that is not UTF-8, from os.fsdecode).
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _escape(ch: str) -> str:
    if ch == "\\":
        return "\\\\"
    cp = ord(ch)
    if 0xDC80 <= cp <= 0xDCFF:  # os.fsdecode's stand-in for the byte cp - 0xDC00 of a non-UTF-8 name
        return f"\\x{cp - 0xDC00:02x}"
    if cp < 0x80:
        return f"\\x{cp:02x}"
    return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"


def printable(text: str) -> str:
    """``text`` made safe to print on a terminal, one line, like ``ls -b``.

    File and source names come from the other site and may hold anything:
    control characters (ESC [ 31 m, ESC ] 52 for the clipboard, CR, newline)
    and format characters print as ``\\xHH`` / ``\\uHHHH``, a byte of a name
    that is not UTF-8 as ``\\xHH``, and a backslash as two, so the escaped form
    is unambiguous.  Everything else (letters of every script) prints as is.
    ``--json`` output keeps the exact name instead.
    """
    if text.isprintable() and "\\" not in text:  # the common case: nothing to do
        return text
    return "".join(_escape(ch) if ch == "\\" or unicodedata.category(ch) in _UNPRINTABLE else ch for ch in text)


_printed = {"warnings": 0}


def warn(message: str) -> None:
    """One line on stderr: ``replicator: warning: MESSAGE`` (printed with --quiet and --json too).

    A command that printed a warning exits 1 where it would have exited 0 (``cli.main``).
    """
    _printed["warnings"] += 1
    print(f"replicator: warning: {printable(' '.join(message.splitlines()))}", file=sys.stderr)


def warnings_printed() -> int:
    return _printed["warnings"]


def reset_warnings() -> None:
    """At the start of each command (``cli.main`` may run several in one process)."""
    _printed["warnings"] = 0


def open_repository(args, *, exclusive: bool = False, remote_write: bool = False):
    """``Repository.open`` of ``args.repo`` with the passphrase the options name; its warnings (an index
    cache rebuilt, an upgrade that could not finish) are printed at once.

    ``exclusive`` over ssh:// needs ``remote_write`` (a command that deletes only through the other
    site's own checks: forget); any other is refused there."""
    from replicator.repo.repository import Repository
    from replicator.transport.url import is_remote

    if is_remote(args.repo):
        if exclusive and not remote_write:
            raise UsageError(f"'{args.command}' over ssh:// is not supported: run it at the site that holds the "
                             f"repository")
        from replicator.app.destinations import open_remote_repository

        repo = open_remote_repository(args.repo, read_passphrase(args), cache_dir=cache_dir(args),
                                      identity=getattr(args, "identity", None),
                                      known_hosts=getattr(args, "known_hosts", None),
                                      accept_host_key=getattr(args, "accept_host_key", None),
                                      write=exclusive)
    else:
        repo = Repository.open(args.repo, read_passphrase(args), exclusive=exclusive)
    for message in repo.warnings:
        warn(message)
    return repo


def warn_damaged(damaged: Iterable) -> list[dict]:
    """Name every damaged snapshot object a command skipped (one warning each).

    :param damaged: ``repo.repository.DamagedSnapshot`` records.
    :returns: their rows for the ``--json`` summary (``damaged_snapshots``).
    """
    rows = []
    for d in damaged:
        warn(f"{d.problem}; skipped" if d.junk else f"{d.problem}; skipped (run 'replicator verify')")
        rows.append({"name": d.name, "id": d.id, "problem": d.problem, "junk": d.junk})
    return rows


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


def add_ssh_options(p, title: str, *, host_key: bool = True):
    """The options every command that reaches ``ssh://USER@HOST:PORT/NAME`` takes; :returns: their group."""
    ssh = p.add_argument_group(title)
    ssh.add_argument("--identity", metavar="FILE", help="SSH private key to log in with")
    ssh.add_argument("--known-hosts", metavar="FILE", help="known hosts file pinning the server's host key")
    if host_key:
        ssh.add_argument("--accept-host-key", metavar="FINGERPRINT",
                         help="trust an unknown host key if its SHA256 fingerprint is exactly this (it is then pinned)")
    return ssh


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



RESET_HWM_ENV = "REPLICATOR_RESET_HWM_AFTER_UNLOCK"


def _vm_hwm_mib() -> float:
    """This process's VmHWM (peak RSS) from /proc, in MiB; 0.0 where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def reset_peak_rss_after_unlock() -> float | None:
    """With $REPLICATOR_RESET_HWM_AFTER_UNLOCK=1 (benchmarks): the peak RSS so far (the passphrase KDF is
    memory-hard on purpose), then the high-water mark reset (``/proc/self/clear_refs``, "5").

    :returns: the unlock's peak in MiB, None when the variable is not set or the reset is refused."""
    if os.environ.get(RESET_HWM_ENV) != "1":
        return None
    unlock = _vm_hwm_mib()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return unlock


def peak_rss_summary(unlock_mib: float | None) -> dict:
    """``{"peak_rss_mib": {"unlock": .., "after_unlock": ..}}`` for a --json summary, {} when not measured."""
    if unlock_mib is None:
        return {}
    return {"peak_rss_mib": {"unlock": round(unlock_mib, 1), "after_unlock": round(_vm_hwm_mib(), 1)}}


# glibc malloc (mallopt(3)): a fixed mmap threshold keeps every buffer of 128 KiB or more (chunks, packs, frames)
# in a mapping of its own, returned to the system when freed; by default the threshold rises to the size of
# the largest block freed (up to 32 MiB), so 16 MiB packs come from the heap and fragment it for good.  Two
# arenas instead of eight per core for the chunk, pack and ssh threads.  Measured on the 1.5 GiB corpus over
# ssh: sender 207 -> 155 MiB (receiver 127 -> 90 MiB, but cli/__init__.py applies it to sync and daemon only: it
# slows restore).  A MALLOC_* variable the user set wins.
M_ARENA_MAX, M_MMAP_THRESHOLD = -8, -3
MALLOC_MMAP_THRESHOLD = 128 * 1024
MALLOC_ARENAS = 2


def tune_malloc() -> dict[str, bool]:
    """Set the mmap threshold and the arena count (glibc; elsewhere nothing).  :returns: what was set."""
    done = {"mmap_threshold": False, "arena_max": False}
    if not sys.platform.startswith("linux"):
        return done
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return done
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        done["mmap_threshold"] = bool(mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD))
    if "MALLOC_ARENA_MAX" not in os.environ:
        done["arena_max"] = bool(mallopt(M_ARENA_MAX, MALLOC_ARENAS))
    return done

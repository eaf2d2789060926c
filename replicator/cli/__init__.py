"""The ``replicator`` command: argument parsing, dispatch, errors -> exit codes.

Only this package (and the daemon) print, read the environment and exit.
Every failure is one line on stderr, ``replicator: error: ...``, and a
documented exit code (docs/OPERATIONS.md); never a traceback.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys

from replicator import __version__
from replicator import constants as C
from replicator.errors import DiskFull, ReplicatorError

COMMANDS = ("init_cmd", "sync_cmd", "snapshots_cmd", "restore_cmd", "verify_cmd", "diff_cmd", "serve_cmd",
            "daemon_cmd", "status_cmd", "audit_cmd", "forget_cmd", "prune_cmd", "upgrade_cmd", "promote_cmd",
            "handback_cmd", "key_cmd", "completion_cmd", "ls_cmd", "find_cmd", "cat_cmd", "stats_cmd", "mount_cmd")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; ``only``: the command about to run, whose module alone is imported (each command
    module pulls in the layers it runs: 0.45 s for all of them, 0.13 s for ``restore``).  The others are
    then bare entries, so that the choices (and a mistyped command's error) still name every command."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="replicator",
        description="Secure two-site replication: chunk, deduplicate, compress, encrypt, snapshot, verify.",
        epilog="Exit codes: 0 ok, 1 warnings, 2 usage, 3 repository, 4 passphrase, 5 integrity, 6 storage, "
               "7 transport, 8 history diverged, 9 source refused, 10 address in use (serve --listen), 70 internal "
               "error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=_version_text())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        if only is None or name == f"{only}_cmd":
            importlib.import_module(f"replicator.cli.{name}").register(sub)
        else:
            sub.add_parser(name.removesuffix("_cmd"))
    return parser


def command_of(argv: list[str]) -> str | None:
    """The command ``argv`` runs, when its first word is one (the only options before it are --help and
    --version, which need the whole parser); else None."""
    first = argv[0] if argv else ""
    return first if f"{first}_cmd" in COMMANDS else None


def _version_text() -> str:
    """``replicator 0.4.0 (repository format 1, protocol 3)``: what this build reads, writes and speaks."""
    from replicator.transport.protocol import PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN

    def span(lo: int, hi: int) -> str:
        return str(lo) if lo == hi else f"{lo} to {hi}"

    return (f"replicator {__version__} (repository format {span(C.FORMAT_VERSION_MIN, C.FORMAT_VERSION_MAX)}, "
            f"protocol {span(PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX)})")


def add_common(p: argparse.ArgumentParser, *, passphrase: bool = True) -> None:
    if passphrase:
        p.add_argument("--passphrase-file", metavar="FILE",
                       help="read the passphrase from FILE (else --passphrase-command, $REPLICATOR_PASSPHRASE, "
                            "the systemd credential replicator-passphrase, a prompt)")
        p.add_argument("--passphrase-command", metavar="CMD",
                       help="run CMD (split like a shell would, run without one) and use what it prints, "
                            "one trailing newline removed")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


# The commands whose memory tune_malloc bounds (the sender: chunk, pack and frame buffers).  Not the others:
# with it, restore ran 35% slower locally and 55% over ssh:// (every buffer of 128 KiB or more mapped and
# zeroed afresh), and serve answers the reads of a restore from the other site.
TUNED_MALLOC = frozenset({"sync", "daemon"})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(command_of(argv)).parse_args(argv)
    try:
        from replicator.app.log import quiet_lost_connection_writes
        from replicator.cli.common import reset_warnings, tune_malloc, warnings_printed

        if getattr(args, "command", None) in TUNED_MALLOC:
            tune_malloc()
        quiet_lost_connection_writes()
        reset_warnings()
        rc = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader gone: BrokenPipeError here, not at the interpreter's exit
        return C.EXIT_WARNING if rc == C.EXIT_OK and warnings_printed() else rc
    except BrokenPipeError as exc:
        if not _stdout_gone():
            return _os_error(exc)  # a socket or a child's pipe: an error like any other
        return _quiet_sigpipe_exit()
    except ReplicatorError as exc:
        print(f"replicator: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("replicator: interrupted; everything committed before is intact", file=sys.stderr)
        return C.EXIT_INTERRUPTED
    except OSError as exc:
        return _os_error(exc)
    except Exception as exc:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("REPLICATOR_DEBUG"):
            raise
        print(f"replicator: internal error: {type(exc).__name__}: {exc} "
              "(a bug; rerun with REPLICATOR_DEBUG=1 for the traceback and report it)", file=sys.stderr)
        return C.EXIT_INTERNAL


def _os_error(exc: OSError) -> int:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        print(f"replicator: error: {DiskFull(exc.filename or 'a file')}", file=sys.stderr)
        return C.EXIT_STORAGE
    where = f"{exc.filename}: " if exc.filename else ""
    print(f"replicator: error: {where}{exc.strerror or exc}", file=sys.stderr)
    return C.EXIT_STORAGE


def _stdout_gone() -> bool:
    """True when stdout is a pipe or socket whose reader has gone (``replicator diff ... | head``)."""
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, 0)  # POLLERR (reader gone) and POLLHUP are always reported
        return any(ev & (select.POLLERR | select.POLLHUP) for _fd, ev in poller.poll(0))
    except (AttributeError, ValueError, OSError):
        return False


def _quiet_sigpipe_exit() -> int:
    """The reader of stdout has gone: stop without a word, as coreutils do (they die of SIGPIPE,
    which a shell shows as 141).  Python ignores SIGPIPE, so exit 128 + SIGPIPE instead; stdout
    now points at /dev/null, so the interpreter's flush at exit finds nowhere to fail."""
    import signal

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, ValueError, OSError):
        pass
    return 128 + signal.SIGPIPE

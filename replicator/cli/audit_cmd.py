"""replicator audit verify FILE: check the hash chain of an audit log."""
from __future__ import annotations

import sys

from replicator import constants as C
from replicator.cli.common import emit
from replicator.errors import UsageError


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("audit", help="check the audit log", description=
                       "The audit log has one JSON line per committed snapshot, each carrying the SHA-256 of the "
                       "line before.  'verify' checks the chain and names the first broken line (exit code 5).")
    p.add_argument("action", choices=["verify"])
    p.add_argument("file", metavar="FILE")
    p.add_argument("--head", metavar="SHA256", help="expected hash of the last line (a copy kept elsewhere)")
    add_common(p, passphrase=False)
    p.set_defaults(func=run)


def run(args) -> int:
    from replicator.app.audit import verify_audit

    try:
        check = verify_audit(args.file, head=args.head)
    except OSError as exc:
        raise UsageError(f"cannot read audit log {args.file}: {exc.strerror}") from None
    if check.ok:
        emit(args, check.as_dict(), [f"{args.file}: {check.lines} lines, chain intact; head {check.head}"])
        return C.EXIT_OK
    line = f"{args.file}:{check.bad_line}: {check.problem} ({check.lines} lines before it are intact)"
    emit(args, check.as_dict(), [line])
    if args.json or args.quiet:
        print(f"replicator: error: {line}", file=sys.stderr)
    return C.EXIT_INTEGRITY

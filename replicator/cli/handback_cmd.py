"""replicator handback REPO --name SOURCE: this site stops writing SOURCE and lets the other site take it back."""
from __future__ import annotations

from replicator import constants as C
from replicator.cli.common import add_audit_option, audit, emit, open_repository
from replicator.errors import UsageError
from replicator.format.head import SIDE_REMOTE
from replicator.repo.lineage import fence_source
from replicator.transport.url import is_remote


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("handback", help="hand the writing of a source back to the other site (failback)",
                       description="The end of a failback, run at the site that was promoted: from now on REPO "
                       "refuses commits of SOURCE made here (exit 8) and accepts them from the other site "
                       "again, whose next sync takes the role back with --reset-lineage.  Stop the applications "
                       "writing here and sync their last changes first.  See docs/OPERATIONS.md 'Failover and "
                       "failback'.")
    p.add_argument("repo", metavar="REPO", help="this site's repository (a path)")
    p.add_argument("--name", required=True, metavar="SOURCE", help="the source to hand back")
    add_audit_option(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if is_remote(args.repo):
        raise UsageError("handback runs at the site that was promoted, on its own repository (a path, not ssh://)")
    with open_repository(args, exclusive=True) as repo:
        listing = repo.read_snapshots()
        if not any(s.source == args.name for s in listing.snapshots):
            sources = sorted({s.source for s in listing.snapshots}) or ["none"]
            raise UsageError(f"{args.repo} holds no snapshot of {args.name!r}: nothing to hand back "
                             f"(its sources: {', '.join(sources)})")
        fence_source(repo, args.name, SIDE_REMOTE, "handback")
        repo_id = repo.id
    ok = audit(args, {"event": "handback", "repository": repo_id, "source": args.name})
    emit(args, {"source": args.name, "writer": "the other site"},
         [f"{args.name} is handed back: commits of it from this site are refused (exit 8); the other site "
          f"takes the role back with 'replicator sync ... --reset-lineage'"])
    return C.EXIT_OK if ok else C.EXIT_WARNING

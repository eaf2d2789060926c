"""replicator promote SRC REPO --name SOURCE: this site takes over writing SOURCE (failover)."""
from __future__ import annotations

from replicator.cli import sync_cmd
from replicator.cli.common import audit, open_repository
from replicator.errors import UsageError
from replicator.format.head import SIDE_LOCAL
from replicator.repo.lineage import fence_source
from replicator.transport.url import is_remote


def register(sub) -> None:
    p = sub.add_parser("promote", help="take over writing a source at this site (failover)", description=
                       "Commit SRC (at the secondary: its live mirror, with what applications wrote there) as "
                       "the next generation of SOURCE in REPO, the repository of this site, and make this site "
                       "its writer: from then on the other site's syncs of SOURCE are refused (exit 8, naming "
                       "this host), even after its daemon restarts or its cache is lost: REPO itself records the "
                       "fence, and refuses every commit of SOURCE that does not come from this site until "
                       "'replicator handback' here.  See docs/OPERATIONS.md 'Failover and failback'.")
    sync_cmd.add_sync_arguments(p, name_required=True)
    p.set_defaults(func=run)


def run(args) -> int:
    if is_remote(args.repo):
        raise UsageError("promote runs at the site that takes over, on its own repository (a path, not ssh://)")
    with open_repository(args) as repo:
        listing = repo.read_snapshots()
    if not any(s.source == args.name for s in listing.snapshots):
        sources = sorted({s.source for s in listing.snapshots}) or ["none"]
        raise UsageError(f"{args.repo} holds no snapshot of {args.name!r}: nothing to take over "
                         f"(its sources: {', '.join(sources)})")
    with open_repository(args, exclusive=True) as repo:  # the fence first: the old primary is refused at once
        fence_source(repo, args.name, SIDE_LOCAL, "promote")
    audit(args, {"event": "promote", "repository": args.repo, "source": args.name})
    args.reset_lineage = True  # taking the lineage over is the point: accept its history as it is here
    code = sync_cmd.run(args)
    if not args.quiet and not args.json:
        print(f"{args.name} is now written from this site; the other site's syncs of it are refused (exit 8) "
              f"until it fails back")
    return code

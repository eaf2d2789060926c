"""replicator diff REPO OLD NEW"""
from __future__ import annotations

from replicator import constants as C
from replicator.cli.common import add_ssh_options, emit, open_repository, printable, warn_damaged
from replicator.repo.merkle import diff_trees


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("diff", help="list what changed between two snapshots", description=
                       "Compare two snapshots subtree by subtree (identical subtrees are skipped by their merkle "
                       "ids) and list added (+), removed (-) and modified (M) paths.  Control characters and "
                       "bytes that are not UTF-8 in names are shown escaped (\\x1b); --json gives them exactly.")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("old", metavar="OLD", help="snapshot id or unique prefix")
    p.add_argument("new", metavar="NEW", help="snapshot id or unique prefix")
    add_ssh_options(p, "remote (REPO = ssh://USER@HOST:PORT/NAME: read the other site's repository)")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    with open_repository(args) as repo:
        listing = repo.read_snapshots()
        old = repo.find_snapshot(args.old, listing=listing)  # a damaged one named here: integrity error
        new = repo.find_snapshot(args.new, listing=listing)
        changes = list(diff_trees(repo.read_tree, old.tree, new.tree))
    damaged = warn_damaged(listing.damaged)
    lines = [f"{c.kind} {printable(c.path)}" + (f"  ({c.what})" if c.what else "") for c in changes]
    lines.append(f"{len(changes)} changes from {old.short_id} to {new.short_id}")
    emit(args, {"old": old.id, "new": new.id, "damaged_snapshots": damaged,
                "changes": [{"kind": c.kind, "path": c.path, "what": c.what} for c in changes]}, lines)
    return C.EXIT_WARNING if damaged else C.EXIT_OK

"""replicator diff REPO OLD NEW"""
from __future__ import annotations

from replicator.cli.common import emit, read_passphrase
from replicator.repo.merkle import diff_trees
from replicator.repo.repository import Repository


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("diff", help="list what changed between two snapshots", description=
                       "Compare two snapshots subtree by subtree (identical subtrees are skipped by their merkle "
                       "ids) and list added (+), removed (-) and modified (M) paths.")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("old", metavar="OLD", help="snapshot id or unique prefix")
    p.add_argument("new", metavar="NEW", help="snapshot id or unique prefix")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    with Repository.open(args.repo, read_passphrase(args)) as repo:
        old, new = repo.find_snapshot(args.old), repo.find_snapshot(args.new)
        changes = list(diff_trees(repo.read_tree, old.tree, new.tree))
    lines = [f"{c.kind} {c.path}" + (f"  ({c.what})" if c.what else "") for c in changes]
    lines.append(f"{len(changes)} changes from {old.short_id} to {new.short_id}")
    emit(args, {"old": old.id, "new": new.id,
                "changes": [{"kind": c.kind, "path": c.path, "what": c.what} for c in changes]}, lines)
    return 0

"""replicator upgrade REPO"""
from __future__ import annotations

from replicator.cli.common import emit, open_repository
from replicator.repo.upgrade import UpgradeReport


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("upgrade", help="bring a repository written by an older release up to date",
                       description="Add the key-less objects a served repository needs that older releases did "
                       "not write from a local sync: an id list per pack (ids/) and the references of each "
                       "snapshot (refs/), read from the encrypted pack tables and trees.  Only adds objects; "
                       "safe to interrupt and to run again.  Every locked open (a local sync, forget, prune) "
                       "does the same; run this before serving a repository that was written locally, or "
                       "moved between the sites.")
    p.add_argument("repo", metavar="REPO")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    with open_repository(args, exclusive=True) as repo:
        report = repo.upgraded or UpgradeReport()
    if report.changed:
        lines = [f"wrote {report.id_lists_written} id lists and {report.refs_written} snapshot refs"]
    else:
        lines = ["repository is up to date"]
    lines += [f"  not upgraded: {p}" for p in report.problems]
    emit(args, report.as_dict(), lines)
    return 1 if report.problems else 0

"""replicator prune REPO [--dry-run]"""
from __future__ import annotations

from replicator import constants as C
from replicator.cli.common import (
    add_audit_option,
    add_ssh_options,
    audit,
    emit,
    human_bytes,
    open_repository,
    printable,
    warn,
)
from replicator.repo.prune import prune


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("prune", help="delete packs that no snapshot references", description=
                       "Delete every pack none of whose chunks a remaining snapshot references (checked against "
                       "the pack's own table, not only the index), with its id list; report the space that "
                       "partly used packs still hold.  Takes the repository's writer lock, so it never runs "
                       "during a sync (local, or a write session of 'replicator serve').  A damaged snapshot "
                       "object is named (exit code 1) and everything its key-less refs/ object lists is kept; "
                       "prune refuses to delete anything when a damaged snapshot has no usable refs/ object or "
                       "a tree of an intact snapshot cannot be read.  REPO may be ssh://USER@HOST:PORT/NAME (a key "
                       "with 'w'; no passphrase needed): the other site prunes under its own lock, key-less, by "
                       "the refs/ of its snapshots and the signed id list of each pack (a pack without one is "
                       "kept).")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    add_ssh_options(p, "remote (REPO = ssh://USER@HOST:PORT/NAME: the other site prunes, under its lock)")
    add_audit_option(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from replicator.transport.url import is_remote

    if is_remote(args.repo):
        return _run_remote(args)
    # Even a dry run takes the lock: its answer is only true while no sync adds snapshots.
    with open_repository(args, exclusive=True) as repo:
        report = prune(repo, dry_run=args.dry_run)
        repo_id = repo.id
    for d in report.damaged_snapshots:
        warn(f"{d['problem']}; skipped" + ("" if d["junk"] else
                                           f", the {d['kept_by_refs']} blobs its refs/ object lists are kept"))
    verb = "would delete" if args.dry_run else "deleted"
    lines = [f"{report.snapshots} snapshots reference {report.blobs_referenced} blobs; {report.packs_total} packs",
             f"  {verb} {report.packs_deleted} unreferenced packs ({human_bytes(report.bytes_deleted)}) "
             f"and {report.id_lists_deleted} id lists, {report.refs_deleted} orphaned refs",
             f"  {report.packs_partly_used} partly used packs kept whole: "
             f"{human_bytes(report.bytes_reclaimable_in_partly_used)} unreferenced inside them (not repacked)"]
    if report.packs_kept_by_table:
        lines.append(f"  {report.packs_kept_by_table} packs kept: the index said unused, their own table disagreed")
    lines += [f"  damaged pack left alone: {name}" for name in report.damaged_packs_left]
    lines += [f"  damaged snapshot object {printable(d['name'])}: "
              + ("ignored (not a snapshot name)" if d["junk"] else f"{d['kept_by_refs']} blobs kept from its refs/")
              for d in report.damaged_snapshots]
    emit(args, report.as_dict(), lines)
    rc = C.EXIT_WARNING if report.damaged_snapshots else C.EXIT_OK
    if args.dry_run:
        return rc
    ok = audit(args, {"event": "prune", "repository": repo_id, "packs_deleted": report.packs_deleted,
                      "bytes_deleted": report.bytes_deleted, "snapshots": report.snapshots})
    return rc if ok else C.EXIT_WARNING


def _run_remote(args) -> int:
    """The other site's key-less prune, in a write session (it holds its lock while it runs)."""
    from replicator.app.destinations import open_remote_sink
    from replicator.format.repoconfig import parse_config
    from replicator.transport import protocol as P

    with open_remote_sink(args.repo, identity=args.identity, known_hosts=args.known_hosts,
                          accept_host_key=args.accept_host_key, mode=P.MODE_WRITE) as sink:
        repo_id = parse_config(sink.describe()[0], sink.location)["id"]
        report = sink.prune(dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    lines = [f"{printable(args.repo)}: {report['snapshots']} snapshots; {report['packs_total']} packs",
             f"  {verb} {report['packs_deleted']} unreferenced packs ({human_bytes(report['bytes_deleted'])}) "
             f"and {report['id_lists_deleted']} id lists, {report['refs_deleted']} orphaned refs"]
    if report["packs_kept_unlisted"]:
        lines.append(f"  {report['packs_kept_unlisted']} packs kept without a readable id list (what they hold is "
                     f"unknown without the key: 'replicator prune' at that site, with the passphrase, decides)")
    emit(args, {"dry_run": args.dry_run, "remote": True, **report}, lines)
    if args.dry_run:
        return C.EXIT_OK
    ok = audit(args, {"event": "prune", "repository": repo_id, "packs_deleted": report["packs_deleted"],
                      "bytes_deleted": report["bytes_deleted"], "snapshots": report["snapshots"],
                      "destination": args.repo})
    return C.EXIT_OK if ok else C.EXIT_WARNING

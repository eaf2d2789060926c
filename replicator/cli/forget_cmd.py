"""replicator forget REPO [--source NAME] --keep-last N ... [--dry-run]"""
from __future__ import annotations

from replicator import constants as C
from replicator.cli.common import add_audit_option, add_ssh_options, audit, emit, open_repository, printable, warn_damaged
from replicator.errors import UsageError
from replicator.repo.prune import delete_snapshots
from replicator.repo.retention import RULES, Policy, apply_policy
from replicator.times import shown_ns


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("forget", help="delete snapshots according to a retention policy", description=
                       "Apply a retention policy to each source's snapshots (restic's rules, ordered by "
                       "generation, never by time): a snapshot is kept if any --keep-* rule keeps it; the highest "
                       "generation of every source is always kept.  Periods (hours, days, ...) use each "
                       "snapshot's recorded time, lowered to a newer generation's when it is later (a wrong "
                       "clock, marked '!'), so a snapshot dated in the future takes no period.  Damaged snapshot "
                       "objects are named, skipped and never deleted (exit code 1).  Only snapshot objects are "
                       "deleted; run 'replicator prune' to free the space of the data they alone referenced.  "
                       "Takes the repository's writer lock.  REPO may be ssh://USER@HOST:PORT/NAME (a key with "
                       "'w'): the policy is applied here, with the passphrase, and the other site deletes each "
                       "snapshot under its own lock only on an order signed with the repository's key, never "
                       "the latest of a source.")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("--source", metavar="NAME", help="only this source's snapshots (default: every source)")
    for rule in RULES:
        what = "highest generations" if rule == "last" else f"most recent {rule} periods (newest snapshot of each)"
        p.add_argument(f"--keep-{rule}", type=int, default=0, metavar="N", help=f"keep the N {what}; -1: all")
    p.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    add_ssh_options(p, "remote (REPO = ssh://USER@HOST:PORT/NAME: the other site deletes, under its lock)")
    add_audit_option(p)
    add_common(p)
    p.set_defaults(func=run)




def run(args) -> int:
    try:
        policy = Policy(**{rule: getattr(args, f"keep_{rule}") for rule in RULES})
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if policy.empty:
        raise UsageError("no --keep-* rule given: refusing to forget every snapshot but the newest of each source")
    with open_repository(args, exclusive=not args.dry_run, remote_write=True) as repo:
        listing = repo.read_snapshots()
        snaps = [s for s in listing.snapshots if args.source is None or s.source == args.source]
        if args.source is not None and not snaps:
            raise UsageError(f"no snapshot of source {args.source!r}")
        damaged = warn_damaged(listing.damaged)  # never deleted here: what they are is unknown
        decisions = apply_policy(snaps, policy)
        remove = [d.snapshot.id for d in decisions if not d.keep]
        if not args.dry_run:
            delete_snapshots(repo, remove)
        repo_id = repo.id
    rows = [{"id": d.snapshot.id, "source": d.snapshot.source, "generation": d.snapshot.generation,
             "time": shown_ns(d.snapshot.time_ns), "time_ns": d.snapshot.time_ns, "effective_time_ns": d.time_ns,
             "clock_suspect": d.clock_suspect,
             "keep": d.keep, "reasons": d.reasons} for d in decisions]
    verb = "would remove" if args.dry_run else "removed"
    lines = [f"{'keep' if d.keep else 'remove':6}  {d.snapshot.id[:16]}  #{d.snapshot.generation:<5} "
             f"{shown_ns(d.snapshot.time_ns)}{'!' if d.clock_suspect else ' '} {printable(d.snapshot.source)}"
             + (f"  ({', '.join(d.reasons)})" if d.keep else "")
             for d in decisions]
    if any(d.clock_suspect for d in decisions):
        lines.append("! recorded time later than a newer generation's (a wrong clock): counted in that "
                     "generation's period")
    lines.append(f"{len(decisions) - len(remove)} snapshots kept, {len(remove)} {verb}"
                 + ("; run 'replicator prune' to free their data" if remove and not args.dry_run else ""))
    emit(args, {"dry_run": args.dry_run, "kept": len(decisions) - len(remove), "removed": len(remove),
                "snapshots": rows, "damaged_snapshots": damaged}, lines)
    rc = C.EXIT_WARNING if damaged else C.EXIT_OK
    if args.dry_run or not remove:
        return rc
    ok = audit(args, {"event": "forget", "repository": repo_id, "removed": remove})
    return rc if ok else C.EXIT_WARNING

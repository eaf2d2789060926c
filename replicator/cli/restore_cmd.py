"""replicator restore REPO TARGET [--snapshot ID] [--path SUBPATH]"""
from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator

from replicator import constants as C
from replicator.cli.common import (
    add_audit_option,
    add_ssh_options,
    audit,
    emit,
    human_bytes,
    open_repository,
    printable,
    progress_bar,
    warn_damaged,
)
from replicator.errors import UsageError
from replicator.format.entry import Entry


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("restore", help="write a snapshot (or part of it) to TARGET", description=
                       "Restore a snapshot into TARGET.  Each file is written to a temporary name and renamed "
                       "into place; metadata is restored; entries whose path would land outside TARGET are "
                       "refused and named.  Existing files at the same paths are replaced.  The latest snapshot "
                       "is the highest generation of the source (never chosen by time: the primary's clock can "
                       "be wrong); a repository with several sources needs --source.  Damaged snapshot objects "
                       "are named and skipped (exit code 1); restoring one by --snapshot is an integrity error.")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--snapshot", metavar="ID",
                   help="snapshot id or unique prefix (default: the highest generation of the source)")
    p.add_argument("--source", metavar="NAME", help="with no --snapshot: the highest generation of this source "
                                                    "(needed when the repository holds several sources)")
    p.add_argument("--path", metavar="SUBPATH", help="restore only this file or directory (path inside the snapshot)")
    p.add_argument("--delta", action="store_true",
                   help="TARGET already holds an older copy (failback): keep files whose size and modification "
                        "time match, rebuild the others from the chunks their current version already holds, and "
                        "fetch only the rest (files not in the snapshot are left in place)")
    p.add_argument("--restore-privileges", action="store_true",
                   help="also restore setuid/setgid bits and file capabilities (security.capability); "
                        "without it such files are restored without them, each named in a warning")
    add_audit_option(p)
    add_ssh_options(p, "remote (REPO = ssh://USER@HOST:PORT/NAME: read the other site's repository)")
    add_common(p)
    p.set_defaults(func=run)


def select(entries: Iterator[Entry], subpath: str | None) -> Iterator[Entry]:
    """Entries at or below ``subpath``, and the directories above it (so it has
    somewhere to go); hard links to files outside it become plain files."""
    if not subpath:
        yield from entries
        return
    prefix = subpath + "/"
    for e in entries:
        if prefix.startswith(e.path + "/") and e.kind == "dir":
            yield e
        elif e.path == subpath or e.path.startswith(prefix):
            if e.link_to and not (e.link_to == subpath or e.link_to.startswith(prefix)):
                e = dataclasses.replace(e, link_to="")
            yield e


def run(args) -> int:
    from replicator.restore.seeds import Seeds
    from replicator.restore.writer import restore

    subpath = (args.path or "").strip("/") or None
    with open_repository(args) as repo:
        listing = repo.read_snapshots()
        sources = listing.sources()
        if not args.snapshot and args.source is None and len(sources) > 1:
            raise UsageError(f"{args.repo} holds snapshots of {len(sources)} sources "
                             f"({', '.join(printable(s) for s in sources)}): choose one with --source NAME "
                             f"(or --snapshot ID); the latest is only defined within a source")
        snap = repo.find_snapshot(args.snapshot, args.source, listing=listing)  # a damaged one: integrity error
        damaged = warn_damaged(listing.damaged)
        wanted = list(select(repo.walk_tree(snap.tree), subpath))
        if subpath and not wanted:
            raise UsageError(f"snapshot {snap.short_id} has no path {subpath!r}")
        total = sum(e.size for e in wanted if not e.link_to)

        def read_file(entry: Entry) -> Iterator[bytes]:
            return repo.read_blobs(entry.chunks)

        seeds = Seeds(repo, args.target) if args.delta else None
        with progress_bar(args, "restore", total) as progress:
            report = restore(args.target, wanted, seeds.read_file if seeds else read_file, on_progress=progress,
                             fsync_each=False, restore_privileges=args.restore_privileges,
                             keep_unchanged=args.delta)
    summary = {"snapshot": snap.id, "target": args.target, "files": report.files, "dirs": report.dirs,
               "symlinks": report.symlinks, "hardlinks": report.hardlinks, "bytes": report.bytes,
               "errors": [{"path": p, "message": m} for p, m in report.errors],
               "refused": [{"path": p, "message": m} for p, m in report.refused],
               "warnings": [{"path": p, "message": m} for p, m in report.warnings],
               "damaged_snapshots": damaged, "kept": report.kept}
    if seeds is not None:
        summary.update(chunks_fetched=seeds.chunks_fetched, chunks_seeded=seeds.chunks_seeded,
                       bytes_seeded=seeds.bytes_seeded)
    lines = [f"restored snapshot {snap.short_id} ({printable(snap.source)} #{snap.generation}) to "
             f"{printable(args.target)}: {report.files} files, {report.dirs} dirs, {report.symlinks} symlinks, "
             f"{human_bytes(report.bytes)}"]
    if seeds is not None:
        lines.append(f"  delta: {report.kept} files unchanged and kept; {seeds.chunks_seeded} chunks taken from the "
                     f"files already there ({human_bytes(seeds.bytes_seeded)}), {seeds.chunks_fetched} fetched")
    lines += [f"  refused: {printable(p)}: {printable(m)}" for p, m in report.refused]
    lines += [f"  error: {printable(p)}: {printable(m)}" for p, m in report.errors]
    lines += [f"  warning: {printable(p)}: {printable(m)}" for p, m in report.warnings]
    emit(args, summary, lines)
    audited = audit(args, {"event": "restore", "repository": repo.id, "snapshot": snap.id, "source": snap.source,
                           "generation": snap.generation, "root_tree": snap.tree.hex(), "path": subpath or "",
                           "target": os.path.abspath(args.target), "files": report.files, "bytes": report.bytes,
                           "errors": len(report.errors) + len(report.refused)})
    if report.errors or report.refused:
        if args.quiet or args.json:
            first = (report.refused + report.errors)[0]
            print(f"replicator: error: could not restore {printable(first[0])}: {printable(first[1])}",
                  file=sys.stderr)
        integrity = any("integrity" in m for _p, m in report.errors)
        return C.EXIT_INTEGRITY if integrity else C.EXIT_WARNING
    return C.EXIT_OK if audited and not damaged else C.EXIT_WARNING

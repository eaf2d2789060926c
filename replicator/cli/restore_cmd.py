"""replicator restore REPO TARGET [--snapshot ID] [--path SUBPATH] [--delta [--delete]]"""
from __future__ import annotations

import dataclasses
import itertools
import os
import sys
from collections.abc import Iterable, Iterator

from replicator import constants as C
from replicator.cli.common import (
    add_audit_option,
    add_ssh_options,
    audit,
    cache_dir,
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
                   help="TARGET already holds an older copy (failback): keep files whose size, modification "
                        "time and mode match, rebuild the others from chunks found in any file of TARGET "
                        "(moved and copied files too), and fetch only the rest (files not in the snapshot are "
                        "left in place unless --delete)")
    p.add_argument("--delete", action="store_true",
                   help="with --delta, of the whole snapshot: remove from TARGET what the snapshot does not have "
                        "(like rsync --delete), after everything is written; symlinks are removed, never "
                        "followed, nothing outside TARGET is touched, and the count is reported.  TARGET must be "
                        "an existing directory holding an older copy of this source (it shares a top-level name "
                        "with the snapshot, or is empty), and hold neither the repository nor the cache")
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


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def check_delete_target(args, subpath: str | None) -> None:
    """What can be refused before the repository is opened.  :raises UsageError:"""
    from replicator.transport.url import is_remote

    if not args.delta:
        raise UsageError("--delete needs --delta (a restore into a tree that holds an older copy)")
    if subpath:
        raise UsageError("--delete removes what the whole snapshot lacks: it cannot be used with --path")
    target = os.path.realpath(args.target)
    if not os.path.isdir(args.target):
        raise UsageError(f"--delete: {printable(args.target)} is not an existing directory (nothing to clean; "
                         f"check the path, or restore without --delete)")
    if target == os.path.realpath("/"):
        raise UsageError("--delete into the root directory is refused")
    guarded = [("the cache directory", cache_dir(args))]
    if not is_remote(args.repo):
        guarded.append(("the repository", args.repo))
    for what, path in guarded:
        real = os.path.realpath(path)
        if _inside(real, target) or _inside(target, real):
            raise UsageError(f"--delete: {what} {printable(path)} is inside TARGET {printable(args.target)} "
                             f"(or holds it): refusing to clean there")


def check_delete_names(target: str, wanted: list[Entry]) -> None:
    """A non-empty TARGET must share a top-level name with the snapshot.  :raises UsageError:"""
    top = {e.path for e in wanted if "/" not in e.path}
    here = os.listdir(target)
    if here and top.isdisjoint(here):
        raise UsageError(f"--delete: {printable(target)} holds none of the snapshot's top-level names: it is not "
                         f"an older copy of this source; refusing to delete its {len(here)} entries")


def choose_snapshot(args, repo, listing, ref: str | None, *, by_id: str = "--snapshot ID"):
    """The snapshot ``ref`` names (an id or unique prefix), else the highest generation of ``args.source``
    (restore, ls, cat and find choose alike).

    :param listing: what ``repo.read_snapshots()`` returned.
    :param by_id: how the command names a snapshot by id, for the message.
    :raises UsageError: no ``ref`` nor ``--source`` while the repository holds several sources.
    :raises RepositoryError: no match, an ambiguous prefix, no snapshot.
    :raises IntegrityError: ``ref`` names a damaged snapshot; the latest generation is repeated.
    """
    sources = listing.sources()
    if not ref and args.source is None and len(sources) > 1:
        raise UsageError(f"{args.repo} holds snapshots of {len(sources)} sources "
                         f"({', '.join(printable(s) for s in sources)}): choose one with --source NAME "
                         f"(or {by_id}); the latest is only defined within a source")
    return repo.find_snapshot(ref, args.source, listing=listing)


RESTORE_WRITERS = 1  # threads placing small files (measured: more threads only fight over the GIL; docs/ARCHITECTURE.md)


def run(args) -> int:
    from replicator.restore.prefetch import Prefetcher
    from replicator.restore.seeds import Seeds
    from replicator.restore.writer import restore

    subpath = (args.path or "").strip("/") or None
    if args.delete:
        check_delete_target(args, subpath)
    with open_repository(args) as repo:
        listing = repo.read_snapshots()
        snap = choose_snapshot(args, repo, listing, args.snapshot)  # a damaged one: integrity error
        damaged = warn_damaged(listing.damaged)
        walk = select(repo.walk_tree(snap.tree), subpath)
        wanted: Iterable[Entry]
        listed: list[Entry] = []
        total: int | None
        if args.delta:  # the seeds scan, and --delete checks, the whole list first
            listed = list(walk)
            wanted, total = listed, sum(e.size for e in listed if not e.link_to)
            if subpath and not listed:
                raise UsageError(f"snapshot {snap.short_id} has no path {subpath!r}")
            if args.delete:
                check_delete_names(args.target, listed)
            seeds: Seeds | None = Seeds(repo, args.target)
            prefetch = None
        else:
            # A full restore walks the snapshot and reads the next small files ahead, on threads of their
            # own, while it writes (restore/prefetch.py); --delta reads only what the seeds lack, file by file.
            seeds, prefetch = None, Prefetcher(repo, walk)
            wanted = prefetch.entries()
            total = None if subpath else snap.stats.get("bytes")
        try:
            if subpath and prefetch is not None:
                head = next(iter(wanted), None)
                if head is None:
                    raise UsageError(f"snapshot {snap.short_id} has no path {subpath!r}")
                wanted = itertools.chain([head], wanted)
            if seeds is not None:
                seeds.scan(listed)
            read_file = seeds.read_file if seeds is not None else prefetch.read_file  # type: ignore[union-attr]
            with progress_bar(args, "restore", total) as progress:
                report = restore(args.target, wanted, read_file,
                                 on_progress=progress, fsync_each=False, restore_privileges=args.restore_privileges,
                                 keep_unchanged=args.delta, delete_extras=args.delete, writers=RESTORE_WRITERS)
        finally:
            if seeds is not None:
                seeds.close()
            if prefetch is not None:
                prefetch.close()
        if seeds is not None:
            seeds.account(report)
    stats = getattr(getattr(repo.storage, "sink", None), "stats", None)  # ssh://: the session's bytes on the wire
    wire: dict | None = stats if isinstance(stats, dict) else None
    summary = {"snapshot": snap.id, "target": args.target, "files": report.files, "dirs": report.dirs,
               "symlinks": report.symlinks, "hardlinks": report.hardlinks, "bytes": report.bytes,
               "errors": [{"path": p, "message": m} for p, m in report.errors],
               "refused": [{"path": p, "message": m} for p, m in report.refused],
               "warnings": [{"path": p, "message": m} for p, m in report.warnings],
               "damaged_snapshots": damaged, "kept": report.kept, "kept_files": report.kept,
               "fetched_bytes": report.fetched_bytes, "seeded_bytes": report.seeded_bytes, "deleted": report.deleted}
    if wire is not None:
        summary.update(wire_bytes_received=wire.get("bytes_received", 0), wire_bytes_sent=wire.get("bytes_sent", 0))
    if seeds is not None:
        summary.update(chunks_fetched=seeds.chunks_fetched, chunks_seeded=seeds.chunks_seeded,
                       bytes_seeded=seeds.bytes_seeded, scanned_files=seeds.files_scanned,
                       scanned_bytes=seeds.bytes_scanned)
    lines = [f"restored snapshot {snap.short_id} ({printable(snap.source)} #{snap.generation}) to "
             f"{printable(args.target)}: {report.files} files, {report.dirs} dirs, {report.symlinks} symlinks, "
             f"{human_bytes(report.bytes)}"]
    if seeds is not None:
        lines.append(f"  delta: {report.kept} files unchanged and kept; {seeds.chunks_seeded} chunks taken from the "
                     f"files already there ({human_bytes(report.seeded_bytes)}), {seeds.chunks_fetched} fetched "
                     f"({human_bytes(report.fetched_bytes)})"
                     + (f"; {human_bytes(wire.get('bytes_received', 0))} received from {printable(args.repo)}"
                        if wire is not None else ""))
    if args.delete:
        lines.append(f"  deleted {report.deleted} entries the snapshot does not have")
    lines += [f"  refused: {printable(p)}: {printable(m)}" for p, m in report.refused]
    lines += [f"  error: {printable(p)}: {printable(m)}" for p, m in report.errors]
    lines += [f"  warning: {printable(p)}: {printable(m)}" for p, m in report.warnings]
    emit(args, summary, lines)
    audited = audit(args, {"event": "restore", "repository": repo.id, "snapshot": snap.id, "source": snap.source,
                           "generation": snap.generation, "root_tree": snap.tree.hex(), "path": subpath or "",
                           "target": os.path.abspath(args.target), "files": report.files, "bytes": report.bytes,
                           "errors": len(report.errors) + len(report.refused), "deleted": report.deleted})
    if report.errors or report.refused:
        if args.quiet or args.json:
            first = (report.refused + report.errors)[0]
            print(f"replicator: error: could not restore {printable(first[0])}: {printable(first[1])}",
                  file=sys.stderr)
        integrity = any("integrity" in m for _p, m in report.errors)
        return C.EXIT_INTEGRITY if integrity else C.EXIT_WARNING
    return C.EXIT_OK if audited and not damaged else C.EXIT_WARNING

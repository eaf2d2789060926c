"""replicator restore REPO TARGET [--snapshot ID] [--path SUBPATH]"""
from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator

from replicator import constants as C
from replicator.cli.common import add_audit_option, audit, emit, human_bytes, progress_bar, read_passphrase
from replicator.errors import UsageError
from replicator.format.entry import Entry
from replicator.repo.repository import Repository


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("restore", help="write a snapshot (or part of it) to TARGET", description=
                       "Restore a snapshot into TARGET.  Each file is written to a temporary name and renamed "
                       "into place; metadata is restored; entries whose path would land outside TARGET are "
                       "refused and named.  Existing files at the same paths are replaced.")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--snapshot", metavar="ID", help="snapshot id or unique prefix (default: the latest)")
    p.add_argument("--source", metavar="NAME", help="with no --snapshot: the latest snapshot of this source")
    p.add_argument("--path", metavar="SUBPATH", help="restore only this file or directory (path inside the snapshot)")
    add_audit_option(p)
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
    from replicator.restore.writer import restore

    subpath = (args.path or "").strip("/") or None
    with Repository.open(args.repo, read_passphrase(args)) as repo:
        snap = repo.find_snapshot(args.snapshot, args.source)
        wanted = list(select(repo.walk_tree(snap.tree), subpath))
        if subpath and not wanted:
            raise UsageError(f"snapshot {snap.short_id} has no path {subpath!r}")
        total = sum(e.size for e in wanted if not e.link_to)

        def read_file(entry: Entry) -> Iterator[bytes]:
            for chunk_id in entry.chunks:
                yield repo.read_blob(chunk_id)

        with progress_bar(args, "restore", total) as progress:
            report = restore(args.target, wanted, read_file, on_progress=progress, fsync_each=False)
    summary = {"snapshot": snap.id, "target": args.target, "files": report.files, "dirs": report.dirs,
               "symlinks": report.symlinks, "hardlinks": report.hardlinks, "bytes": report.bytes,
               "errors": [{"path": p, "message": m} for p, m in report.errors],
               "refused": [{"path": p, "message": m} for p, m in report.refused],
               "warnings": [{"path": p, "message": m} for p, m in report.warnings]}
    lines = [f"restored snapshot {snap.short_id} ({snap.source} #{snap.generation}) to {args.target}: "
             f"{report.files} files, {report.dirs} dirs, {report.symlinks} symlinks, {human_bytes(report.bytes)}"]
    lines += [f"  refused: {p}: {m}" for p, m in report.refused]
    lines += [f"  error: {p}: {m}" for p, m in report.errors]
    lines += [f"  warning: {p}: {m}" for p, m in report.warnings]
    emit(args, summary, lines)
    audited = audit(args, {"event": "restore", "repository": repo.id, "snapshot": snap.id, "source": snap.source,
                           "generation": snap.generation, "root_tree": snap.tree.hex(), "path": subpath or "",
                           "target": os.path.abspath(args.target), "files": report.files, "bytes": report.bytes,
                           "errors": len(report.errors) + len(report.refused)})
    if report.errors or report.refused:
        if args.quiet or args.json:
            first = (report.refused + report.errors)[0]
            print(f"replicator: error: could not restore {first[0]}: {first[1]}", file=sys.stderr)
        integrity = any("integrity" in m for _p, m in report.errors)
        return C.EXIT_INTEGRITY if integrity else C.EXIT_WARNING
    return C.EXIT_OK if audited else C.EXIT_WARNING

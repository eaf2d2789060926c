"""replicator verify REPO [--data]"""
from __future__ import annotations

import sys

from replicator import constants as C
from replicator.cli.common import emit, human_bytes, progress_bar, read_passphrase
from replicator.repo.repository import Repository
from replicator.repo.verify import verify


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("verify", help="check snapshots, signatures and chunks", description=
                       "Check every snapshot's signature, every tree, and that every referenced chunk exists.  "
                       "With --data, also read every pack, check its checksum, decrypt and re-hash every chunk.  "
                       "Damage is reported with the snapshots and files it affects; exit code 5.")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("--data", action="store_true", help="read and check every byte of every pack")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    with Repository.open(args.repo, read_passphrase(args)) as repo:
        total = sum(repo.index.packs().values()) if args.data else None
        with progress_bar(args, "verify", total) as progress:
            report = verify(repo, data=args.data, progress=progress)
    what = "structure and data" if args.data else "structure (use --data to read every byte)"
    lines = [f"checked {what}: {report.snapshots} snapshots, {report.trees} trees, {report.files} files, "
             f"{report.chunks_referenced} chunk references"]
    if args.data:
        lines.append(f"  {report.packs_checked} packs, {report.blobs_checked} blobs, {human_bytes(report.bytes_checked)} read")
    lines += [f"  damaged: {p}" for p in report.problems]
    lines.append("no problems found" if report.ok else f"{len(report.problems)} problems found")
    emit(args, report.as_dict(), lines)
    if not report.ok:
        if args.quiet or args.json:
            print(f"replicator: error: {len(report.problems)} integrity problems; first: {report.problems[0]}",
                  file=sys.stderr)
        return C.EXIT_INTEGRITY
    return 0

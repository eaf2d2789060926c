"""replicator find REPO PATTERN [--source NAME] [--snapshot ID]"""
from __future__ import annotations

import json
import sys

from replicator import constants as C
from replicator.cli.common import add_ssh_options, open_repository, printable, warn_damaged
from replicator.cli.ls_cmd import row
from replicator.errors import UsageError
from replicator.repo.browse import find, matcher
from replicator.times import shown_ns


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("find", help="find files by name across snapshots", description=
                       "Search every snapshot (each source's newest generation first) for entries whose name "
                       "matches the glob PATTERN ('*.dcm', 'IMG_00??'; case-sensitive), or whose whole path from "
                       "the snapshot root does when PATTERN holds a '/' ('scans/2024/*'; '*' also matches '/'), and "
                       "print snapshot id, snapshot time and path.  Each version of a path is listed once, under "
                       "the newest snapshot that holds it; subtrees already searched are skipped by their merkle "
                       "ids, so a long history costs little more than its changes.  Names are shown escaped "
                       "(\\x1b); --json gives them exactly.")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("pattern", metavar="PATTERN", help="glob on names, or on paths when it holds a '/' (quote it)")
    p.add_argument("--source", metavar="NAME", help="search only the snapshots of this source")
    p.add_argument("--snapshot", metavar="ID", help="search only this snapshot (id or unique prefix)")
    add_ssh_options(p, "remote (REPO = ssh://USER@HOST:PORT/NAME: read the other site's repository)")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    matcher(args.pattern)  # an empty pattern is refused before the passphrase is asked for
    out = sys.stdout
    with open_repository(args) as repo:
        listing = repo.read_snapshots()
        if args.snapshot:
            snaps = [repo.find_snapshot(args.snapshot, listing=listing)]
            if args.source is not None and snaps[0].source != args.source:
                raise UsageError(f"snapshot {snaps[0].short_id} is of source {printable(snaps[0].source)!r}, "
                                 f"not {printable(args.source)!r}")
        else:
            snaps = [s for s in listing.snapshots if args.source is None or s.source == args.source]
            if args.source is not None and not snaps:
                repo.find_snapshot(None, args.source, listing=listing)  # names the sources there are
            snaps.sort(key=lambda s: (s.source, -s.generation, s.id))  # newest generation first
        damaged = warn_damaged(listing.damaged)
        matches = find(repo, snaps, args.pattern)
        if args.json:  # streamed, as ls -R --json
            out.write(json.dumps({"pattern": args.pattern, "snapshots_searched": len(snaps),
                                  "damaged_snapshots": damaged}, sort_keys=True)[:-1] + ', "matches": [')
            for n, m in enumerate(matches):
                s = m.snapshot
                out.write((", " if n else "") + json.dumps({
                    "snapshot": s.id, "source": s.source, "generation": s.generation, "time": shown_ns(s.time_ns),
                    **row(m.entry)}, sort_keys=True))
            out.write("]}\n")
        else:
            for m in matches:
                if not args.quiet:
                    out.write(f"{m.snapshot.short_id}  {shown_ns(m.snapshot.time_ns)}  {printable(m.entry.path)}\n")
    return C.EXIT_WARNING if damaged else C.EXIT_OK

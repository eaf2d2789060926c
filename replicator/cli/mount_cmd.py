"""replicator mount REPO MOUNTPOINT"""
from __future__ import annotations

import sys

from replicator import constants as C
from replicator.cli.common import add_ssh_options, open_repository, printable, warn, warn_damaged
from replicator.errors import UsageError


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("mount", help="browse every snapshot as a read-only filesystem (FUSE)", description=
                       "Mount the repository read-only at MOUNTPOINT (an existing directory) and serve it until "
                       "it is unmounted: Ctrl-C, SIGTERM, or 'umount MOUNTPOINT' ('fusermount -u' as a user).  "
                       "Layout: /SOURCE/GENERATION_TIME_ID/... for each snapshot (generation zero-padded, so they "
                       "sort in generation order; time in RFC 3339) and /SOURCE/latest, a symlink to the highest "
                       "generation.  A '/' in a source name shows as %2F, a '%' as %25.  Files are read on "
                       "demand, only the chunks a read needs (the last ones kept in memory); the snapshots are "
                       "those present at mount time.  A damaged or missing chunk is an I/O error for that read, "
                       "named at unmount (exit code 1).  Needs libfuse and the optional FUSE binding: "
                       "pip install 'replicator[mount]'.")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing directory (empty)")
    add_ssh_options(p, "remote (REPO = ssh://USER@HOST:PORT/NAME: read the other site's repository)")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from replicator.restore.fusefs import SnapshotFS, check_mountpoint, load_fuse, mount

    if args.json:
        raise UsageError("mount serves a filesystem until unmounted: --json does not apply")
    check_mountpoint(args.mountpoint)  # a wrong mountpoint is named whatever this machine has installed
    load_fuse()  # a missing binding or libfuse is named before the passphrase is asked for
    with open_repository(args) as repo:
        listing = repo.read_snapshots()
        damaged = warn_damaged(listing.damaged)
        sources = listing.sources()

        def ready() -> None:
            if not args.quiet:
                print(f"mounted {printable(args.repo)} at {printable(args.mountpoint)}: {len(listing.snapshots)} "
                      f"snapshots of {len(sources)} sources; unmount with Ctrl-C, kill, or "
                      f"'umount {printable(args.mountpoint)}'", flush=True)

        fs = SnapshotFS(repo, listing.snapshots, on_ready=ready)
        mount(fs, args.mountpoint)
    for problem in fs.problems:
        warn(f"read error (answered EIO): {problem}")
    if not args.quiet:
        print(f"unmounted {printable(args.mountpoint)}")
    sys.stdout.flush()
    return C.EXIT_WARNING if damaged or fs.problems else C.EXIT_OK

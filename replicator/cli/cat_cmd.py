"""replicator cat REPO SNAPSHOT PATH [--source NAME]"""
from __future__ import annotations

import sys

from replicator import constants as C
from replicator.cli.common import add_ssh_options, open_repository, printable
from replicator.cli.ls_cmd import SNAPSHOT_HELP, SOURCE_HELP, open_snapshot
from replicator.errors import UsageError
from replicator.format.entry import KIND_DIR, KIND_SYMLINK
from replicator.repo.browse import file_chunks, normalize


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("cat", help="write a file of a snapshot to stdout", description=
                       "Write the bytes of one file of a snapshot to standard output, chunk by chunk as they are "
                       "read and verified (a file is never held whole in memory), e.g. "
                       "'replicator cat REPO latest lab/results.csv | less'.  A directory, a symlink or a path "
                       "the snapshot does not have is a usage error (exit code 2); a missing or damaged chunk "
                       "an integrity error (5), after the bytes before it were written.")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("snapshot", metavar="SNAPSHOT", help=SNAPSHOT_HELP)
    p.add_argument("path", metavar="PATH", help="the file, by its path in the snapshot")
    p.add_argument("--source", metavar="NAME", help=SOURCE_HELP)
    add_ssh_options(p, "remote (REPO = ssh://USER@HOST:PORT/NAME: read the other site's repository)")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.json:
        raise UsageError("cat writes the file's own bytes: --json does not apply (use 'replicator ls --json')")
    path = normalize(args.path)
    with open_repository(args) as repo:
        browser, damaged = open_snapshot(args, repo)
        entry = browser.find(path).entry
        where = f"{printable(path or '/')} in snapshot {browser.snap.short_id}"
        if entry.kind == KIND_DIR:
            raise UsageError(f"cat: {where} is a directory (list it with 'replicator ls')")
        if entry.kind == KIND_SYMLINK:
            raise UsageError(f"cat: {where} is a symlink to {printable(entry.target)!s} (cat its target)")
        out = sys.stdout.buffer
        for chunk in file_chunks(repo, entry):
            out.write(chunk)
        out.flush()
    return C.EXIT_WARNING if damaged else C.EXIT_OK

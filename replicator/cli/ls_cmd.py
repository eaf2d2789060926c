"""replicator ls REPO SNAPSHOT [PATH] [-R] [--source NAME]"""
from __future__ import annotations

import json
import os
import stat
import sys

from replicator import constants as C
from replicator.cli.common import add_ssh_options, open_repository, printable, warn_damaged
from replicator.cli.restore_cmd import choose_snapshot
from replicator.format.entry import KIND_DIR, KIND_FILE, KIND_SYMLINK, Entry
from replicator.repo.browse import Browser, normalize
from replicator.times import shown_ns

LATEST = "latest"
_KIND_BITS = {KIND_FILE: stat.S_IFREG, KIND_DIR: stat.S_IFDIR, KIND_SYMLINK: stat.S_IFLNK}
SNAPSHOT_HELP = "snapshot id or unique prefix, or 'latest' (the highest generation of the source)"
SOURCE_HELP = "with 'latest': the source (needed when the repository holds several)"


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("ls", help="list a directory (or a file) of a snapshot", description=
                       "List the entries of a directory of a snapshot, or one file, without restoring anything, "
                       "like 'ls -l': mode, owner uid/gid, size, modification time (RFC 3339, UTC), name, and "
                       "'-> target' for symlinks.  With -R, everything below, each by its path from the snapshot "
                       "root.  Only the directories listed are read.  Control characters and bytes that are not "
                       "UTF-8 in names are shown escaped (\\x1b); --json gives them exactly.")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("snapshot", metavar="SNAPSHOT", help=SNAPSHOT_HELP)
    p.add_argument("path", metavar="PATH", nargs="?", default="", help="directory or file in the snapshot (default: /)")
    p.add_argument("-R", "--recursive", action="store_true", help="list everything below PATH")
    p.add_argument("--source", metavar="NAME", help=SOURCE_HELP)
    add_ssh_options(p, "remote (REPO = ssh://USER@HOST:PORT/NAME: read the other site's repository)")
    add_common(p)
    p.set_defaults(func=run)




def snapshot_ref(text: str) -> str | None:
    """SNAPSHOT as find_snapshot takes it: None for 'latest'."""
    return None if text == LATEST else text


def open_snapshot(args, repo):
    """(browser, damaged rows) of SNAPSHOT chosen as restore chooses (restore_cmd.choose_snapshot)."""
    listing = repo.read_snapshots()
    snap = choose_snapshot(args, repo, listing, snapshot_ref(args.snapshot), by_id="a snapshot id")
    return Browser(repo, snap), warn_damaged(listing.damaged)


def size(entry: Entry) -> int:
    """What ``ls -l`` shows: a symlink's size is the length of its target."""
    return len(os.fsencode(entry.target)) if entry.kind == KIND_SYMLINK else entry.size


def row(entry: Entry) -> dict:
    """An entry for --json: exact names, the mode as a number and as ls shows it."""
    out = {"path": entry.path, "name": entry.name, "kind": entry.kind, "mode": entry.mode,
           "mode_string": stat.filemode(_KIND_BITS[entry.kind] | entry.mode), "uid": entry.uid, "gid": entry.gid,
           "size": size(entry), "mtime": shown_ns(entry.mtime_ns), "mtime_ns": entry.mtime_ns,
           "xattrs": [name for name, _v in entry.xattrs]}
    if entry.kind == KIND_SYMLINK:
        out["target"] = entry.target
    if entry.link_to:
        out["hardlink_to"] = entry.link_to
    return out


def line(entry: Entry, name: str) -> str:
    """One ``ls -l`` line (names escaped)."""
    mode = stat.filemode(_KIND_BITS[entry.kind] | entry.mode)
    tail = f" -> {printable(entry.target)}" if entry.kind == KIND_SYMLINK else ""
    owner = f"{entry.uid}/{entry.gid}"
    return f"{mode} {owner:<11} {size(entry):>12} {shown_ns(entry.mtime_ns)} {printable(name)}{tail}"


def run(args) -> int:
    path = normalize(args.path)
    out = sys.stdout
    with open_repository(args) as repo:
        browser, damaged = open_snapshot(args, repo)
        item = browser.find(path)
        if item.entry.kind != KIND_DIR:
            listed = iter([(item.entry, item.entry.path)])
        elif args.recursive:
            listed = ((it.entry, it.entry.path) for it in browser.walk(item))
        else:
            listed = ((it.entry, it.entry.name) for it in browser.listdir(item))
        snap = browser.snap
        if args.json:  # streamed: a recursive listing of a large tree is never held whole
            head = {"snapshot": snap.id, "source": snap.source, "generation": snap.generation, "path": path,
                    "damaged_snapshots": damaged}
            out.write(json.dumps(head, sort_keys=True)[:-1] + ', "entries": [')
            for n, (entry, _name) in enumerate(listed):
                out.write((", " if n else "") + json.dumps(row(entry), sort_keys=True))
            out.write("]}\n")
        elif not args.quiet:
            for entry, name in listed:
                out.write(line(entry, name) + "\n")
    return C.EXIT_WARNING if damaged else C.EXIT_OK

"""replicator sync SRC REPO"""
from __future__ import annotations

import os
import socket
import sys

from replicator import constants as C
from replicator.cli.common import (
    add_ssh_options,
    cache_dir,
    emit,
    human_bytes,
    peak_rss_summary,
    printable,
    read_passphrase,
    reset_peak_rss_after_unlock,
)
from replicator.cli.progress import sync_progress
from replicator.errors import UsageError
from replicator.sync.engine import DESTINATION, SyncRun
from replicator.sync.options import SyncOptions


def register(sub) -> None:
    p = sub.add_parser("sync", help="store SRC as a new snapshot in REPO", description=
                       "Walk SRC and commit it as a new snapshot.  Only chunks the repository lacks are stored; "
                       "unchanged files are not read again.  Files that cannot be read are reported and skipped "
                       "(exit code 1); the snapshot is committed last, so an interrupted sync loses nothing.")
    add_sync_arguments(p)
    p.add_argument("--always-commit", action="store_true",
                   help="commit a new snapshot even when nothing changed since this site's last one (by default "
                        "such a sync commits nothing and says 'no change since snapshot ID', exit code 0)")
    p.add_argument("--dry-run", action="store_true",
                   help="walk and chunk, say what would be read and sent, write nothing anywhere (exit code 0)")
    p.set_defaults(func=run)


def add_sync_arguments(p, *, name_required: bool = False) -> None:
    """The arguments of ``sync`` (also those of ``promote``, which is a sync that takes a source over)."""
    from replicator.cli import add_common

    p.add_argument("src", metavar="SRC")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("--name", required=name_required,
                   help="source name (default: HOSTNAME:SRC; give the same name at both sites, e.g. 'hospitals')")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="skip paths matching GLOB (relative path or base name); repeatable")
    p.add_argument("--exclude-file", action="append", default=[], metavar="FILE",
                   help="skip paths matching the globs in FILE (one a line; '#' comments); repeatable")
    p.add_argument("--exclude-if-present", action="append", default=[], metavar="NAME",
                   help="skip each directory holding NAME, with its contents (CACHEDIR.TAG: only with its "
                        "signature); repeatable")
    p.add_argument("-x", "--one-file-system", action="store_true",
                   help="do not enter other filesystems below SRC (mount points are recorded empty)")
    p.add_argument("-v", "--verbose", action="store_true", help="also name each path left out")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="state cache directory (default $REPLICATOR_CACHE_DIR or ~/.cache/replicator)")
    p.add_argument("--no-cache", action="store_true", help="read every file again (ignore the state cache)")
    p.add_argument("--workers", type=int, metavar="N", help="hashing/compression threads (default: CPU count - 1, at least 1)")
    guard = p.add_argument_group(
        "a source that vanished (docs/OPERATIONS.md)",
        "A source that is empty, on another filesystem than at its last snapshot (or that stopped or started "
        "being a mount point), or that lost more than a share of its files is not committed (exit code 9): "
        "an unmounted volume is not a deletion.")
    guard.add_argument("--confirm-source", action="store_true",
                       help="commit the source as it is now all the same (after checking it is right)")
    guard.add_argument("--max-shrink", metavar="SHARE", default=str(C.DEFAULT_MAX_SHRINK),
                       help=f"refuse when more than this share of the files went since the last snapshot, "
                            f"0 to 1 (default {C.DEFAULT_MAX_SHRINK:g}; 1: only an empty source is refused)")
    guard.add_argument("--reset-lineage", action="store_true",
                       help="accept the destination's history of this source as it is, although it is not what "
                            "this site last committed there (after a restore or failover there; see exit code 8)")
    guard.add_argument("--require-marker", metavar="NAME",
                       help="sync only if NAME (a file or directory, e.g. .stfolder) exists in SRC")
    ssh = add_ssh_options(p, "remote (REPO = ssh://USER@HOST:PORT/NAME, served by 'replicator serve')")
    ssh.add_argument("--streams", type=int, default=4, metavar="N",
                     help=f"packs in flight before waiting for acknowledgements, 1 to {C.MAX_STREAMS} (default 4)")
    ssh.add_argument("--bwlimit", metavar="RATE", help="cap upload bytes per second, e.g. 20M (k, M, G = 1024^n)")
    add_common(p)


def run(args) -> int:
    src = os.path.abspath(args.src)
    if not os.path.isdir(src):
        raise UsageError(f"source {args.src} is not a directory")
    name = args.name or f"{socket.gethostname()}:{src}"
    if not 1 <= args.streams <= C.MAX_STREAMS:
        raise UsageError(f"--streams must be 1 to {C.MAX_STREAMS}, not {args.streams}")
    try:
        max_shrink = float(args.max_shrink)
    except ValueError:
        raise UsageError(f"--max-shrink must be a share from 0 to 1 (0.5 = 50%), not {args.max_shrink!r}") from None
    dry_run = getattr(args, "dry_run", False)  # promote has no --dry-run
    if dry_run and args.accept_host_key:
        raise UsageError("--dry-run writes nothing, not even a host key: pin it first (a sync with "
                         "--accept-host-key), then run the dry run")
    options = SyncOptions(name, excludes=_excludes(args), use_state=not args.no_cache, cache_dir=cache_dir(args),
                          workers=args.workers, max_shrink=max_shrink, require_marker=args.require_marker,
                          confirm_source=args.confirm_source, exclude_if_present=args.exclude_if_present,
                          one_file_system=args.one_file_system, dry_run=dry_run,
                          always_commit=getattr(args, "always_commit", True))  # promote always commits
    passphrase = read_passphrase(args)
    with (_open_dry_run(args, passphrase) if dry_run else _open_destination(args, passphrase)) as repo:
        unlock_peak = reset_peak_rss_after_unlock()
        if args.reset_lineage and repo.lineage is not None:
            repo.lineage.forget(name)
        with sync_progress(args, src, repo, options) as progress:
            report = SyncRun(src, repo, options, progress=progress).run()
        if dry_run:
            return _dry_run_summary(args, name, report)
        snap, stats = report.snapshot, report.destination_stats
        summary = report.as_dict()
        summary.update(source=name, bytes_stored=stats["bytes_written"], packs_written=stats["packs_written"])
        if "bytes_sent" in stats:
            summary.update(bytes_sent=stats["bytes_sent"], bytes_received=stats["bytes_received"],
                           refs_sent=stats.get("refs_sent", 0))
        summary["repository_warnings"] = [m for p, m in report.warnings if p == DESTINATION]  # also in "warnings"
        summary.update(peak_rss_summary(unlock_peak))
        assert snap is not None  # a run that returns has committed
        head = (f"snapshot {snap.short_id} of {name} (generation {snap.generation}) committed" if report.committed
                else f"no change since snapshot {snap.short_id} of {name} (generation {snap.generation}): "
                     f"nothing committed")
        lines = [
            head,
            f"  {report.files} files, {report.dirs} dirs, {report.symlinks} symlinks, {human_bytes(report.bytes_total)}",
            f"  read {human_bytes(report.bytes_read)} ({report.files_unchanged} files unchanged, not read); "
            f"{report.chunks_new} new of {report.chunks_total} chunks; "
            f"stored {human_bytes(stats['bytes_written'])} in {stats['packs_written']} packs",
        ]
        lines.extend(_left_out_lines(report, args.verbose))
        lines.extend(f"  warning: {_warning(path, message)}" for path, message in report.warnings)
        emit(args, summary, lines)
        if args.quiet:  # the summary is silenced, the warnings must not be
            for path, message in report.warnings:
                print(f"replicator: warning: {_warning(path, message)}", file=sys.stderr)
    return C.EXIT_WARNING if report.warnings else C.EXIT_OK


def _warning(path: str, message: str) -> str:
    """``PATH: MESSAGE`` on one line; PATH is ``(destination)`` for the destination's own warnings."""
    return " ".join(f"{path}: {message}".splitlines())


def _excludes(args) -> tuple[str, ...]:
    """--exclude globs, then those of each --exclude-file.  :raises UsageError: a file cannot be read."""
    from replicator.app.config import read_exclude_file

    return (*args.exclude, *(p for path in args.exclude_file for p in read_exclude_file(path)))


def _left_out_lines(report, verbose: bool) -> list[str]:
    """What the selection left out: one line of counts, and with -v each path named."""
    counts = [(report.excluded, "excluded by pattern", "excluded by pattern"),
              (report.excluded_tagged, "tagged directory", "tagged directories"),
              (report.mounts_not_crossed, "mount point not crossed (recorded empty)",
               "mount points not crossed (recorded empty)")]
    parts = [f"{n} {one if n == 1 else many}" for n, one, many in counts if n]
    if not parts:
        return []
    lines = ["  left out: " + ", ".join(parts)]
    if verbose:
        lines.extend(f"  left out {printable(path)}: {printable(why)}" for path, why in report.excluded_paths)
        more = sum(n for n, _one, _many in counts) - len(report.excluded_paths)
        if more > 0:
            lines.append(f"  ... and {more} more left out (not named)")
    return lines


def _dry_run_summary(args, name: str, report) -> int:
    """Print what the sync would do; exit code 0 (the warnings are printed, as a sync prints them)."""
    stats = report.destination_stats
    summary = report.as_dict()
    summary.update(source=name, repository_warnings=[m for p, m in report.warnings if p == DESTINATION])
    if "bytes_sent" in stats:
        summary.update(bytes_sent=stats["bytes_sent"], bytes_received=stats["bytes_received"])
    links = f", {report.hardlinks} hard links" if report.hardlinks else ""
    lines = [
        f"dry run of {name} to {args.repo}: nothing written, nothing committed",
        f"  {report.files} files ({report.files_new} new, {report.files_changed} changed, "
        f"{report.files_unchanged} unchanged{links}), {report.dirs} dirs, {report.symlinks} symlinks, "
        f"{human_bytes(report.bytes_total)}",
        f"  would read {human_bytes(report.bytes_read)} and send {report.chunks_new} new of {report.chunks_total} "
        f"chunks ({human_bytes(report.bytes_new)} before compression)",
        *_left_out_lines(report, args.verbose),
        *(f"  warning: {_warning(path, message)}" for path, message in report.warnings),
    ]
    emit(args, summary, lines)
    if args.quiet:
        for path, message in report.warnings:
            print(f"replicator: warning: {_warning(path, message)}", file=sys.stderr)
    return C.EXIT_OK


def _open_dry_run(args, passphrase: bytes):
    from replicator.app.destinations import open_dry_run

    return open_dry_run(args.repo, passphrase, cache_dir=cache_dir(args), identity=args.identity,
                        known_hosts=args.known_hosts)


def _open_destination(args, passphrase: bytes):
    """A local Repository, or for ssh://USER@HOST:PORT/NAME a transport.client.RemoteDestination."""
    from replicator.app.destinations import open_destination
    from replicator.transport.url import parse_rate

    return open_destination(args.repo, passphrase, cache_dir=cache_dir(args), identity=args.identity,
                            known_hosts=args.known_hosts, accept_host_key=args.accept_host_key,
                            streams=args.streams, bwlimit=parse_rate(args.bwlimit) if args.bwlimit else None)

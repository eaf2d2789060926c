"""replicator verify REPO [--data] [--read-data-subset N|P%]"""
from __future__ import annotations

import sys

from replicator import constants as C
from replicator.cli.common import add_ssh_options, emit, human_bytes, open_repository, printable, progress_bar, read_passphrase
from replicator.errors import UsageError
from replicator.repo.keyring import Keyring
from replicator.repo.local_sink import LocalSink, quarantine_damaged
from replicator.repo.subset import parse_subset, verify_subset
from replicator.repo.verify import verify
from replicator.transport.url import is_remote, parse_url


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("verify", help="check snapshots, signatures and chunks", description=
                       "Check every snapshot's signature, every tree, and that every referenced chunk exists.  "
                       "With --data, also read every pack, check its checksum, decrypt and re-hash every chunk.  "
                       "Damage is reported with the snapshots and files it affects; exit code 5.  So are two "
                       "snapshots of one source with the same generation, and a snapshot whose parent is not the "
                       "generation before it (a fork); generations missing because forget removed them are "
                       "listed as notes, not damage.  A pack found damaged is quarantined: the next sync sends its "
                       "chunks again.  REPO may be ssh://USER@HOST:PORT/NAME: the primary checks its secondary "
                       "through the protocol, with the key (structure, --data, or a sample with --read-data-subset).")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("--data", action="store_true", help="read and check every byte of every pack")
    p.add_argument("--read-data-subset", metavar="N|P%",
                   help="read N packs, or P percent of them, chosen at random, and check their bytes, tables, "
                        "every chunk's keyed id, and that the id list the repository deduplicates with is exact")
    add_ssh_options(p, "remote (REPO = ssh://USER@HOST:PORT/NAME: the primary checks its secondary)")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    subset = None
    if args.read_data_subset is not None:
        try:
            subset = parse_subset(args.read_data_subset)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    remote = is_remote(args.repo)
    if remote and subset is not None and not args.data:
        return _remote_subset(args, subset)
    with open_repository(args) as repo:
        total = sum(repo.index.packs().values()) if args.data else None
        with progress_bar(args, "verify", total) as progress:
            report = verify(repo, data=args.data, progress=progress)
        sample = None
        if subset is not None and not remote:
            with LocalSink.open(repo.location, writable=False, untrusted=True) as sink:
                sample = verify_subset(repo.keyring, sink, share=subset[0], count=subset[1])
            report.problems.extend(sample.problems)
        location = repo.location
    if remote:
        if report.damaged_packs:
            report.notes.append("damaged packs at the other site are quarantined there by 'replicator serve "
                                "--verify-only' (or a verify run at that site)")
    else:
        report.quarantined, note = quarantine_damaged(location, report.damaged_packs, "verify --data")
        if note:
            report.notes.append(note)
    what = "structure and data" if args.data else "structure (use --data to read every byte)"
    lines = [f"checked {what}: {report.snapshots} snapshots, {report.trees} trees, {report.files} files, "
             f"{report.chunks_referenced} chunk references"]
    if args.data:
        lines.append(f"  {report.packs_checked} packs, {report.blobs_checked} blobs, {human_bytes(report.bytes_checked)} read")
    if sample is not None:
        lines.append(f"  sample: {sample.packs_checked} of {sample.packs_total} packs, {sample.blobs_checked} blobs, "
                     f"{human_bytes(sample.bytes_checked)} read")
    lines += [f"  damaged: {printable(p)}" for p in report.problems]
    lines += [f"  quarantined pack {d[:16]}: its chunks are sent again by the next sync" for d in report.quarantined]
    lines += [f"  note: {printable(n)}" for n in report.notes]
    lines.append("no problems found" if report.ok else f"{len(report.problems)} problems found")
    summary = report.as_dict()
    if sample is not None:
        summary["sample"] = sample.as_dict()
    emit(args, summary, lines)
    return _exit(args, report.problems)


def _remote_subset(args, subset: tuple[float | None, int | None]) -> int:
    """The primary spot-checks its secondary through the protocol, with the key (read permission suffices)."""
    from replicator.transport.client import RemoteSink  # asyncssh only when a remote is asked for
    from replicator.transport.protocol import MODE_READ

    if not args.identity or not args.known_hosts:
        raise UsageError("an ssh:// repository needs --identity FILE and --known-hosts FILE")
    passphrase = read_passphrase(args)
    with RemoteSink(parse_url(args.repo), identity=args.identity, known_hosts=args.known_hosts,
                    mode=MODE_READ) as sink:
        keyring = Keyring.unlock(*sink.describe(), passphrase, sink.location)
        sample = verify_subset(keyring, sink, share=subset[0], count=subset[1])
    lines = [f"checked a sample of {sink.location}: {sample.packs_checked} of {sample.packs_total} packs, "
             f"{sample.blobs_checked} blobs, {human_bytes(sample.bytes_checked)} read"]
    lines += [f"  damaged: {printable(p)}" for p in sample.problems]
    lines.append("no problems found" if sample.ok else f"{len(sample.problems)} problems found")
    emit(args, sample.as_dict(), lines)
    return _exit(args, sample.problems)


def _exit(args, problems: list[str]) -> int:
    if not problems:
        return 0
    if args.quiet or args.json:
        print(f"replicator: error: {len(problems)} integrity problems; first: {printable(problems[0])}",
              file=sys.stderr)
    return C.EXIT_INTEGRITY

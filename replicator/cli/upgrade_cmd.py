"""replicator upgrade REPO"""
from __future__ import annotations

from replicator.cli.common import add_ssh_options, cache_dir, emit, open_repository, read_passphrase
from replicator.repo.upgrade import UpgradeReport
from replicator.transport.url import is_remote


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("upgrade", help="bring a repository written by an older release up to date",
                       description="Add what older releases did not write: an id list per pack (ids/) and the "
                       "references of each snapshot (refs/), read from the encrypted pack tables and trees, and "
                       "the key holder's proof on every id list and snapshot (release 0.3), without which the "
                       "other site refuses nothing forged.  Only adds objects and proofs; safe to interrupt and "
                       "to run again.  Every locked open (a local sync, forget, prune) does the same, and a sync "
                       "to ssh:// signs the id lists there; run this with REPO = ssh://USER@HOST:PORT/NAME to "
                       "sign the snapshots kept at the other site too.")
    p.add_argument("repo", metavar="REPO")
    add_ssh_options(p, "remote (REPO = ssh://USER@HOST:PORT/NAME, served by 'replicator serve')")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if is_remote(args.repo):
        report = _remote(args)
    else:
        with open_repository(args, exclusive=True) as repo:
            report = repo.upgraded or UpgradeReport()
    if report.changed:
        lines = [f"wrote {report.id_lists_written} id lists and {report.refs_written} snapshot refs; signed "
                 f"{report.id_lists_signed} id lists and {report.snapshots_signed} snapshots"]
    else:
        lines = ["repository is up to date"]
    lines += [f"  not upgraded: {p}" for p in report.problems]
    emit(args, report.as_dict(), lines)
    return 1 if report.problems else 0


def _remote(args) -> UpgradeReport:
    """Sign, through the protocol, the id lists and snapshots the other site keeps without proof."""
    from replicator.app.destinations import open_destination
    from replicator.format import layout as L
    from replicator.repo.upgrade import sign_declarations

    with open_destination(args.repo, read_passphrase(args), cache_dir=cache_dir(args), identity=args.identity,
                          known_hosts=args.known_hosts, accept_host_key=args.accept_host_key) as writer:
        report = writer.upgraded or UpgradeReport()
        snapshots = [L.digest_of(n) for n in writer.sink.list(L.SNAPSHOTS)]
        return sign_declarations(writer.keyring, writer.sink, snapshots, report)

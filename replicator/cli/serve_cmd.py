"""replicator serve: the receiving end of SSH replication (docs/PROTOCOL.md).

Three forms:

* ``serve --listen HOST:PORT --repo NAME=PATH ... --host-key FILE --authorized-keys FILE``:
  a built-in SSH server (asyncssh) offering only the ``replicator`` subsystem;
  per-key permissions come from ``replicator-repos="NAME:rw,..."`` in the
  authorized-keys file.
* ``serve --stdio --repo NAME=PATH --allow NAME:rw``: one session on stdin/stdout,
  for an OpenSSH ``ForceCommand`` (or ``command=`` in authorized_keys).
* ``serve --verify-only --repo NAME=PATH``: the checks possible without the passphrase.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from replicator import constants as C
from replicator.cli.common import emit
from replicator.errors import UsageError
from replicator.transport import server as S


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("serve", help="receive replication over SSH (secondary site)", description=
                       "Serve local repositories to replicator senders.  The receiver never needs the passphrase: "
                       "it stores sealed packs and snapshots, checks every pack's checksum and that a snapshot's "
                       "chunks are all present before committing it.")
    p.add_argument("--repo", action="append", default=[], metavar="NAME=PATH", required=True,
                   help="a repository to serve under NAME (repeatable); create it with 'replicator init PATH'")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--listen", metavar="HOST:PORT", help="run the built-in SSH server on HOST:PORT")
    mode.add_argument("--stdio", action="store_true", help="serve one session on stdin/stdout (OpenSSH ForceCommand)")
    mode.add_argument("--verify-only", action="store_true",
                      help="check the repositories without the passphrase (pack checksums, id lists, snapshot refs)")
    p.add_argument("--host-key", metavar="FILE", help="SSH host private key (with --listen)")
    p.add_argument("--authorized-keys", metavar="FILE",
                   help='client public keys, one per line, with replicator-repos="NAME:rw,..." (with --listen)')
    p.add_argument("--allow", action="append", default=[], metavar="NAME:MODE",
                   help="with --stdio: permission of the (already authenticated) peer, MODE r, w or rw; repeatable")
    p.add_argument("--peer-label", metavar="TEXT", default=None,
                   help="with --stdio: how to name the peer in logs (default: $SSH_CLIENT)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_common(p, passphrase=False)
    p.set_defaults(func=run)


def _repos(args) -> dict[str, str]:
    repos: dict[str, str] = {}
    for item in args.repo:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--repo {item!r}: expected NAME=PATH")
        repos[name] = os.path.abspath(path)
    return repos


def _setup_logging(args) -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s replicator serve: %(levelname)s %(message)s")


def run(args) -> int:
    repos = _repos(args)
    if args.verify_only:
        return _verify(args, repos)
    _setup_logging(args)
    if args.stdio:
        try:
            perms = S.parse_permissions(",".join(args.allow))
        except ValueError as exc:
            raise UsageError(f"--allow: {exc}") from None
        label = args.peer_label or f"stdio peer {os.environ.get('SSH_CLIENT', '?').split(' ')[0]}"
        asyncio.run(_stdio(repos, S.Peer(label, perms)))
        return 0
    if not args.host_key or not args.authorized_keys:
        raise UsageError("--listen needs --host-key and --authorized-keys")
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--listen {args.listen!r}: expected HOST:PORT")
    asyncio.run(_listen(host.strip("[]") or "0.0.0.0", int(port), repos, args))
    return 0


async def _listen(host: str, port: int, repos: dict[str, str], args) -> None:
    from replicator.transport import ssh

    async def handler(reader, writer, label: str, perms: dict) -> None:
        await S.serve_session(reader, writer, repos, S.Peer(label, perms))

    acceptor, bound = await ssh.listen(host, port, args.host_key, args.authorized_keys, handler,
                                       S.parse_permissions)
    logging.getLogger("replicator.serve").info("listening on %s:%d, serving %s", host, bound,
                                               ", ".join(f"{n}={p}" for n, p in repos.items()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    acceptor.close()
    await acceptor.wait_closed()


async def _stdio(repos: dict[str, str], peer: S.Peer) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2 ** 27)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout.buffer)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    await S.serve_session(reader, writer, repos, peer)


def _verify(args, repos: dict[str, str]) -> int:
    worst = C.EXIT_OK
    summary = {}
    lines = []
    for name, path in repos.items():
        report = S.verify_without_key(path)
        summary[name] = report.as_dict()
        lines.append(f"{name}: {report.packs} packs (checksums), {report.ids_objects} id lists, "
                     f"{report.snapshots} snapshots, {report.refs_checked} chunk references checked without the key")
        lines += [f"  damaged: {p}" for p in report.problems]
        lines.append("  no problems found" if report.ok else f"  {len(report.problems)} problems found")
        lines += [f"  not checked: {what}" for what in report.not_checked]
        if not report.ok:
            worst = C.EXIT_INTEGRITY
    emit(args, summary, lines)
    if worst and (args.quiet or args.json):
        print("replicator: error: integrity problems found without the key; run 'replicator verify --data' "
              "with the passphrase", file=sys.stderr)
    return worst

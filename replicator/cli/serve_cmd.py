"""replicator serve: the receiving end of SSH replication (docs/PROTOCOL.md).

Three forms:

* ``serve --listen HOST:PORT --repo NAME=PATH ... --host-key FILE --authorized-keys FILE``:
  a built-in SSH server (asyncssh) offering only the ``replicator`` subsystem;
  per-key permissions come from ``replicator-repos="NAME:rw,..."`` in the
  authorized-keys file.
* ``serve --stdio --repo NAME=PATH [--allow NAME:rw]``: one session on stdin/stdout,
  under OpenSSH's sshd: a ``ForceCommand``, ``command=`` in authorized_keys, or a
  ``Subsystem replicator`` line.  Without ``--allow`` the peer may read and write
  every repository on this command line (so a per-key ``command=`` is its rights).
* ``serve --verify-only --repo NAME=PATH``: the checks possible without the passphrase.

Every PATH must be a repository when serve starts (else exit 3 naming it).  Logs
go to stderr in the daemon's formats (app/log.py; ``--log-format json``).  Under
systemd (``Type=notify``), ``--listen`` sends READY=1 once its port is bound,
STATUS= lines, WATCHDOG=1 and STOPPING=1 (app/sdnotify.py).

With ``--mirror NAME=DIR`` (either serving form) the receiver also keeps DIR
identical to the latest snapshot of repository NAME (restore/mirror.py), updated
in a background thread after each commit.  That needs the passphrase
(``--passphrase-file``): the secondary then holds plaintext (docs/SECURITY.md).
A DIR that is not empty and not already a mirror is refused (one log line; serving
goes on) unless ``--mirror-adopt NAME``; files changed or created in DIR by someone
else are kept and logged, until ``--mirror-discard-local NAME``; SIGTERM stops a
running update between two files.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import stat
import sys

from replicator import constants as C
from replicator.app.config import LOG_FORMATS
from replicator.app.log import setup_logging
from replicator.app.sdnotify import Notifier
from replicator.cli.common import emit
from replicator.errors import AddressInUse, RepositoryError, UsageError
from replicator.repo.keyless import verify_without_key
from replicator.store.location import is_object_url
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
                   help="with --stdio: permission of the (already authenticated) peer, MODE r, w or rw; repeatable "
                        "(default: rw on every --repo of this command line)")
    p.add_argument("--peer-label", metavar="TEXT", default=None,
                   help="with --stdio: how to name the peer in logs (default: $SSH_CLIENT)")
    p.add_argument("--mirror", action="append", default=[], metavar="NAME=DIR",
                   help="keep DIR identical to the latest snapshot of repository NAME, updated after each commit "
                        "(needs the passphrase: DIR holds plaintext); repeatable")
    p.add_argument("--mirror-source", action="append", default=[], metavar="NAME=SOURCE",
                   help="which source of repository NAME its mirror follows (default: the source it already "
                        "mirrors, else the newest snapshot's)")
    p.add_argument("--mirror-adopt", action="append", default=[], metavar="NAME",
                   help="let the mirror of repository NAME take over a non-empty directory that is not a mirror yet "
                        "(an earlier copy: what differs from the snapshot is replaced or removed); repeatable")
    p.add_argument("--mirror-discard-local", action="append", default=[], metavar="NAME",
                   help="at the first update of the mirror of repository NAME, overwrite and remove the local "
                        "changes it kept (the directory then equals the snapshot); repeatable")
    p.add_argument("--passphrase-file", metavar="FILE",
                   help="with --mirror: read the passphrase from FILE (else $REPLICATOR_PASSPHRASE)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                   help="log lines on stderr as text or JSON, as the daemon's (default text)")
    add_common(p, passphrase=False)
    p.set_defaults(func=run)


def _repos(args) -> dict[str, str]:
    repos: dict[str, str] = {}
    for item in args.repo:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--repo {item!r}: expected NAME=PATH")
        repos[name] = path if is_object_url(path) else os.path.abspath(path)
    return repos


def _check_repos(repos: dict[str, str]) -> None:
    """Refuse to start with a --repo that is not a repository (it would fail every session, silently).

    :raises RepositoryError: naming the first such --repo (exit 3)."""
    from replicator.repo.local_sink import open_storage

    for name, path in repos.items():
        try:
            open_storage(path)
        except RepositoryError as exc:
            raise RepositoryError(name, str(exc)) from None  # "repository NAME: no replicator repository at PATH"


def _check_stdio() -> None:
    """--stdio speaks on a pipe or socket (sshd gives it one); a file or terminal would never end a frame."""
    for stream, what in ((sys.stdin, "stdin"), (sys.stdout, "stdout")):
        try:
            mode = os.fstat(stream.fileno()).st_mode
        except (OSError, ValueError, AttributeError):
            raise UsageError(f"--stdio: {what} is closed") from None
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            raise UsageError(f"--stdio: {what} is not a pipe or socket; run 'replicator serve --stdio' under sshd "
                             "(ForceCommand, command= or a Subsystem line), not by hand")


def _setup_logging(args) -> None:
    # asyncssh's own warnings (e.g. a peer's failed key exchange) go through the same handler.
    setup_logging(args.log_format, getattr(logging, args.log_level.upper()), also=("asyncssh",))


def _names(items: list[str], option: str, targets: dict[str, str]) -> set[str]:
    """Repository names given to a per-mirror flag; each must have a --mirror."""
    for name in items:
        if name not in targets:
            raise UsageError(f"{option} {name!r}: no --mirror {name}=DIR")
    return set(items)


def _pairs(items: list[str], option: str, repos: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"{option} {item!r}: expected NAME=VALUE")
        if name not in repos:
            raise UsageError(f"{option} {item!r}: no --repo {name}=PATH")
        out[name] = value
    return out


class _Mirrors:
    """The --mirror workers of this process, keyed by repository name (one thread each)."""

    def __init__(self, args, repos: dict[str, str]) -> None:
        self.workers: dict = {}
        self._repos: list = []
        targets = _pairs(args.mirror, "--mirror", repos)
        sources = _pairs(args.mirror_source, "--mirror-source", repos)
        if set(sources) - set(targets):
            raise UsageError("--mirror-source for a repository without --mirror")
        adopt = _names(getattr(args, "mirror_adopt", []), "--mirror-adopt", targets)
        discard = _names(getattr(args, "mirror_discard_local", []), "--mirror-discard-local", targets)
        if not targets:
            return
        from replicator.cli.common import read_passphrase
        from replicator.repo.repository import Repository
        from replicator.restore.mirror import MirrorWorker

        passphrase = read_passphrase(args)  # a wrong one fails here, at start, with exit code 4
        try:
            for name, target in targets.items():
                repo = Repository.open(repos[name], passphrase)
                self._repos.append(repo)
                self.workers[name] = MirrorWorker(repo, os.path.abspath(target), source=sources.get(name),
                                                  on_done=self._logger(name, os.path.abspath(target)),
                                                  adopt=name in adopt, discard_local=name in discard)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _logger(name: str, target: str):
        log = logging.getLogger("replicator.serve")

        def done(report, error) -> None:
            if error is not None:
                log.error("mirror %s -> %s failed (retried at the next commit): %s", name, target, error)
            elif report is None:
                log.debug("mirror %s -> %s: no snapshot yet", name, target)
            elif report.stopped:
                log.info("mirror %s -> %s: update to snapshot %s stopped (every file whole); the next update "
                         "finishes it", name, target, report.snapshot[:16])
            elif not report.ok:
                log.error("mirror %s -> %s: %d paths not updated (retried at the next commit); first: %s: %s",
                          name, target, len(report.errors), *report.errors[0])
            elif report.mode != "unchanged":
                log.info("mirror %s -> %s: snapshot %s (%s): %d files written, %d paths removed", name, target,
                         report.snapshot[:16], report.mode, report.files, report.removed)
            if report is not None and report.kept_local_changes:
                kept = report.kept_local_changes
                log.warning("mirror %s -> %s: %d local changes kept, not overwritten or removed (first: %s); "
                            "commit them (sync them from this site) or discard them (restart serve once with "
                            "--mirror-discard-local %s)", name, target, len(kept), kept[0], name)

        return done

    def start(self) -> None:
        log = logging.getLogger("replicator.serve")
        for name, worker in self.workers.items():
            if worker.refused is not None:
                log.error("mirror %s refused, it will do nothing (serving goes on): %s; to hand it to the mirror "
                          "start serve with --mirror-adopt %s", name, worker.refused, name)
                continue
            worker.request()  # catch up with what was committed while no mirror ran

    def on_commit(self, repo_name: str, _snapshot: str) -> None:
        worker = self.workers.get(repo_name)
        if worker is not None:
            worker.request()

    def close(self) -> None:
        """Stop every running update first (each ends between two files), then wait for them."""
        for worker in self.workers.values():
            worker.stop()
        for worker in self.workers.values():
            worker.close()
        for repo in self._repos:
            repo.close()


def run(args) -> int:
    repos = _repos(args)
    _check_repos(repos)
    if args.verify_only:
        return _verify(args, repos)
    listen = None
    perms: dict[str, str] = {}
    if args.stdio:
        try:
            perms = S.parse_permissions(",".join(args.allow)) if args.allow else {n: "rw" for n in repos}
        except ValueError as exc:
            raise UsageError(f"--allow: {exc}") from None
    else:
        if not args.host_key or not args.authorized_keys:
            raise UsageError("--listen needs --host-key and --authorized-keys")
        host, sep, port = args.listen.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise UsageError(f"--listen {args.listen!r}: expected HOST:PORT")
        listen = (host.strip("[]") or "0.0.0.0", int(port))
    _setup_logging(args)
    mirrors = _Mirrors(args, repos)
    try:
        mirrors.start()
        if listen is None:
            _check_stdio()
            label = args.peer_label or f"stdio peer {os.environ.get('SSH_CLIENT', '?').split(' ')[0]}"
            asyncio.run(_stdio(repos, S.Peer(label, perms), mirrors.on_commit))
            return 0
        notifier = Notifier.from_env(os.environ)  # systemd Type=notify: $NOTIFY_SOCKET, $WATCHDOG_USEC
        try:
            asyncio.run(_listen(*listen, repos, args, mirrors.on_commit, notifier))
        finally:
            notifier.close()
        return 0
    finally:
        mirrors.close()  # stops a running mirror update between two files, within a moment


async def _listen(host: str, port: int, repos: dict[str, str], args, on_commit=None,
                  notifier: Notifier | None = None) -> None:
    from replicator.transport import ssh

    notify = notifier or Notifier(None)
    log = logging.getLogger("replicator.serve")
    serving = ", ".join(repos)
    sessions = 0
    where = ""

    def show() -> None:
        notify.status(f"listening on {where}, serving {serving}; {sessions} session{'s' if sessions != 1 else ''}")

    async def handler(reader, writer, label: str, perms: dict) -> None:
        nonlocal sessions
        sessions += 1
        show()
        try:
            await S.serve_session(reader, writer, repos, S.Peer(label, perms), on_commit)
        finally:
            sessions -= 1
            show()

    try:
        acceptor, bound = await ssh.listen(host, port, args.host_key, args.authorized_keys, handler,
                                           S.parse_permissions)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(f"{host}:{port}") from None
        raise UsageError(f"--listen {host}:{port}: cannot listen: {exc.strerror or exc}") from None
    where = f"{host}:{bound}"
    log.info("listening on %s, serving %s", where, ", ".join(f"{n}={p}" for n, p in repos.items()))
    notify.ready(f"listening on {where}, serving {serving}; 0 sessions")  # the port is bound: senders can connect
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The watchdog is pinged from the event loop that serves the sessions: a blocked loop stops the pings.
    while not stop.is_set():
        due = notify.tick()
        try:
            await asyncio.wait_for(stop.wait(), 3600 if due is None else max(due, 0.01))
        except asyncio.TimeoutError:
            pass
    notify.stopping(f"stopping: closing {sessions} session{'s' if sessions != 1 else ''}")
    log.info("stopping")
    acceptor.close()
    await acceptor.wait_closed()


async def _stdio(repos: dict[str, str], peer: S.Peer, on_commit=None) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2 ** 27)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout.buffer)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    await S.serve_session(reader, writer, repos, peer, on_commit)


def _verify(args, repos: dict[str, str]) -> int:
    worst = C.EXIT_OK
    summary = {}
    lines = []
    for name, path in repos.items():
        report = verify_without_key(path)
        summary[name] = report.as_dict()
        lines.append(f"{name}: {report.packs} packs (checksums), {report.ids_objects} id lists, "
                     f"{report.snapshots} snapshots, {report.refs_checked} chunk references checked without the key")
        lines += [f"  damaged: {p}" for p in report.problems]
        lines += [f"  quarantined pack {d[:16]}: its chunks are sent again by the next sync" for d in report.quarantined]
        lines += [f"  {n}" for n in report.notes]
        lines.append("  no problems found" if report.ok else f"  {len(report.problems)} problems found")
        lines += [f"  not checked: {what}" for what in report.not_checked]
        if not report.ok:
            worst = C.EXIT_INTEGRITY
    emit(args, summary, lines)
    if worst and (args.quiet or args.json):
        print("replicator: error: integrity problems found without the key; run 'replicator verify --data' "
              "with the passphrase", file=sys.stderr)
    return worst

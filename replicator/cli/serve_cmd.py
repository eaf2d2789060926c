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

``--config FILE`` (app/serve_config.py) gives the repositories of a receiver with many tenants, each with
its storage URL, its own authorized-keys file and a quota, and ``listen``, ``host_key``, ``log_format``
and ``metrics_listen``; flags given as well win, and ``--repo`` adds repositories (a name given twice is
refused).  SIGHUP reads FILE again: new repositories are served from the next OPEN, removed ones refuse
new sessions while sessions already open finish, changed keys and quotas apply to new sessions; a file
that does not load is logged and the configuration in force is kept.

``--listen`` serves per-repository Prometheus metrics (app/metrics.py) at ``metrics_listen`` or
``--metrics-listen`` (default 127.0.0.1:9469 with --config, off without; never with --stdio).

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
from replicator.app.config import LOG_FORMATS, parse_listen
from replicator.app.log import setup_logging
from replicator.app.sdnotify import Notifier
from replicator.app.serve_config import ServeConfig, ServeConfigError, check_serve_files, load_serve_config
from replicator.cli.common import emit
from replicator.errors import AddressInUse, ReplicatorError, RepositoryError, UsageError
from replicator.repo.keyless import verify_without_key
from replicator.store.location import is_object_url
from replicator.transport import server as S
from replicator.transport.tenants import Tenant, Tenants


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("serve", help="receive replication over SSH (secondary site)", description=
                       "Serve local repositories to replicator senders.  The receiver never needs the passphrase: "
                       "it stores sealed packs and snapshots, checks every pack's checksum and that a snapshot's "
                       "chunks are all present before committing it.")
    p.add_argument("--repo", action="append", default=[], metavar="NAME=PATH",
                   help="a repository to serve under NAME (repeatable); create it with 'replicator init PATH'")
    p.add_argument("--config", metavar="FILE",
                   help="the repositories to serve, with their storage URLs, keys and quotas, and listen, host_key, "
                        "log_format, metrics_listen (TOML, docs/OPERATIONS.md); read again on SIGHUP")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--listen", metavar="HOST:PORT", help="run the built-in SSH server on HOST:PORT")
    mode.add_argument("--stdio", action="store_true", help="serve one session on stdin/stdout (OpenSSH ForceCommand)")
    mode.add_argument("--verify-only", action="store_true",
                      help="check the repositories without the passphrase (pack checksums, id lists, snapshot refs)")
    p.add_argument("--host-key", metavar="FILE", help="SSH host private key (with --listen)")
    p.add_argument("--authorized-keys", metavar="FILE",
                   help='client public keys, one per line, with replicator-repos="NAME:rw,..." (with --listen)')
    p.add_argument("--metrics-listen", metavar="HOST:PORT|off",
                   help="with --listen: serve per-repository Prometheus metrics at http://HOST:PORT/metrics "
                        "(default: metrics_listen of --config, 127.0.0.1:9469 unless it says \"off\"; "
                        "without --config, off)")
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
    p.add_argument("--log-format", choices=LOG_FORMATS, default=None,
                   help="log lines on stderr as text or JSON, as the daemon's (default: log_format of --config, "
                        "else text)")
    add_common(p, passphrase=False)
    p.set_defaults(func=run)


def _repos(args) -> dict[str, str]:
    repos: dict[str, str] = {}
    for item in args.repo:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--repo {item!r}: expected NAME=PATH")
        if name in repos:
            raise UsageError(f"--repo {item!r}: repository {name!r} defined twice")
        repos[name] = path if is_object_url(path) else os.path.abspath(path)
    return repos


def _load_config(path: str) -> ServeConfig:
    """The --config file with the key files it names checked.  :raises ServeConfigError: the first problem."""
    cfg = load_serve_config(path)
    problems = check_serve_files(cfg)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ServeConfigError(problems[0] + more)
    return cfg


def _tenants(flags: dict[str, str], cfg: ServeConfig | None) -> list[Tenant]:
    """The --repo flags and the file's [[repo]] sections.  :raises UsageError: a name defined in both."""
    tenants = [Tenant(name, url) for name, url in flags.items()]
    for r in cfg.repos if cfg is not None else ():
        if r.name in flags:
            raise UsageError(f"repository {r.name!r} defined twice: --repo {r.name}={flags[r.name]} and "
                             f"{cfg.path}:{r.line} [[repo]]")  # type: ignore[union-attr]
        tenants.append(Tenant(r.name, r.url, r.quota, r.authorized_keys))
    return tenants


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


def _setup_logging(args, cfg: ServeConfig | None = None) -> None:
    # asyncssh's own warnings (e.g. a peer's failed key exchange) go through the same handler.
    fmt = args.log_format or (cfg.log_format if cfg is not None else "text")
    setup_logging(fmt, getattr(logging, args.log_level.upper()), also=("asyncssh",))


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


class _Keys:
    """The authorized-keys files in force (ssh.listen asks at each connection): the global one, whose keys
    carry replicator-repos options, and each served repository's own."""

    def __init__(self, tenants: Tenants, global_file: str | None) -> None:
        self.tenants = tenants
        self.global_file = global_file

    def __call__(self) -> list[tuple[str, str | None]]:
        files: list[tuple[str, str | None]] = [(self.global_file, None)] if self.global_file else []
        return files + [(t.authorized_keys, t.name) for t in self.tenants.all() if t.authorized_keys]


def run(args) -> int:
    flags = _repos(args)
    cfg = _load_config(args.config) if args.config else None
    tenants = Tenants(_tenants(flags, cfg), count_usage=not args.stdio)
    repos = {t.name: t.url for t in tenants.all()}
    if not repos:
        raise UsageError("nothing to serve: give --repo NAME=PATH or [[repo]] sections in --config")
    _check_repos(repos)
    if args.verify_only:
        return _verify(args, repos)
    listen = None
    perms: dict[str, str] = {}
    keys = _Keys(tenants, args.authorized_keys or (cfg.authorized_keys if cfg is not None else None))
    host_key = args.host_key or (cfg.host_key if cfg is not None else None)
    if args.stdio:
        try:
            perms = S.parse_permissions(",".join(args.allow)) if args.allow else {n: "rw" for n in repos}
        except ValueError as exc:
            raise UsageError(f"--allow: {exc}") from None
    elif args.listen:
        host, sep, port = args.listen.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise UsageError(f"--listen {args.listen!r}: expected HOST:PORT")
        listen = (host.strip("[]") or "0.0.0.0", int(port))
    elif cfg is not None and cfg.listen is not None:
        listen = (cfg.listen[0] or "0.0.0.0", cfg.listen[1])
    else:
        raise UsageError("give --listen HOST:PORT, --stdio or --verify-only (or listen = HOST:PORT in --config)")
    if listen is not None and (not host_key or not keys()):
        raise UsageError("--listen needs --host-key and --authorized-keys (or host_key and authorized_keys in "
                         "--config, globally or per [[repo]])")
    metrics_at = _metrics_listen(args, cfg, listen is not None)
    _setup_logging(args, cfg)
    mirrors = _Mirrors(args, repos)
    endpoint = None
    try:
        if metrics_at is not None:
            endpoint, metrics = _start_metrics(tenants, *metrics_at)
        else:
            metrics = "off"
        mirrors.start()
        if listen is None:
            _check_stdio()
            label = args.peer_label or f"stdio peer {os.environ.get('SSH_CLIENT', '?').split(' ')[0]}"
            asyncio.run(_stdio(tenants, S.Peer(label, perms), mirrors.on_commit))
            return 0
        notifier = Notifier.from_env(os.environ)  # systemd Type=notify: $NOTIFY_SOCKET, $WATCHDOG_USEC
        serving = _Serving(tenants, keys, host_key, flags, args.config)
        try:
            asyncio.run(_listen(*listen, serving, mirrors.on_commit, notifier, metrics))
        finally:
            notifier.close()
        return 0
    finally:
        mirrors.close()  # stops a running mirror update between two files, within a moment
        if endpoint is not None:
            endpoint.close()


def _metrics_listen(args, cfg: ServeConfig | None, listening: bool) -> tuple[str, int] | None:
    """Where the metrics endpoint listens: --metrics-listen, else the file's metrics_listen (its default
    127.0.0.1:9469), else nowhere.  Only ``--listen`` serves them: a --stdio process lives one session.

    :raises UsageError: a bad --metrics-listen, or one without --listen."""
    if args.metrics_listen is not None:
        try:
            where = parse_listen(args.metrics_listen)
        except ValueError as exc:
            raise UsageError(f"--metrics-listen: {exc}") from None
        if where is not None and not listening:
            raise UsageError("--metrics-listen needs --listen (a --stdio session serves no metrics)")
        return where
    return cfg.metrics_listen if cfg is not None and listening else None


def _start_metrics(tenants: Tenants, host: str, port: int):
    """Serve ``tenants``' metrics on ``host:port`` only.  :returns: (the endpoint, ``HOST:PORT`` bound).

    :raises AddressInUse: the port is taken.  :raises UsageError: any other reason it cannot listen."""
    from replicator.app.metrics import MetricsEndpoint, receiver_registry

    endpoint = MetricsEndpoint(receiver_registry(tenants))
    try:
        bound = endpoint.start(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(f"{host}:{port} (metrics_listen)") from None
        raise UsageError(f"metrics_listen {host}:{port}: cannot listen: {exc.strerror or exc}") from None
    return endpoint, f"{host}:{bound}"


def _summary(repos) -> str:
    names = list(repos)
    return ", ".join(names) if len(names) <= 8 else f"{len(names)} repositories ({', '.join(names[:3])}, ...)"


class _Serving:
    """What ``serve --listen`` serves, and its reload (SIGHUP): the table of repositories and the key files."""

    def __init__(self, tenants: Tenants, keys: _Keys, host_key: str | None, flags: dict[str, str],
                 config: str | None) -> None:
        self.tenants = tenants
        self.keys = keys
        self.host_key = host_key
        self.flags = flags  # --repo: served whatever the file says
        self.config = config
        self.log = logging.getLogger("replicator.serve")

    def count_usage(self) -> None:
        """Read the usage of every repository not counted yet from its storage (a thread; once per URL)."""
        from replicator.repo.local_sink import open_storage

        for tenant in self.tenants.uncounted():
            try:
                storage, _config = open_storage(tenant.url)
                try:
                    self.tenants.stats(tenant.name).count(storage)
                finally:
                    storage.close()
            except Exception as exc:  # noqa: BLE001 - counted again at its next OPEN
                self.log.warning("cannot count the usage of repository %s: %s", tenant.name, exc)

    def reload(self) -> None:
        """Read --config again and serve what it says; a file that does not load changes nothing (a thread)."""
        if self.config is None:
            self.log.info("SIGHUP: no --config to read again; nothing changed")
            return
        try:
            cfg = _load_config(self.config)
            tenants = _tenants(self.flags, cfg)
            new = {t.name: t.url for t in tenants if (old := self.tenants.get(t.name)) is None or old.url != t.url}
            _check_repos(new)
        except ReplicatorError as exc:
            self.log.error("reload failed, still serving the %d repositories in force: %s", len(self.tenants), exc)
            return
        added, removed = self.tenants.replace(tenants)
        self.keys.global_file = self.keys.global_file if cfg.authorized_keys is None else cfg.authorized_keys
        self.log.info("reloaded %s: serving %d repositories (%d added, %d removed)", self.config, len(self.tenants),
                      len(added), len(removed), extra={"fields": {"added": ",".join(added) or "-",
                                                                   "removed": ",".join(removed) or "-"}})
        self.count_usage()


async def _listen(host: str, port: int, serving: _Serving, on_commit=None, notifier: Notifier | None = None,
                  metrics: str = "off") -> None:
    from replicator.transport import ssh

    notify = notifier or Notifier(None)
    log = logging.getLogger("replicator.serve")
    tenants = serving.tenants
    sessions = 0
    where = ""

    def show() -> None:
        notify.status(f"listening on {where}, serving {_summary(tenants.names())}; "
                      f"{sessions} session{'s' if sessions != 1 else ''}")

    async def handler(reader, writer, label: str, perms: dict) -> None:
        nonlocal sessions
        sessions += 1
        show()
        try:
            await S.serve_session(reader, writer, tenants, S.Peer(label, perms), on_commit)
        finally:
            sessions -= 1
            show()

    assert serving.host_key is not None
    try:
        acceptor, bound = await ssh.listen(host, port, serving.host_key, serving.keys, handler, S.parse_permissions)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(f"{host}:{port}") from None
        raise UsageError(f"--listen {host}:{port}: cannot listen: {exc.strerror or exc}") from None
    where = f"{host}:{bound}"
    repos = {t.name: t.url for t in tenants.all()}
    log.info("listening on %s, serving %s, metrics %s", where,
             ", ".join(f"{n}={p}" for n, p in repos.items()) if len(repos) <= 8 else _summary(repos), metrics)
    notify.ready(f"listening on {where}, serving {_summary(repos)}; 0 sessions")  # the port is bound
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Usage is counted off the event loop, after the port is bound (an OPEN before that counts its own).
    background = [loop.run_in_executor(None, serving.count_usage)]
    reloading = asyncio.Lock()

    async def reload() -> None:
        async with reloading:  # one at a time, in the order the signals came
            await loop.run_in_executor(None, serving.reload)
            show()

    loop.add_signal_handler(signal.SIGHUP, lambda: background.append(loop.create_task(reload())))
    # The watchdog is pinged from the event loop that serves the sessions: a blocked loop stops the pings.
    while not stop.is_set():
        due = notify.tick()
        try:
            await asyncio.wait_for(stop.wait(), 3600 if due is None else max(due, 0.01))
        except asyncio.TimeoutError:
            pass
    notify.stopping(f"stopping: closing {sessions} session{'s' if sessions != 1 else ''}")
    log.info("stopping")
    loop.remove_signal_handler(signal.SIGHUP)
    acceptor.close()
    await acceptor.wait_closed()
    await asyncio.gather(*background, return_exceptions=True)


async def _stdio(repos: Tenants, peer: S.Peer, on_commit=None) -> None:
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

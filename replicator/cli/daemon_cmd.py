"""replicator daemon [--config FILE]: the continuous replication service (sender side)."""
from __future__ import annotations

from replicator.app.config import DEFAULT_CONFIG, LOG_FORMATS


def register(sub) -> None:
    p = sub.add_parser("daemon", help="replicate continuously, as configured in a TOML file", description=
                       "Run every [[job]] of the configuration file: watch each source (or sync on a schedule), "
                       "sync changes after a short quiet period, rescan periodically, retry failures with "
                       "backoff.  SIGTERM stops (a sync in flight is finished or abandoned; nothing partial is "
                       "committed); SIGHUP reloads the configuration.  A bad configuration, or a job's identity, "
                       "known_hosts or passphrase file missing or unreadable: exit code 2, one line per problem "
                       "(--check also checks the source directories; at start a missing source fails only its job).")
    p.add_argument("--config", metavar="FILE", default=DEFAULT_CONFIG, help=f"configuration (default {DEFAULT_CONFIG})")
    p.add_argument("--log-format", choices=LOG_FORMATS, default=None,
                   help="log lines on stderr as text or JSON (default: log_format of the configuration, else text)")
    p.add_argument("--check", action="store_true", help="only validate the configuration and the files its jobs need, "
                                                         "and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from replicator import constants as C
    from replicator.app.config import check_files, load_config
    from replicator.cli.common import printable
    from replicator.daemon.service import run_daemon

    cfg = load_config(args.config)  # ConfigError: its first problem, one line, exit 2
    problems = check_files(cfg, sources=args.check)  # at start, a missing source fails only its job
    for problem in problems:
        print(f"replicator: error: {printable(problem)}", file=sys.stderr)
    if problems:
        return C.EXIT_USAGE
    if args.check:
        print(f"{cfg.path}: ok, {len(cfg.jobs)} jobs: {', '.join(j.name for j in cfg.jobs)}")
        return 0
    return run_daemon(args.config, args.log_format)

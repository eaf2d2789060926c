"""replicator daemon [--config FILE]: the continuous replication service (sender side)."""
from __future__ import annotations

from replicator.app.config import DEFAULT_CONFIG, LOG_FORMATS


def register(sub) -> None:
    p = sub.add_parser("daemon", help="replicate continuously, as configured in a TOML file", description=
                       "Run every [[job]] of the configuration file: watch each source (or sync on a schedule), "
                       "sync changes after a short quiet period, rescan periodically, retry failures with "
                       "backoff.  SIGTERM stops (a sync in flight is finished or abandoned; nothing partial is "
                       "committed); SIGHUP reloads the configuration.  A bad configuration: exit code 2.")
    p.add_argument("--config", metavar="FILE", default=DEFAULT_CONFIG, help=f"configuration (default {DEFAULT_CONFIG})")
    p.add_argument("--log-format", choices=LOG_FORMATS, default=None,
                   help="log lines on stderr as text or JSON (default: log_format of the configuration, else text)")
    p.add_argument("--check", action="store_true", help="only validate the configuration and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    from replicator.app.config import load_config
    from replicator.daemon.service import run_daemon

    if args.check:
        cfg = load_config(args.config)
        print(f"{cfg.path}: ok, {len(cfg.jobs)} jobs: {', '.join(j.name for j in cfg.jobs)}")
        return 0
    return run_daemon(args.config, args.log_format)

"""replicator status [--config FILE]: what the daemon is doing, from its status file; a monitoring check.

The first line is a Nagios/Icinga plugin summary (``REPLICATOR OK - ...``) and the exit code follows
the plugin conventions: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the judgement is app/status.py's
``evaluate``).  Then one paragraph per job.
"""
from __future__ import annotations

import time

from replicator.app.config import DEFAULT_CONFIG
from replicator.app.status import STALE_AFTER, Check, ago, iso, with_times
from replicator.cli.common import emit, printable
from replicator.errors import ReplicatorError


def _seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("status", help="show the daemon's jobs: state, last success, lag, last error; a monitoring "
                                      "check", description=
                       "Read the status file the daemon keeps in its state directory (STATE_DIR/status.json) "
                       "and show each job, after a one-line summary.  Exit code as a Nagios/Icinga check: "
                       "0 OK (the daemon runs and every job's last sync committed); 1 WARNING (a job has not "
                       "committed yet, or its last success is older than --max-age); 2 CRITICAL (the daemon is "
                       "not running or its status file is stale, a job's last sync failed, its source is "
                       "refused, or a spot check found damage); 3 UNKNOWN (no status file, or unreadable).")
    p.add_argument("--config", metavar="FILE", default=DEFAULT_CONFIG, help=f"configuration (default {DEFAULT_CONFIG})")
    p.add_argument("--state-dir", metavar="DIR", help="read STATE_DIR/status.json directly (no configuration needed)")
    p.add_argument("--stale-after", metavar="SECONDS", type=_seconds, default=STALE_AFTER,
                   help=f"CRITICAL when the status file is older than this (default {STALE_AFTER:g}; the daemon "
                        "rewrites it every 2 s)")
    p.add_argument("--max-age", metavar="SECONDS", type=_seconds, default=None,
                   help="WARNING when a job's last success is older than this (default: no limit)")
    add_common(p, passphrase=False)
    p.set_defaults(func=run)


def _ago(t: float | None, now: float) -> str:
    """``5 s ago (2026-12-02T07:13:48Z)``: how long, for a glance, and when, to compare with other logs."""
    when = iso(t)
    if when is None or not isinstance(t, (int, float)):
        return "never"
    return f"{ago(now - t)} ago ({when})"


def _lines(doc: dict, now: float, running: bool) -> list[str]:
    daemon = f"running, pid {doc.get('pid')}" if running else "not running"
    lines = [f"daemon {daemon}; status updated {_ago(doc.get('updated'), now)}"]
    for name, j in sorted(doc.get("jobs", {}).items()):
        lines.append(f"{name}: {j.get('state')}  {printable(str(j.get('source')))} -> "
                     f"{printable(str(j.get('destination')))}")
        snap = str(j.get("last_snapshot") or "")[:16]
        lag = "n/a (nothing committed yet)" if j.get("last_success") is None else \
            f"{float(j.get('lag_seconds') or 0):.1f} s"
        lines.append(f"  last success {_ago(j.get('last_success'), now)}"
                     + (f" (snapshot {snap}, generation {j.get('last_generation')})" if snap else "")
                     + f"; lag {lag}")
        if j.get("last_error"):
            lines.append(f"  last error {_ago(j.get('last_error_time'), now)}: {printable(str(j['last_error']))}")
    return lines


def run(args) -> int:
    from replicator.app.status import evaluate, pid_alive, read_status, status_path, unknown

    try:
        if args.state_dir:
            state_dir = args.state_dir
        else:
            from replicator.app.config import load_config

            state_dir = load_config(args.config, env={"REPLICATOR_PASSPHRASE": "-"}).state_dir
        path = status_path(state_dir)
        doc = read_status(state_dir)
    except ReplicatorError as exc:  # the configuration
        return _report(args, unknown(str(exc)), {"running": False, "jobs": {}}, [])
    except ValueError as exc:
        return _report(args, unknown(f"{path} is not valid JSON: {exc}"), {"running": False, "jobs": {}}, [])
    except OSError as exc:
        return _report(args, unknown(f"cannot read {path}: {exc.strerror or exc}"), {"running": False, "jobs": {}},
                       [])
    if doc is None:
        return _report(args, unknown(f"no status file at {path}: the daemon has not run with this state directory"),
                       {"running": False, "jobs": {}}, [])
    now = time.time()
    check = evaluate(doc, now, stale_after=args.stale_after, max_age=args.max_age)
    if check.code == 3:  # malformed jobs: the details cannot be shown either
        return _report(args, check, {"running": False, "jobs": {}}, [])
    pid = doc.get("pid")
    running = isinstance(pid, int) and pid_alive(pid) and \
        any(j.get("state") != "stopped" for j in doc.get("jobs", {}).values())
    doc["running"] = running
    return _report(args, check, doc, _lines(doc, now, running))


def _report(args, check: Check, doc: dict, lines: list[str]) -> int:
    doc = with_times(doc)  # also for a file written by a daemon without the RFC 3339 twins
    doc["check"] = check.as_dict()
    emit(args, doc, [printable(check.summary), *lines])
    return check.code

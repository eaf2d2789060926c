"""replicator status [--config FILE]: what the daemon is doing, from its status file."""
from __future__ import annotations

import time

from replicator import constants as C
from replicator.app.config import DEFAULT_CONFIG
from replicator.cli.common import emit
from replicator.errors import UsageError


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("status", help="show the daemon's jobs: state, last success, lag, last error", description=
                       "Read the status file the daemon keeps in its state directory (STATE_DIR/status.json) "
                       "and show each job.  Exit code 3 when there is no status file.")
    p.add_argument("--config", metavar="FILE", default=DEFAULT_CONFIG, help=f"configuration (default {DEFAULT_CONFIG})")
    p.add_argument("--state-dir", metavar="DIR", help="read STATE_DIR/status.json directly (no configuration needed)")
    add_common(p, passphrase=False)
    p.set_defaults(func=run)


def _ago(t: float | None, now: float) -> str:
    if t is None:
        return "never"
    d = max(0.0, now - t)
    if d < 120:
        return f"{d:.0f} s ago"
    if d < 7200:
        return f"{d / 60:.0f} min ago"
    return f"{d / 3600:.1f} h ago"


def run(args) -> int:
    from replicator.app.status import pid_alive, read_status, status_path

    if args.state_dir:
        state_dir = args.state_dir
    else:
        from replicator.app.config import load_config

        state_dir = load_config(args.config, env={"REPLICATOR_PASSPHRASE": "-"}).state_dir
    try:
        doc = read_status(state_dir)
    except ValueError as exc:
        raise UsageError(f"{status_path(state_dir)} is not valid JSON: {exc}") from None
    if doc is None:
        emit(args, {"running": False, "jobs": {}}, [f"no status file at {status_path(state_dir)}: "
                                                     "the daemon has not run with this state directory"])
        return C.EXIT_REPOSITORY
    now = time.time()
    running = bool(doc.get("pid")) and pid_alive(int(doc["pid"])) and \
        any(j.get("state") != "stopped" for j in doc.get("jobs", {}).values())
    doc["running"] = running
    daemon = f"running, pid {doc.get('pid')}" if running else "not running"
    lines = [f"daemon {daemon}; "
             f"status updated {_ago(doc.get('updated'), now)}"]
    for name, j in sorted(doc.get("jobs", {}).items()):
        lines.append(f"{name}: {j.get('state')}  {j.get('source')} -> {j.get('destination')}")
        snap = (j.get("last_snapshot") or "")[:16]
        lines.append(f"  last success {_ago(j.get('last_success'), now)}"
                     + (f" (snapshot {snap}, generation {j.get('last_generation')})" if snap else "")
                     + f"; lag {j.get('lag_seconds', 0):.1f} s")
        if j.get("last_error"):
            lines.append(f"  last error {_ago(j.get('last_error_time'), now)}: {j['last_error']}")
    emit(args, doc, lines)
    return C.EXIT_OK

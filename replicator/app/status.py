"""The daemon's status file: what ``replicator status`` shows.

Owns the file name and format: ``STATE_DIR/status.json``, one JSON object
``{"pid", "updated", "config", "jobs": {NAME: {...}}}`` replaced atomically
(store/atomic.py) so a reader never sees half of it; every time in it is Unix
seconds, each with its RFC 3339 twin ``NAME_iso`` (replicator/times.py); and what the file says to a
monitoring system (``evaluate``: OK, WARNING, CRITICAL, UNKNOWN as Nagios/Icinga
plugins exit), which ``replicator status`` prints and exits with.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from replicator.store import atomic
from replicator.store.lock import pid_alive
from replicator.times import rfc3339

STATUS_NAME = "status.json"
TIME_FIELDS = ("started", "updated")  # Unix seconds in the document, each with a NAME_iso twin
JOB_TIME_FIELDS = ("last_success", "last_error_time", "next_retry", "spot_check_time")  # the same, per job


def status_path(state_dir: str) -> str:
    return os.path.join(state_dir, STATUS_NAME)


def iso(value) -> str | None:
    """The RFC 3339 text of a Unix time read from a status file; None for anything else."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        return rfc3339(value)
    except (OverflowError, OSError, ValueError):  # not a time a date can show (a damaged file)
        return None


def with_times(doc: dict) -> dict:
    """``doc`` with the RFC 3339 twin ``NAME_iso`` of every time it holds (None for a time not set).

    Idempotent, so ``replicator status --json`` also completes a file an older daemon wrote."""
    def stamp(d: dict, names: tuple[str, ...]) -> None:
        for name in names:
            if name in d:
                d[f"{name}_iso"] = iso(d[name])

    out = dict(doc)
    stamp(out, TIME_FIELDS)
    jobs = out.get("jobs")
    if isinstance(jobs, dict):
        out["jobs"] = {n: dict(j) if isinstance(j, dict) else j for n, j in jobs.items()}
        for j in out["jobs"].values():
            if isinstance(j, dict):
                stamp(j, JOB_TIME_FIELDS)
    return out


def write_status(state_dir: str, doc: dict) -> None:
    """Replace the status file atomically (store/atomic.py), times with their RFC 3339 twins.  :raises OSError:"""
    data = (json.dumps(with_times(doc), sort_keys=True, indent=1, default=str) + "\n").encode()
    atomic.replace(status_path(state_dir), data, mode=0o644)


def read_status(state_dir: str) -> dict | None:
    """:returns: the last status written, or None if there is none.

    :raises ValueError: unreadable JSON, or not a JSON object.  :raises OSError: cannot read the file."""
    try:
        with open(status_path(state_dir)) as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    if not isinstance(doc, dict):
        raise ValueError(f"a JSON {type(doc).__name__}, not an object")
    return doc


# --- the status file as a monitoring check (Nagios/Icinga plugin conventions) ---------------------

CHECK_OK, CHECK_WARNING, CHECK_CRITICAL, CHECK_UNKNOWN = 0, 1, 2, 3
CHECK_NAMES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
STALE_AFTER = 60.0  # the daemon rewrites the file every 2 s; not rewritten for this long: hung or gone


def ago(seconds: float) -> str:
    d = max(0.0, seconds)
    if d < 120:
        return f"{d:.0f} s"
    if d < 7200:
        return f"{d / 60:.0f} min"
    return f"{d / 3600:.1f} h"


@dataclass
class Check:
    """The verdict on a status file: ``code`` (0 OK .. 3 UNKNOWN) and the problems, worst first."""

    code: int
    problems: list[tuple[int, str]] = field(default_factory=list)
    ok_text: str = ""

    @property
    def name(self) -> str:
        return CHECK_NAMES[self.code]

    @property
    def summary(self) -> str:
        """The plugin's one summary line: ``REPLICATOR STATE - what``."""
        what = "; ".join(text for _code, text in self.problems) or self.ok_text
        return f"REPLICATOR {self.name} - {what}"

    def as_dict(self) -> dict:
        return {"code": self.code, "state": self.name, "summary": self.summary,
                "problems": [{"state": CHECK_NAMES[c], "text": t} for c, t in self.problems]}


def unknown(text: str) -> Check:
    return Check(CHECK_UNKNOWN, [(CHECK_UNKNOWN, text)])


def evaluate(doc: dict, now: float, *, stale_after: float = STALE_AFTER, max_age: float | None = None,
             alive: Callable[[int], bool] = pid_alive) -> Check:
    """Judge a status file.  CRITICAL: the daemon is not running, or its file is older than
    ``stale_after`` seconds; a job whose last sync failed (also while it retries), whose source is
    refused, or whose last spot check found damage.  WARNING: a job with no snapshot committed yet,
    or (with ``max_age``) whose last success is older than that.  Else OK."""
    problems: list[tuple[int, str]] = []
    jobs = doc.get("jobs") or {}
    if not isinstance(jobs, dict) or not all(isinstance(j, dict) for j in jobs.values()):
        return unknown("the status file's jobs are not JSON objects")
    pid = doc.get("pid")
    if not isinstance(pid, int) or not alive(pid):
        problems.append((CHECK_CRITICAL, f"daemon not running (pid {pid} is gone)"))
    elif jobs and all(j.get("state") == "stopped" for j in jobs.values()):
        problems.append((CHECK_CRITICAL, f"daemon not running (pid {pid} stopped its jobs)"))
    else:
        updated = doc.get("updated")
        age = now - updated if isinstance(updated, (int, float)) else None
        if age is None or age > stale_after:
            problems.append((CHECK_CRITICAL, "status file not updated for "
                                             f"{'ever' if age is None else ago(age)} (daemon hung?)"))
    if not jobs:
        problems.append((CHECK_WARNING, "no jobs in the status file"))
    for name, j in sorted(jobs.items()):
        error = j.get("last_error") or "unknown error"
        spot = j.get("spot_check")
        last = j.get("last_success")
        if j.get("refused"):
            problems.append((CHECK_CRITICAL, f"{name}: source refused ({j['refused']}): {error}"))
        elif (j.get("failures") or 0) > 0 or j.get("state") in ("failed", "retrying"):
            problems.append((CHECK_CRITICAL, f"{name}: failed ({j.get('failures') or 1} in a row, "
                                             f"{j.get('state')}): {error}"))
        if isinstance(spot, str) and spot.startswith("failed"):
            problems.append((CHECK_CRITICAL, f"{name}: spot check {spot}"))
        if not isinstance(last, (int, float)):
            problems.append((CHECK_WARNING, f"{name}: no snapshot committed yet ({j.get('state')})"))
        elif max_age is not None and now - last > max_age:
            problems.append((CHECK_WARNING, f"{name}: last success {ago(now - last)} ago "
                                            f"(more than {ago(max_age)})"))
    problems.sort(key=lambda p: -p[0])  # stable: the worst first, then in job order
    code = max((c for c, _t in problems), default=CHECK_OK)
    n = len(jobs)
    return Check(code, problems, ok_text=f"{n} job{'s' if n != 1 else ''} in sync, daemon running (pid {pid})")

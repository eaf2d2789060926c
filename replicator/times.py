"""The one time format of every output: RFC 3339 in UTC, to the second, with a ``Z``.

Logs, ``--json`` summaries, tables, status files, audit records and metrics
labels all print times through :func:`rfc3339`, so that a sysadmin can sort,
grep and compare them across commands and sites.  This module formats and
parses; it never reads the clock unless asked for "now".
"""
from __future__ import annotations

import datetime
import time

_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def rfc3339(seconds: float | None = None) -> str:
    """:param seconds: a Unix time; ``None`` for now.
    :returns: e.g. ``2026-12-02T07:13:48Z``."""
    return time.strftime(_FORMAT, time.gmtime(time.time() if seconds is None else seconds))


def rfc3339_ns(ns: int) -> str:
    """:param ns: a Unix time in nanoseconds (snapshot times)."""
    return rfc3339(ns // 1_000_000_000)


def shown_ns(ns: int) -> str:
    """A recorded time (nanoseconds) for people: RFC 3339, or ``@<seconds>`` for a time no date can show
    (a clock gone far wrong)."""
    try:
        return rfc3339_ns(ns)
    except (OverflowError, OSError, ValueError):
        return f"@{ns // 1_000_000_000}"


def parse_rfc3339(text: str) -> float:
    """:returns: the Unix time of an RFC 3339 string (``Z`` or a numeric offset).
    :raises ValueError: for anything else."""
    value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r}: an RFC 3339 time needs Z or an offset")
    return value.timestamp()

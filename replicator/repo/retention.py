"""Retention policy: which snapshots a ``forget`` keeps (restic's ``forget`` semantics).

Pure: takes snapshot records (anything with ``id``, ``source``, ``generation``
and ``time_ns``) and a :class:`Policy`, returns what to keep and why.  It
never touches storage; ``cli/forget_cmd.py`` deletes what it is told.

Rules, applied to each source on its own:

* snapshots are considered newest first (by ``time_ns``, then generation);
* ``keep_last N`` keeps the N newest;
* ``keep_hourly|daily|weekly|monthly|yearly N`` keeps, for each of the N most
  recent hours (days, ISO weeks, months, years) that *have* snapshots, the
  newest snapshot of that period; periods without snapshots do not count;
* a snapshot is kept if any rule keeps it; the newest snapshot of every
  source is always kept, whatever the policy;
* ``N = -1`` means "no limit" for that rule; 0 disables it.

Periods are computed in the time zone given (the local zone by default, as
restic does), so a "day" is an operator's day.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


class SnapshotLike(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def generation(self) -> int: ...

    @property
    def time_ns(self) -> int: ...


@dataclass(frozen=True)
class Policy:
    """How many snapshots each rule keeps; -1 = unlimited, 0 = rule off."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def __post_init__(self) -> None:
        for rule in RULES:
            value = getattr(self, rule)
            if type(value) is not int or value < -1:
                raise ValueError(f"keep-{rule} must be an integer >= -1 (got {value!r})")

    @property
    def empty(self) -> bool:
        return not any(getattr(self, rule) for rule in RULES)


@dataclass
class Decision:
    """The outcome for one snapshot: kept (with the rules that keep it) or removed."""

    snapshot: SnapshotLike
    reasons: list[str] = field(default_factory=list)

    @property
    def keep(self) -> bool:
        return bool(self.reasons)


def _bucketers(tz: _dt.tzinfo | None) -> dict[str, Callable[[int, int], object]]:
    def when(time_ns: int) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(time_ns // 1_000_000_000, tz=tz or _dt.timezone.utc).astimezone(tz)

    def week(t: int, _i: int) -> object:
        iso = when(t).isocalendar()
        return (iso[0], iso[1])

    return {
        "last": lambda _t, i: i,  # every snapshot is its own period
        "hourly": lambda t, _i: when(t).strftime("%Y-%m-%d %H"),
        "daily": lambda t, _i: when(t).strftime("%Y-%m-%d"),
        "weekly": week,
        "monthly": lambda t, _i: when(t).strftime("%Y-%m"),
        "yearly": lambda t, _i: when(t).year,
    }


def apply_policy(snapshots: Iterable[SnapshotLike], policy: Policy, *,
                 tz: _dt.tzinfo | None = None) -> list[Decision]:
    """Decide for every snapshot whether it is kept.

    :param snapshots: all snapshots of the repository (every source).
    :param policy: the rules; an empty policy keeps only each source's newest.
    :param tz: time zone of the periods; ``None`` = the machine's local zone.
    :returns: one Decision per snapshot, newest first within each source,
        sources in name order.
    """
    by_source: dict[str, list[SnapshotLike]] = {}
    for snap in snapshots:
        by_source.setdefault(snap.source, []).append(snap)
    bucketers = _bucketers(tz)
    out: list[Decision] = []
    for source in sorted(by_source):
        snaps = sorted(by_source[source], key=lambda s: (s.time_ns, s.generation), reverse=True)
        decisions = [Decision(s) for s in snaps]
        for rule in RULES:
            remaining = getattr(policy, rule)
            last_bucket: object = object()
            for i, d in enumerate(decisions):
                if remaining == 0:
                    break
                bucket = bucketers[rule](d.snapshot.time_ns, i)
                if bucket != last_bucket:
                    d.reasons.append(rule)
                    last_bucket = bucket
                    if remaining > 0:
                        remaining -= 1
        if decisions and not decisions[0].keep:
            decisions[0].reasons.append("newest")
        out.extend(decisions)
    return out

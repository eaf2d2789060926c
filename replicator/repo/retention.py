"""Retention policy: which snapshots a ``forget`` keeps (restic's ``forget`` rules, ordered by generation).

Pure: takes snapshot records (anything with ``id``, ``source``, ``generation``
and ``time_ns``) and a :class:`Policy`, returns what to keep and why.  It
never touches storage; ``cli/forget_cmd.py`` deletes what it is told.

The order is the generation, never the clock.  ``time_ns`` is the primary's
wall clock at commit and can be wrong (an RTC off after a reboot, a VM
restored from an image, an NTP step back); the generation is numbered by the
one writer above every snapshot it sees, so a higher generation was committed
later, whatever the clocks said.  Time enters only to put snapshots into
periods, through an *effective time*:

    effective(g) = min(time_ns(g), time_ns of every higher generation of the source)

A snapshot cannot have been taken after a later generation, so a time beyond
a later generation's is known to be wrong and is lowered to the latest time
it can have had (if that later clock was right).  Effective times never
decrease with the generation, so periods follow the generation order too.

Rules, applied to each source on its own:

* snapshots are considered newest generation first (ties: later recorded
  time, then id, so the result is deterministic);
* ``keep_last N`` keeps the N highest generations;
* ``keep_hourly|daily|weekly|monthly|yearly N`` keeps, for each of the N most
  recent hours (days, ISO weeks, months, years) that *have* snapshots, by
  effective time, the highest generation in that period; periods without
  snapshots do not count, and no "now" is involved (the clock of the machine
  running forget is not trusted either);
* a snapshot is kept if any rule keeps it; every snapshot of the highest
  generation of every source is always kept ("newest"), whatever the policy
  (two of the same generation are an integrity problem verify reports; forget
  keeps both);
* ``N = -1`` means "no limit" for that rule; 0 disables it.

What this guarantees: the highest generation is in the newest period of every
rule, so it is never removed.  A snapshot dated after a higher generation (a
clock once ahead, or the clock of a later sync stepped back) shares the period
of the nearest higher generation, which is counted first: it takes no period of
its own, so it cannot push older snapshots out of "keep-daily 7" (restic's
far-future snapshot attack, bupstash issue #256).  When the *newest*
generation is dated in the future nothing tells which clock was wrong: its
period counts as one of the N, exactly as a correct one would.

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
    """The outcome for one snapshot: kept (with the rules that keep it) or removed.

    ``time_ns`` is the effective time its periods were computed from;
    ``clock_suspect`` says it is earlier than the recorded one (a higher
    generation carries an earlier time, so one of the two clocks was wrong).
    """

    snapshot: SnapshotLike
    time_ns: int = 0
    reasons: list[str] = field(default_factory=list)

    @property
    def keep(self) -> bool:
        return bool(self.reasons)

    @property
    def clock_suspect(self) -> bool:
        return self.time_ns != self.snapshot.time_ns


def newest_first(snapshots: Iterable[SnapshotLike]) -> list[SnapshotLike]:
    """One source's snapshots, highest generation first (ties: later recorded time, then id)."""
    return sorted(snapshots, key=lambda s: (s.generation, s.time_ns, s.id), reverse=True)


def effective_times(snapshots: Iterable[SnapshotLike]) -> dict[str, int]:
    """Snapshot id -> effective time (see the module docstring), for the snapshots of one source."""
    out: dict[str, int] = {}
    floor: int | None = None
    # Same generation (a fork): neither was committed after the other, so they do not clamp each other.
    ordered = newest_first(snapshots)
    i = 0
    while i < len(ordered):
        gen = ordered[i].generation
        group = [s for s in ordered[i:] if s.generation == gen]
        for s in group:
            out[s.id] = s.time_ns if floor is None else min(s.time_ns, floor)
        low = min(s.time_ns for s in group)
        floor = low if floor is None else min(floor, low)
        i += len(group)
    return out


def _bucketers(tz: _dt.tzinfo | None) -> dict[str, Callable[[int, int], object]]:
    def when(time_ns: int) -> _dt.datetime:
        try:
            return _dt.datetime.fromtimestamp(time_ns // 1_000_000_000, tz=tz or _dt.timezone.utc).astimezone(tz)
        except (OverflowError, OSError, ValueError):
            # A clock beyond the years a date can hold (1..9999): one period at either end.
            return _dt.datetime.max if time_ns > 0 else _dt.datetime.min

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
    :param policy: the rules; an empty policy keeps only each source's newest generation.
    :param tz: time zone of the periods; ``None`` = the machine's local zone.
    :returns: one Decision per snapshot, highest generation first within each
        source, sources in name order.
    """
    by_source: dict[str, list[SnapshotLike]] = {}
    for snap in snapshots:
        by_source.setdefault(snap.source, []).append(snap)
    bucketers = _bucketers(tz)
    out: list[Decision] = []
    for source in sorted(by_source):
        effective = effective_times(by_source[source])
        decisions = [Decision(s, effective[s.id]) for s in newest_first(by_source[source])]
        for rule in RULES:
            remaining = getattr(policy, rule)
            last_bucket: object = object()
            for i, d in enumerate(decisions):
                if remaining == 0:
                    break
                # Effective times never decrease with the generation, so a period's
                # snapshots are adjacent here and the first one is its highest generation.
                bucket = bucketers[rule](d.time_ns, i)
                if bucket != last_bucket:
                    d.reasons.append(rule)
                    last_bucket = bucket
                    if remaining > 0:
                        remaining -= 1
        top = decisions[0].snapshot.generation if decisions else None
        for d in decisions:
            if d.snapshot.generation == top and not d.keep:
                d.reasons.append("newest")
        out.extend(decisions)
    return out

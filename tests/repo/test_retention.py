"""Retention policy (restic forget semantics): table tests over synthetic snapshot times, in UTC."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from replicator.repo.retention import Policy, apply_policy

UTC = dt.timezone.utc


@dataclass(frozen=True)
class Snap:
    id: str
    source: str
    generation: int
    time_ns: int


def snaps(*stamps: str, source: str = "s") -> list[Snap]:
    """Snapshots at the given UTC times ("2024-01-31 10:00"), generations in time order."""
    out = []
    for i, stamp in enumerate(sorted(stamps)):
        t = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
        out.append(Snap(f"{source}-{stamp}", source, i + 1, int(t.timestamp()) * 1_000_000_000))
    return out


def kept(snapshots, policy, **kw) -> list[str]:
    return sorted(d.snapshot.id.split("-", 1)[1] for d in apply_policy(snapshots, policy, tz=UTC, **kw) if d.keep)


DAYS = snaps(*(f"2024-01-{d:02d} {h:02d}:00" for d in range(1, 11) for h in (6, 18)))  # 20 snapshots, 10 days

CASES = [
    # (policy, expected kept times)
    (Policy(last=3), ["2024-01-09 18:00", "2024-01-10 06:00", "2024-01-10 18:00"]),
    (Policy(daily=3), ["2024-01-08 18:00", "2024-01-09 18:00", "2024-01-10 18:00"]),
    (Policy(last=1, daily=2), ["2024-01-09 18:00", "2024-01-10 18:00"]),  # both rules keep the newest
    (Policy(last=2, daily=2), ["2024-01-09 18:00", "2024-01-10 06:00", "2024-01-10 18:00"]),
    (Policy(hourly=2), ["2024-01-10 06:00", "2024-01-10 18:00"]),
    # ISO weeks: Jan 1 2024 is a Monday; week 1 = Jan 1-7, week 2 = Jan 8-14.
    (Policy(weekly=5), ["2024-01-07 18:00", "2024-01-10 18:00"]),  # only two weeks have snapshots
    (Policy(monthly=1), ["2024-01-10 18:00"]),
    (Policy(yearly=-1), ["2024-01-10 18:00"]),
    (Policy(daily=-1), [f"2024-01-{d:02d} 18:00" for d in range(1, 11)]),
    (Policy(last=-1), sorted(s.id.split("-", 1)[1] for s in DAYS)),
    (Policy(), ["2024-01-10 18:00"]),  # empty policy: the newest is always kept
]


@pytest.mark.parametrize("policy,expected", CASES)
def test_policy_table(policy, expected):
    assert kept(DAYS, policy) == sorted(expected)


def test_periods_without_snapshots_do_not_count():
    s = snaps("2024-01-01 10:00", "2024-01-05 10:00", "2024-03-01 10:00", "2024-03-02 10:00")
    assert kept(s, Policy(daily=3)) == ["2024-01-05 10:00", "2024-03-01 10:00", "2024-03-02 10:00"]
    assert kept(s, Policy(monthly=2)) == ["2024-01-05 10:00", "2024-03-02 10:00"]


def test_year_and_week_boundaries():
    # 2020-12-31 (Thu) and 2021-01-01 (Fri) are both in ISO week 53 of 2020.
    s = snaps("2020-12-28 10:00", "2020-12-31 10:00", "2021-01-01 10:00", "2021-01-04 10:00")
    assert kept(s, Policy(weekly=2)) == ["2021-01-01 10:00", "2021-01-04 10:00"]
    assert kept(s, Policy(yearly=2)) == ["2020-12-31 10:00", "2021-01-04 10:00"]
    assert kept(s, Policy(monthly=3)) == ["2020-12-31 10:00", "2021-01-04 10:00"]


def test_each_source_on_its_own_and_newest_always_kept():
    a = snaps("2024-01-01 10:00", "2024-01-02 10:00", "2024-01-03 10:00", source="a")
    b = snaps("2023-06-01 10:00", source="b")
    decisions = apply_policy(a + b, Policy(last=1), tz=UTC)
    keep = {d.snapshot.id for d in decisions if d.keep}
    assert keep == {"a-2024-01-03 10:00", "b-2023-06-01 10:00"}
    assert [d.snapshot.source for d in decisions] == ["a", "a", "a", "b"]  # grouped, newest first
    assert [d.reasons for d in decisions if d.snapshot.source == "b"] == [["last"]]
    only_old = apply_policy(a, Policy(yearly=0, daily=0, hourly=0), tz=UTC)
    assert [d.reasons for d in only_old] == [["newest"], [], []]


def test_reasons_name_every_rule():
    d = apply_policy(DAYS, Policy(last=1, daily=1, monthly=1), tz=UTC)[0]
    assert d.reasons == ["last", "daily", "monthly"]


def test_same_time_ordered_by_generation():
    s = [Snap("x1", "s", 1, 0), Snap("x2", "s", 2, 0), Snap("x3", "s", 3, 0)]
    assert [d.snapshot.id for d in apply_policy(s, Policy(last=1), tz=UTC) if d.keep] == ["x3"]
    assert [d.snapshot.id for d in apply_policy(s, Policy(daily=5), tz=UTC) if d.keep] == ["x3"]


def test_local_time_zone_changes_the_day():
    s = snaps("2024-01-01 22:00", "2024-01-01 23:30")
    plus2 = dt.timezone(dt.timedelta(hours=2))  # 00:00 and 01:30 on Jan 2 there: one day
    utc_days = [x.snapshot.id for x in apply_policy(s, Policy(daily=5), tz=UTC) if x.keep]
    assert len(utc_days) == 1
    minus1 = dt.timezone(dt.timedelta(hours=-1))  # 21:00 and 22:30 on Jan 1: one day
    assert len([x for x in apply_policy(s, Policy(daily=5), tz=minus1) if x.keep]) == 1
    plus1 = dt.timezone(dt.timedelta(hours=1))  # 23:00 on Jan 1 and 00:30 on Jan 2: two days
    assert len([x for x in apply_policy(s, Policy(daily=5), tz=plus1) if x.keep]) == 2
    assert len([x for x in apply_policy(s, Policy(daily=5), tz=plus2) if x.keep]) == 1
    assert apply_policy([], Policy(last=1)) == []  # local zone by default; nothing to decide


@pytest.mark.parametrize("bad", [-2, 1.5, "3", None])
def test_bad_counts_refused(bad):
    with pytest.raises(ValueError):
        Policy(daily=bad)


def test_empty_flag():
    assert Policy().empty and not Policy(weekly=1).empty and not Policy(last=-1).empty

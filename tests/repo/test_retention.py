"""Retention policy (restic forget semantics): table tests over synthetic snapshot times, in UTC."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- generations, not clocks -------------------------------------------------------------------
# The primary's clock can be wrong; a higher generation was always committed after a lower one.

def gens(*stamps: str, source: str = "s") -> list[Snap]:
    """Snapshots in *generation* order, each with the time its (possibly wrong) clock recorded."""
    out = []
    for i, stamp in enumerate(stamps):
        t = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
        out.append(Snap(f"{source}-g{i + 1}", source, i + 1, int(t.timestamp()) * 1_000_000_000))
    return out


def kept_gens(snapshots, policy) -> list[int]:
    return sorted(d.snapshot.generation for d in apply_policy(snapshots, policy, tz=UTC) if d.keep)


AHEAD_THEN_BACK = gens("2024-01-01 10:00", "2024-01-02 10:00", "2034-01-03 10:00", "2024-01-04 10:00")
STEPPED_BACK = gens("2024-01-01 10:00", "2024-01-01 10:30", "2024-01-01 09:45")

CLOCK_CASES = [
    (AHEAD_THEN_BACK, Policy(last=1), [4]),
    (AHEAD_THEN_BACK, Policy(daily=1), [4]),
    (AHEAD_THEN_BACK, Policy(yearly=1), [4]),
    # generation 3 (dated 2034) was committed before generation 4: it counts as no later than it,
    # so it shares generation 4's day and takes no day of its own
    (AHEAD_THEN_BACK, Policy(daily=3), [1, 2, 4]),
    (STEPPED_BACK, Policy(last=1), [3]),
    (STEPPED_BACK, Policy(hourly=1), [3]),
    (STEPPED_BACK, Policy(hourly=2), [3]),  # all three fall in generation 3's hour (09:00)
    (STEPPED_BACK, Policy(last=2), [2, 3]),
]


@pytest.mark.parametrize("snapshots,policy,expected", CLOCK_CASES)
def test_wrong_clocks_are_ordered_by_generation(snapshots, policy, expected):
    assert kept_gens(snapshots, policy) == expected


def test_decisions_are_newest_generation_first_with_effective_times():
    decisions = apply_policy(AHEAD_THEN_BACK, Policy(last=1), tz=UTC)
    assert [d.snapshot.generation for d in decisions] == [4, 3, 2, 1]
    g4 = AHEAD_THEN_BACK[3].time_ns
    assert [d.time_ns for d in decisions] == [g4, g4, AHEAD_THEN_BACK[1].time_ns, AHEAD_THEN_BACK[0].time_ns]
    assert [d.clock_suspect for d in decisions] == [False, True, False, False]


def test_far_future_week_cannot_take_keep_daily_7():
    """restic's append-only attack (bupstash #256) with a wrong clock instead of an attacker."""
    real = [f"2024-01-{d:02d} 10:00" for d in range(1, 8)]  # generations 1-7
    future = [f"2034-02-{d:02d} 10:00" for d in range(1, 8)]  # 8-14, clock 10 years ahead
    s = gens(*real, *future, "2024-01-08 10:00")  # 15: clock fixed
    assert kept_gens(s, Policy(daily=7)) == [2, 3, 4, 5, 6, 7, 15]


def test_newest_generation_in_the_future_takes_one_period_only():
    """When the newest generation itself is dated in the future, nothing tells which clock was wrong:
    its period counts like any other (one of N), and every older one keeps its own."""
    s = gens(*(f"2024-01-{d:02d} 10:00" for d in range(1, 8)), "2034-01-01 10:00")
    assert kept_gens(s, Policy(daily=7)) == [2, 3, 4, 5, 6, 7, 8]


def test_repeated_top_generation_is_kept_whole():
    s = [Snap("a", "s", 1, 10), Snap("b", "s", 2, 20), Snap("c", "s", 2, 30)]
    decisions = apply_policy(s, Policy(last=1), tz=UTC)
    assert sorted(d.snapshot.id for d in decisions if d.keep) == ["b", "c"]


@st.composite
def histories(draw):
    n = draw(st.integers(1, 12))
    base = 1_700_000_000 * 1_000_000_000
    hour = 3600 * 1_000_000_000
    # each generation's clock: mostly a little later than the last, sometimes years off either way
    times = draw(st.lists(st.integers(-24 * 3650, 24 * 3650), min_size=n, max_size=n))
    return [Snap(f"g{i + 1}", "s", i + 1, base + t * hour) for i, t in enumerate(times)]


policies = st.builds(Policy, **{rule: st.integers(-1, 4) for rule in ("last", "hourly", "daily", "weekly",
                                                                       "monthly", "yearly")})


@settings(max_examples=300, deadline=None)
@given(histories(), policies)
def test_property_newest_generation_always_kept_and_future_dated_ones_change_nothing(history, policy):
    top = max(s.generation for s in history)
    decisions = apply_policy(history, policy, tz=UTC)
    assert all(d.keep for d in decisions if d.snapshot.generation == top)
    # A snapshot dated later than a higher generation (so its clock was wrong) may be kept by
    # keep-last, but it never takes a period: dropping it changes no other snapshot's fate under
    # the time rules.
    time_only = Policy(**{r: getattr(policy, r) for r in ("hourly", "daily", "weekly", "monthly", "yearly")})
    before = {d.snapshot.id: d.keep for d in apply_policy(history, time_only, tz=UTC)}
    future = [s for s in history if any(h.generation > s.generation and h.time_ns < s.time_ns for h in history)]
    for s in future:
        rest = [h for h in history if h is not s]
        after = {d.snapshot.id: d.keep for d in apply_policy(rest, time_only, tz=UTC)}
        assert after == {k: v for k, v in before.items() if k != s.id}

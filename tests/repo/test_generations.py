"""Order by generation, never by the primary's clock.

The primary's wall clock is recorded in every snapshot (``time_ns``) and can be wrong: a bad RTC
after a reboot, a VM restored from an image (+10 years), an NTP step back of an hour.  Generations
are the only order a reader can trust (the writer numbers each snapshot above every one it sees,
under the lock).  These tests make the clock wrong through the real Writer (``time.time_ns`` of
replicator.repo.writer is replaced), then check that restore, find_snapshot, the live mirror,
``snapshots``, ``forget`` and ``prune`` all treat the highest generation as the latest.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import random
import types

import pytest

from replicator import constants as C
from replicator.core.params import ChunkerParams
from replicator.errors import IntegrityError, RepositoryError
from replicator.repo import writer as writer_module
from replicator.repo.prune import prune
from replicator.repo.repository import Repository
from replicator.repo.retention import Policy, apply_policy
from replicator.repo.verify import verify
from replicator.restore import mirror as M
from tests.conftest import PASSPHRASE, run_cli, sync_repo
from tests.treecompare import diff, manifest

PW = PASSPHRASE.encode()
PARAMS = ChunkerParams(min_size=4096, avg_size=16384, max_size=65536)
S = 1_000_000_000
HOUR = 3600 * S
DAY = 24 * HOUR
YEARS_10 = 3652 * DAY
T0 = int(dt.datetime(2024, 3, 4, 12, 0, tzinfo=dt.timezone.utc).timestamp()) * S

# The primary's clock at each commit, generation 1 first.  The last generation is the newest in
# truth; in both histories some older generation carries a later time.
CLOCKS = {
    # generation 3 was committed while the RTC was 10 years ahead, then NTP fixed the clock
    "ahead-10-years-then-back": [T0, T0 + DAY, T0 + DAY + YEARS_10, T0 + 3 * DAY],
    # the clock stepped back one hour between the last two syncs
    "stepped-back-one-hour": [T0, T0 + DAY - 2 * HOUR, T0 + DAY + 30 * 60 * S, T0 + DAY + 45 * 60 * S - HOUR],
}


class Clock:
    """Stands in for the ``time`` module of replicator.repo.writer: ``time_ns`` returns what it is told."""

    def __init__(self) -> None:
        self.now = T0

    def time_ns(self) -> int:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(writer_module, "time", types.SimpleNamespace(time_ns=c.time_ns))
    return c


def _generation_content(src, gen: int) -> None:
    """Each generation holds the shared file and one file of its own (the previous one's is gone)."""
    for old in src.glob("only-*.bin"):
        old.unlink()
    (src / f"only-{gen}.bin").write_bytes(random.Random(gen).randbytes(150_000))


def build_history(tmp_path, clock: Clock, times: list[int], source: str = "ward"):
    """A repository with one snapshot per entry of ``times``; :returns: (path, snapshots, manifests)."""
    src = tmp_path / f"src-{source}"
    src.mkdir(exist_ok=True)
    (src / "shared.txt").write_bytes(b"handover\n" * 2000)
    path = str(tmp_path / "repo")
    snaps, manifests = [], []
    if not os.path.exists(path):
        Repository.init(path, PW, log2n=C.SCRYPT_LOG2N_MIN, params=PARAMS).close()
    with Repository.open(path, PW, exclusive=True) as repo:
        for gen, t in enumerate(times, start=1):
            _generation_content(src, gen)
            clock.now = t
            snap = sync_repo(str(src), repo, source).snapshot
            assert snap.time_ns == t
            snaps.append(snap)
            manifests.append(manifest(str(src)))
    return path, snaps, manifests


@pytest.fixture(params=sorted(CLOCKS))
def history(request, tmp_path, clock):
    return build_history(tmp_path, clock, CLOCKS[request.param])


def test_histories_really_disagree_with_the_clock(history):
    _path, snaps, _m = history
    assert [s.generation for s in snaps] == [1, 2, 3, 4]
    assert max(snaps, key=lambda s: s.time_ns) is not snaps[-1]  # the clock names another "latest"


def test_find_snapshot_is_the_highest_generation(history):
    path, snaps, _m = history
    with Repository.open(path, PW) as repo:
        assert repo.find_snapshot(source="ward").id == snaps[-1].id
        assert repo.find_snapshot().id == snaps[-1].id  # one source: no need to name it
        assert [s.generation for s in repo.snapshots()] == [1, 2, 3, 4]  # listed in generation order


def test_restore_restores_the_highest_generation(history, tmp_path):
    path, _snaps, manifests = history
    out = tmp_path / "out"
    r = run_cli("restore", path, str(out), "-q")
    assert r.returncode == 0, r.stderr
    assert diff(manifests[-1], manifest(str(out))) == []


def test_snapshots_lists_in_generation_order(history):
    path, snaps, _m = history
    r = run_cli("snapshots", path, "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["snapshots"]
    assert [row["id"] for row in rows] == [s.id for s in snaps]
    assert [row["latest"] for row in rows] == [False, False, False, True]
    # the generation whose recorded time is later than a newer generation's is marked
    assert [row["clock_suspect"] for row in rows] == [False, False, True, False]


def test_mirror_follows_the_highest_generation(history, tmp_path):
    path, snaps, manifests = history
    target = tmp_path / "mirror"
    with Repository.open(path, PW) as repo:
        assert M.latest_snapshot(repo, "ward").id == snaps[-1].id
        assert M.latest_snapshot(repo, None).id == snaps[-1].id
        worker = M.MirrorWorker(repo, str(target))
        try:
            report = worker.update()
        finally:
            worker.close()
    assert report is not None and report.ok and report.snapshot == snaps[-1].id
    assert diff(manifests[-1], manifest(str(target))) == []


def test_forget_keep_last_1_keeps_the_highest_generation(history):
    path, snaps, _m = history
    r = run_cli("forget", path, "--keep-last", "1", "--json")
    assert r.returncode == 0, r.stderr
    kept = [row["id"] for row in json.loads(r.stdout)["snapshots"] if row["keep"]]
    assert kept == [snaps[-1].id]
    assert os.listdir(os.path.join(path, "snapshots")) == [snaps[-1].id]


@pytest.mark.parametrize("rule", ["hourly", "daily", "weekly", "monthly", "yearly"])
@pytest.mark.parametrize("count", [1, 2, 7])
def test_time_rules_never_drop_the_highest_generation(history, rule, count):
    path, snaps, _m = history
    with Repository.open(path, PW) as repo:
        decisions = apply_policy(repo.snapshots(), Policy(**{rule: count}), tz=dt.timezone.utc)
    kept = {d.snapshot.id for d in decisions if d.keep}
    assert snaps[-1].id in kept
    # the newest generation is kept by the rule itself (it is in the newest period), not only as a rescue
    (newest,) = [d for d in decisions if d.snapshot.id == snaps[-1].id]
    assert rule in newest.reasons


def test_prune_keeps_the_data_of_the_highest_generation(history, tmp_path):
    path, snaps, manifests = history
    r = run_cli("forget", path, "--keep-daily", "1", "-q")
    assert r.returncode == 0, r.stderr
    with Repository.open(path, PW, exclusive=True) as repo:
        assert [s.id for s in repo.snapshots()] == [snaps[-1].id]
        report = prune(repo)
        assert report.packs_deleted >= 1  # the forgotten generations' own files went
        v = verify(repo, data=True)
        assert v.ok, v.problems
    out = tmp_path / "out"
    r = run_cli("restore", path, str(out), "-q")
    assert r.returncode == 0, r.stderr
    assert diff(manifests[-1], manifest(str(out))) == []


def test_far_future_snapshots_cannot_push_the_others_out(tmp_path, clock):
    """restic's append-only attack (bupstash #256): snapshots dated in the future must not take the
    periods of 'keep-daily 7'.  Here a week of syncs ran with the clock 10 years ahead."""
    times = [T0 + d * DAY for d in range(7)]  # generations 1-7: one a day
    times += [T0 + YEARS_10 + d * DAY for d in range(7, 14)]  # 8-14: the clock 10 years ahead
    times += [T0 + 14 * DAY]  # 15: the clock fixed
    with Repository.init(str(tmp_path / "repo"), PW, log2n=C.SCRYPT_LOG2N_MIN) as repo:
        for t in times:
            clock.now = t
            with repo.writer() as w:
                w.commit_snapshot("ward", w.store_tree([]), {})
        decisions = apply_policy(repo.snapshots(), Policy(daily=7), tz=dt.timezone.utc)
    kept = sorted(d.snapshot.generation for d in decisions if d.keep)
    # 15 (its day), then the six most recent real days before it; the future-dated ones count as
    # no later than generation 15 (they were committed before it), so they take no period of their own
    assert kept == [2, 3, 4, 5, 6, 7, 15]


def test_several_sources_the_clock_does_not_choose(tmp_path, clock):
    """With two sources and none named, "the latest" would be chosen by the clock: refused instead."""
    path, a, _ = build_history(tmp_path, clock, [T0, T0 + YEARS_10], source="a")  # a's clock was wrong
    _path, b, bm = build_history(tmp_path, clock, [T0 + DAY, T0 + 2 * DAY], source="b")
    with Repository.open(path, PW) as repo:
        with pytest.raises(RepositoryError, match="2 sources"):
            repo.find_snapshot()
        with pytest.raises(RepositoryError, match="2 sources"):
            M.latest_snapshot(repo, None)
        assert repo.find_snapshot(source="b").id == b[-1].id
        assert M.latest_snapshot(repo, "a").id == a[-1].id
    r = run_cli("restore", path, str(tmp_path / "out"))
    assert r.returncode == 2 and "--source" in r.stderr and "a, b" in r.stderr, r.stderr
    r = run_cli("restore", path, str(tmp_path / "out"), "--source", "b", "-q")
    assert r.returncode == 0, r.stderr
    assert diff(bm[-1], manifest(str(tmp_path / "out"))) == []


def test_repeated_highest_generation_is_not_guessed(tmp_path, clock):
    """Two snapshots claim the highest generation (a copy of the repository merged back): restore
    and the mirror refuse to guess between them, forget keeps both, and each restores by id."""
    path, snaps, _m = build_history(tmp_path, clock, [T0, T0 + DAY])
    aside = tmp_path / "aside"
    aside.mkdir()
    for kind in ("snapshots", "refs"):  # hide generation 2, commit another generation 2, put it back
        os.replace(os.path.join(path, kind, snaps[1].id), aside / kind)
    _p, (twin,), _m2 = build_history(tmp_path, clock, [T0 + 2 * DAY], source="ward")
    for kind in ("snapshots", "refs"):
        os.replace(aside / kind, os.path.join(path, kind, snaps[1].id))
    assert twin.generation == 2 and twin.id != snaps[1].id
    with Repository.open(path, PW) as repo:
        with pytest.raises(IntegrityError, match="2 snapshots of generation 2"):
            repo.find_snapshot(source="ward")
        with pytest.raises(IntegrityError, match="2 snapshots of generation 2"):
            M.latest_snapshot(repo, "ward")
    r = run_cli("restore", path, str(tmp_path / "out"))
    assert r.returncode == 5 and snaps[1].id[:16] in r.stderr and twin.id[:16] in r.stderr, r.stderr
    r = run_cli("forget", path, "--keep-last", "1", "--json")
    assert r.returncode == 0, r.stderr
    kept = {row["id"] for row in json.loads(r.stdout)["snapshots"] if row["keep"]}
    assert kept == {snaps[1].id, twin.id}
    for snap in (snaps[1], twin):
        assert run_cli("restore", path, str(tmp_path / snap.id), "--snapshot", snap.id, "-q").returncode == 0

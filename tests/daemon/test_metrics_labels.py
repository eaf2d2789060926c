"""The daemon's metrics as Prometheus sees them, in process (no daemon, no HTTP): no series carries
the ``job`` label Prometheus sets itself on scrape, the build is exported, each job has one
current state, and the lag of a job that never committed is unknown (NaN), not 0."""
from __future__ import annotations

import math
import platform
import re

from prometheus_client import generate_latest

import replicator
from replicator.daemon.metrics import JOB_STATES, Metrics


def _text(m: Metrics) -> str:
    return generate_latest(m.registry).decode()


def _value(m: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return m.registry.get_sample_value(name, labels)


def _exercise(m: Metrics) -> None:
    info = {"state": "idle", "refused": None, "last_success": 1.0}
    m.watch_job("a", lambda: 5.0, lambda: info)
    m.refused("a", "empty")
    for metric in (m.bytes_read, m.bytes_sent, m.bytes_stored, m.chunks_new, m.chunks_dedup, m.files_changed,
                   m.syncs):
        metric.labels("a").inc(1)
    m.errors.labels("a", "permanent").inc()
    m.duration.labels("a").observe(1.0)
    m.last_success.labels("a").set(1.0)
    m.spot_check_ok.labels("a").set(1)
    m.spot_check_time.labels("a").set(1.0)


def test_no_series_carries_the_job_label():
    m = Metrics()
    _exercise(m)
    text = _text(m)
    assert not re.search(r'[{,]job="', text), text
    assert 'replicator_source_refused{reason="empty",replicator_job="a"} 1.0' in text
    assert _value(m, "replicator_syncs_total", {"replicator_job": "a"}) == 1.0
    assert _value(m, "replicator_spot_check_ok", {"replicator_job": "a"}) == 1.0
    assert _value(m, "replicator_spot_check_timestamp_seconds", {"replicator_job": "a"}) == 1.0
    assert _value(m, "replicator_sync_errors_total", {"replicator_job": "a", "kind": "permanent"}) == 1.0


def test_build_info():
    m = Metrics()
    labels = {"version": replicator.__version__, "python": platform.python_version()}
    assert _value(m, "replicator_build_info", labels) == 1.0


def test_job_state_is_one_of_a_fixed_set():
    m = Metrics()
    info: dict = {"state": "starting", "refused": None, "last_success": None}
    m.watch_job("a", lambda: 0.0, lambda: info)

    def states() -> dict[str, float | None]:
        return {s: _value(m, "replicator_job_state", {"replicator_job": "a", "state": s}) for s in JOB_STATES}

    assert set(JOB_STATES) >= {"idle", "syncing", "retrying", "failed", "refused"}
    for state, refused, expected in (("idle", None, "idle"), ("syncing", None, "syncing"),
                                     ("retrying", None, "retrying"), ("failed", None, "failed"),
                                     ("failed", "empty", "refused"), ("stopped", None, "stopped")):
        info.update(state=state, refused=refused)
        got = states()
        assert got == {s: (1.0 if s == expected else 0.0) for s in JOB_STATES}, (state, refused, got)
    info.update(state="something new", refused=None)  # never two states at 1, never a new label value
    assert sum(v or 0 for v in states().values()) == 0


def test_lag_is_nan_until_the_first_success():
    m = Metrics()
    info: dict = {"state": "syncing", "refused": None, "last_success": None}
    m.watch_job("a", lambda: 0.0, lambda: info)
    lag = _value(m, "replicator_replication_lag_seconds", {"replicator_job": "a"})
    assert lag is not None and math.isnan(lag)
    info["last_success"] = 1700000000.0
    assert _value(m, "replicator_replication_lag_seconds", {"replicator_job": "a"}) == 0.0


def test_forget_drops_every_series_of_the_job():
    m = Metrics()
    _exercise(m)
    m.watch_job("b", lambda: 0.0, lambda: {"state": "idle", "refused": None, "last_success": 1.0})
    m.forget("a")
    text = _text(m)
    assert 'replicator_job="a"' not in text, text
    assert 'replicator_job="b"' in text and "replicator_build_info{" in text

"""The receiver's per-repository metrics (app/metrics.py RepositoryCollector), in process: no server, no HTTP.

Every value is read from a ``Tenants`` table at scrape time; a repository removed by a reload keeps its
series only while a session of it is still open.
"""
from __future__ import annotations

import platform

import replicator
from replicator.app.metrics import CollectorRegistry, generate_text, receiver_registry
from replicator.transport.tenants import NO_REPOSITORY, Tenant, Tenants

TAG = "ab" * 16


def _registry(tenants: Tenants) -> CollectorRegistry:
    return receiver_registry(tenants)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_each_repository_has_its_usage_sessions_commits_and_refusals():
    tenants = Tenants([Tenant("chu-a", "/srv/a", quota=10_000), Tenant("chu-b", "/srv/b")])
    a = tenants.stats("chu-a")
    a.stored(1000)
    a.stored(500)
    a.committed(TAG, 1_700_000_000.5)
    a.opened()
    a.opened()
    a.closed()
    a.refuse("quota_exceeded")
    a.refuse("quota_exceeded")
    tenants.unnamed.refuse("not_allowed")
    r = _registry(tenants)
    assert _value(r, "replicator_repository_bytes", repository="chu-a") == 1500
    assert _value(r, "replicator_repository_packs", repository="chu-a") == 2
    assert _value(r, "replicator_repository_bytes", repository="chu-b") == 0
    assert _value(r, "replicator_repository_quota_bytes", repository="chu-a") == 10_000
    assert _value(r, "replicator_repository_quota_bytes", repository="chu-b") is None  # no quota: no series
    assert _value(r, "replicator_repository_last_commit_timestamp_seconds", repository="chu-a",
                  source=TAG) == 1_700_000_000.5
    assert _value(r, "replicator_repository_sessions_open", repository="chu-a") == 1
    assert _value(r, "replicator_repository_sessions_opened_total", repository="chu-a") == 2
    assert _value(r, "replicator_repository_sessions_open", repository="chu-b") == 0
    assert _value(r, "replicator_repository_refused_total", repository="chu-a", reason="quota_exceeded") == 2
    assert _value(r, "replicator_repository_refused_total", repository=NO_REPOSITORY, reason="not_allowed") == 1
    assert _value(r, "replicator_repository_usage_counted", repository="chu-a") == 0
    assert _value(r, "replicator_serve_repositories") == 2
    assert _value(r, "replicator_build_info", version=replicator.__version__, python=platform.python_version()) == 1


def test_values_are_read_at_each_scrape_and_counted_usage_is_marked():
    class Listing:
        def list(self, prefix):
            return ["data/00/" + "0" * 64] if prefix == "data/" else []

        def size(self, name):
            return 4096

    tenants = Tenants([Tenant("chu-a", "/srv/a")])
    r = _registry(tenants)
    assert _value(r, "replicator_repository_packs", repository="chu-a") == 0
    tenants.stats("chu-a").count(Listing())
    assert _value(r, "replicator_repository_usage_counted", repository="chu-a") == 1
    assert _value(r, "replicator_repository_bytes", repository="chu-a") == 4096
    assert _value(r, "replicator_repository_packs", repository="chu-a") == 1


def test_a_removed_repository_stays_while_its_session_is_open_only():
    tenants = Tenants([Tenant("chu-a", "/srv/a"), Tenant("chu-b", "/srv/b"), Tenant("chu-c", "/srv/c")])
    tenants.stats("chu-a").opened()
    tenants.replace([Tenant("chu-b", "/srv/b")])
    r = _registry(tenants)
    assert _value(r, "replicator_repository_sessions_open", repository="chu-a") == 1  # still finishing
    assert _value(r, "replicator_repository_sessions_open", repository="chu-c") is None  # gone with its series
    assert _value(r, "replicator_serve_repositories") == 1
    tenants.stats("chu-a").closed()
    assert _value(r, "replicator_repository_sessions_open", repository="chu-a") is None


def test_the_text_has_one_series_per_repository_and_no_job_label():
    tenants = Tenants([Tenant(f"t{i:03d}", f"/srv/t{i:03d}") for i in range(500)])
    text = generate_text(_registry(tenants))
    lines = [line for line in text.splitlines() if line.startswith("replicator_repository_bytes{")]
    assert len(lines) == 500 and len({line.split('"')[1] for line in lines}) == 500
    assert "job=" not in text.replace("replicator_job=", "")

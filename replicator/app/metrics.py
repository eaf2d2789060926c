"""Prometheus metrics shared by the daemon and ``serve``: the only importer of prometheus_client.

Owns: the metric types the daemon instruments with (re-exported for daemon/metrics.py), the build
info series both export, the HTTP endpoint (``MetricsEndpoint``: listens only on the address it is
given), and the receiver's ``RepositoryCollector``, which builds its series per served repository at
each scrape from ``transport/tenants.py``'s running counts: O(repositories) per scrape, never a
storage listing.  Names, labels and meanings are listed in docs/OPERATIONS.md ("Metrics" and
"Metrics of the receiver").

Must never: print, read configuration files, or import cli or daemon.
"""
from __future__ import annotations

import platform
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from replicator import __version__
from replicator.transport.tenants import NO_REPOSITORY, Tenants

__all__ = ["CollectorRegistry", "Counter", "Gauge", "Histogram", "MetricsEndpoint", "RepositoryCollector",
           "build_info", "generate_text", "receiver_registry"]

REPOSITORY = "repository"  # the label naming the served repository (NO_REPOSITORY "" for refusals naming none)
BUILD_INFO = ("replicator_build_info", "Always 1: the replicator version and the Python running it")


def build_info(registry: CollectorRegistry) -> Gauge:
    """Register ``replicator_build_info`` (always 1) in ``registry``."""
    gauge = Gauge(*BUILD_INFO, ["version", "python"], registry=registry)
    gauge.labels(__version__, platform.python_version()).set(1)
    return gauge


def generate_text(registry: CollectorRegistry) -> str:
    """The Prometheus text exposition of ``registry`` (what the endpoint serves)."""
    return generate_latest(registry).decode()


class MetricsEndpoint:
    """``http://HOST:PORT/metrics`` for one registry, served by a thread of prometheus_client."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._server: Any = None

    def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` only.  :returns: the port bound (``port`` 0: one the system chose).
        :raises OSError: the address is in use or not local."""
        self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def receiver_registry(tenants: Tenants) -> CollectorRegistry:
    """What ``serve`` exports: the build info and ``tenants``' series (``RepositoryCollector``)."""
    registry = CollectorRegistry()
    build_info(registry)
    registry.register(RepositoryCollector(tenants))
    return registry


class RepositoryCollector(Collector):
    """The receiver's series, one per served repository (and per source, per refusal reason), read from
    ``tenants`` at each scrape.  A repository removed by a reload keeps its series while a session of it
    is still open, then they go."""

    def __init__(self, tenants: Tenants) -> None:
        self.tenants = tenants

    def collect(self) -> Iterator[Metric]:
        label = [REPOSITORY]
        stored = GaugeMetricFamily("replicator_repository_bytes",
                                   "Bytes of packs the repository holds (what its quota limits)", labels=label)
        packs = GaugeMetricFamily("replicator_repository_packs", "Packs the repository holds", labels=label)
        counted = GaugeMetricFamily("replicator_repository_usage_counted",
                                    "1 once bytes and packs include the storage's listing at start (or reload), "
                                    "0 while they count only what this process stored since", labels=label)
        quota = GaugeMetricFamily("replicator_repository_quota_bytes",
                                  "The repository's quota in bytes of packs (absent: no quota)", labels=label)
        last = GaugeMetricFamily("replicator_repository_last_commit_timestamp_seconds",
                                 "Unix time of the last snapshot committed by this process, per source tag",
                                 labels=[REPOSITORY, "source"])
        open_now = GaugeMetricFamily("replicator_repository_sessions_open", "Sessions open on the repository now",
                                     labels=label)
        opened = CounterMetricFamily("replicator_repository_sessions_opened", "Sessions opened on the repository",
                                     labels=label)
        refused = CounterMetricFamily("replicator_repository_refused",
                                      "Requests refused (each ends its session), by reason; repository \"\": "
                                      "refusals that name no served repository", labels=[REPOSITORY, "reason"])
        for name, stats in self.tenants.counts().items():
            s = stats.snapshot()
            stored.add_metric([name], s["bytes"])
            packs.add_metric([name], s["packs"])
            counted.add_metric([name], 1 if s["counted"] else 0)
            open_now.add_metric([name], s["sessions"])
            opened.add_metric([name], s["sessions_total"])
            for tag, when in sorted(s["last_commit"].items()):
                last.add_metric([name, tag], when)
            for reason, n in sorted(s["refused"].items()):
                refused.add_metric([name, reason], n)
            tenant = self.tenants.get(name)
            if tenant is not None and tenant.quota is not None:
                quota.add_metric([name], tenant.quota)
        for reason, n in sorted(self.tenants.unnamed.snapshot()["refused"].items()):
            refused.add_metric([NO_REPOSITORY, reason], n)
        yield GaugeMetricFamily("replicator_serve_repositories", "Repositories served (the table in force)",
                                value=len(self.tenants))
        yield from (stored, packs, counted, quota, last, open_now, opened, refused)

"""Prometheus metrics of the daemon (the only importer of prometheus_client).

Every series carries a ``job`` label.  Names and meanings are listed in
docs/OPERATIONS.md ("Metrics").  The HTTP endpoint listens only where the
configuration says (default 127.0.0.1:9464).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from replicator.errors import SourceVanished


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.bytes_read = Counter("replicator_bytes_read", "Bytes read from the source", ["job"], registry=r)
        self.bytes_sent = Counter("replicator_bytes_sent", "Protocol bytes sent to the secondary (ssh jobs)",
                                  ["job"], registry=r)
        self.bytes_stored = Counter("replicator_bytes_stored", "Bytes of new packs written", ["job"], registry=r)
        self.chunks_new = Counter("replicator_chunks_new", "Chunks stored (not yet at the destination)", ["job"],
                                  registry=r)
        self.chunks_dedup = Counter("replicator_chunks_deduplicated", "Chunks already at the destination",
                                    ["job"], registry=r)
        self.files_changed = Counter("replicator_files_changed", "Files read because they changed", ["job"],
                                     registry=r)
        self.syncs = Counter("replicator_syncs", "Syncs committed", ["job"], registry=r)
        self.errors = Counter("replicator_sync_errors", "Failed syncs, by kind (retryable or permanent)",
                              ["job", "kind"], registry=r)
        self.duration = Histogram("replicator_sync_duration_seconds", "Duration of committed syncs", ["job"],
                                  buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, float("inf")),
                                  registry=r)
        self.last_success = Gauge("replicator_last_success_timestamp_seconds",
                                  "Unix time of the last committed snapshot", ["job"], registry=r)
        self.lag = Gauge("replicator_replication_lag_seconds",
                         "Seconds since the oldest change seen and not yet committed (0 when in sync)", ["job"],
                         registry=r)
        self.source_refused = Gauge("replicator_source_refused",
                                    "1 while the job's source is refused as vanished or replaced, by reason "
                                    "(nothing is committed meanwhile), else 0", ["job", "reason"], registry=r)
        self.spot_check_ok = Gauge("replicator_spot_check_ok",
                                   "1 if the last spot check of the destination (a sample of packs read back and "
                                   "checked with the key) found nothing wrong, 0 if it found damage or lies",
                                   ["job"], registry=r)
        self.spot_check_time = Gauge("replicator_spot_check_timestamp_seconds", "Unix time of the last spot check",
                                     ["job"], registry=r)
        self._server: Any = None

    def refused(self, job: str, reason: str | None) -> None:
        """The job's source is refused for ``reason`` (one of ``SourceVanished.REASONS``), or not (None)."""
        for r in SourceVanished.REASONS:
            self.source_refused.labels(job, r).set(1 if r == reason else 0)

    def watch_lag(self, job: str, fn: Callable[[], float]) -> None:
        self.lag.labels(job).set_function(fn)

    def forget(self, job: str) -> None:
        """Drop a removed job's series (after a reload)."""
        for metric in (self.bytes_read, self.bytes_sent, self.bytes_stored, self.chunks_new, self.chunks_dedup,
                       self.files_changed, self.syncs, self.duration, self.last_success, self.lag,
                       self.spot_check_ok, self.spot_check_time):
            try:
                metric.remove(job)
            except KeyError:
                pass
        for kind in ("retryable", "permanent"):
            try:
                self.errors.remove(job, kind)
            except KeyError:
                pass
        for reason in SourceVanished.REASONS:
            try:
                self.source_refused.remove(job, reason)
            except KeyError:
                pass

    def serve(self, host: str, port: int) -> None:
        """:raises OSError: the address is in use or not local."""
        self._server, _thread = start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

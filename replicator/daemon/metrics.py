"""Prometheus metrics of the daemon, through app/metrics.py (the only importer of prometheus_client).

Every per-job series carries a ``replicator_job`` label (not ``job``: Prometheus sets ``job``
itself on scrape, and would rename ours ``exported_job``).  Names and meanings are listed in
docs/OPERATIONS.md ("Metrics").  The HTTP endpoint listens only where the configuration says
(default 127.0.0.1:9464).
"""
from __future__ import annotations

from collections.abc import Callable

from replicator.app.metrics import CollectorRegistry, Counter, Gauge, Histogram, MetricsEndpoint, build_info
from replicator.errors import SourceVanished

JOB = "replicator_job"  # the label naming the job in every per-job series
# The values of replicator_job_state's ``state`` label: the job's state in the status file, with a
# refused source ("failed" with a reason) as "refused".  Exactly one is 1 for each job.
JOB_STATES = ("starting", "idle", "syncing", "retrying", "failed", "refused", "stopped")


def job_state(info: dict) -> str:
    """The replicator_job_state of a job from its status entry (``JobRunner.info``)."""
    return "refused" if info.get("refused") else str(info.get("state"))


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.bytes_read = Counter("replicator_bytes_read", "Bytes read from the source", [JOB], registry=r)
        self.bytes_sent = Counter("replicator_bytes_sent", "Protocol bytes sent to the secondary (ssh jobs)",
                                  [JOB], registry=r)
        self.bytes_stored = Counter("replicator_bytes_stored", "Bytes of new packs written", [JOB], registry=r)
        self.chunks_new = Counter("replicator_chunks_new", "Chunks stored (not yet at the destination)", [JOB],
                                  registry=r)
        self.chunks_dedup = Counter("replicator_chunks_deduplicated", "Chunks already at the destination",
                                    [JOB], registry=r)
        self.files_changed = Counter("replicator_files_changed", "Files read because they changed", [JOB],
                                     registry=r)
        self.syncs = Counter("replicator_syncs", "Syncs committed", [JOB], registry=r)
        self.errors = Counter("replicator_sync_errors", "Failed syncs, by kind (retryable or permanent)",
                              [JOB, "kind"], registry=r)
        self.duration = Histogram("replicator_sync_duration_seconds", "Duration of committed syncs", [JOB],
                                  buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, float("inf")),
                                  registry=r)
        self.last_success = Gauge("replicator_last_success_timestamp_seconds",
                                  "Unix time of the last committed snapshot", [JOB], registry=r)
        self.lag = Gauge("replicator_replication_lag_seconds",
                         "Seconds since the oldest change seen and not yet committed (0 when in sync; "
                         "NaN while the job has never committed a snapshot)", [JOB], registry=r)
        self.source_refused = Gauge("replicator_source_refused",
                                    "1 while the job's source is refused as vanished or replaced, by reason "
                                    "(nothing is committed meanwhile), else 0", [JOB, "reason"], registry=r)
        self.spot_check_ok = Gauge("replicator_spot_check_ok",
                                   "1 if the last spot check of the destination (a sample of packs read back and "
                                   "checked with the key) found nothing wrong, 0 if it found damage or lies",
                                   [JOB], registry=r)
        self.spot_check_time = Gauge("replicator_spot_check_timestamp_seconds", "Unix time of the last spot check",
                                     [JOB], registry=r)
        self.state = Gauge("replicator_job_state",
                           f"1 for the job's current state, 0 for the others ({', '.join(JOB_STATES)})",
                           [JOB, "state"], registry=r)
        self.build_info = build_info(r)
        self._endpoint = MetricsEndpoint(r)

    def refused(self, job: str, reason: str | None) -> None:
        """The job's source is refused for ``reason`` (one of ``SourceVanished.REASONS``), or not (None)."""
        for r in SourceVanished.REASONS:
            self.source_refused.labels(job, r).set(1 if r == reason else 0)

    def watch_job(self, job: str, lag: Callable[[], float], info: Callable[[], dict]) -> None:
        """Export the job's lag and state, read at each scrape: ``lag()`` in seconds, ``info()`` its
        status entry (``state``, ``refused``, ``last_success``).  The lag is NaN until a first success
        (0 would claim "in sync" for a job that has never committed anything)."""
        def lag_or_nan() -> float:
            return lag() if info().get("last_success") is not None else float("nan")

        def is_state(state: str) -> Callable[[], float]:
            return lambda: 1.0 if job_state(info()) == state else 0.0

        self.lag.labels(job).set_function(lag_or_nan)
        for s in JOB_STATES:
            self.state.labels(job, s).set_function(is_state(s))

    def forget(self, job: str) -> None:
        """Drop a removed job's series (after a reload)."""
        for metric in (self.bytes_read, self.bytes_sent, self.bytes_stored, self.chunks_new, self.chunks_dedup,
                       self.files_changed, self.syncs, self.duration, self.last_success, self.lag,
                       self.spot_check_ok, self.spot_check_time):
            try:
                metric.remove(job)
            except KeyError:
                pass
        for labelled, values in ((self.errors, ("retryable", "permanent")),
                                 (self.source_refused, SourceVanished.REASONS), (self.state, JOB_STATES)):
            for value in values:
                try:
                    labelled.remove(job, value)
                except KeyError:
                    pass

    def serve(self, host: str, port: int) -> None:
        """:raises OSError: the address is in use or not local."""
        self._endpoint.start(host, port)

    def close(self) -> None:
        self._endpoint.close()

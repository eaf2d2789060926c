"""The replication daemon (sender side): one thread per job, signals, status, metrics, audit.

Owns scheduling: when a job syncs (debounced changes, periodic rescans,
schedules, retries with backoff), how it reports (logs, status file, metrics,
audit log) and how the process stops (SIGTERM) and reloads (SIGHUP).
Each sync is a ``replicator.sync.engine.SyncRun`` of the whole source against a
local Repository or a RemoteDestination, opened exactly as ``replicator sync``
opens them; the state cache keeps that cheap when little changed.

Invariants that must not change:
* never two syncs of one job at once, also across processes: a per-job flock
  in STATE_DIR/locks/ is held for the whole sync;
* an abandoned sync (SIGTERM) stops between chunks by raising ``Cancelled``
  from the engine's progress callback; the engine then commits nothing, and
  the next start syncs again (the engine is resumable);
* an error in one job never stops another.

Must never: import cli (the CLI calls ``run_daemon``), print to stdout.
"""
from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import random
import shlex
import signal
import threading
import time
from typing import Any

from replicator.app.audit import append_audit
from replicator.app.config import DaemonConfig, JobConfig, job_sync_options, load_config
from replicator.app.destinations import open_destination as open_destination_for
from replicator.app.log import LOGGER, JobLogger, setup_logging
from replicator.app.passphrase import CREDENTIAL_NAME, PASSPHRASE_ENV, passphrase_file_warning, passphrase_from
from replicator.app.sdnotify import Notifier
from replicator.app.status import read_status, write_status
from replicator.errors import ReplicatorError, SourceVanished, UsageError
from replicator.repo.keyring import remember_unlocked
from replicator.repo.subset import parse_subset, verify_subset
from replicator.store.lock import FileLock, Locked
from replicator.sync.engine import SyncRun
from replicator.times import rfc3339

BACKOFF_BASE = 2.0  # seconds before the first retry of a retryable failure
BACKOFF_CAP = 300.0  # retries never wait longer than this
PERMANENT_RETRY = 300.0  # after a non-retryable failure: retry only on change/rescan, at most this often
# A refused source (SourceVanished) is looked at again at every rescan or scheduled run, no backoff:
# it is back as soon as the volume is, and a refusal costs a listing of the snapshots, not a transfer.
STATUS_PERIOD = 2.0  # the status file is rewritten at least this often (lag moves)
STOP_GRACE = 10.0  # SIGTERM: how long the syncs in flight get to stop before the process exits anyway


class Cancelled(Exception):
    """sync abandoned because the daemon is stopping; nothing was committed"""


class JobLocked(ReplicatorError):
    """job {} is being synced by another process ({}); will try again"""

    retryable = True


class JobLock(FileLock):
    """The per-job lock STATE_DIR/locks/NAME.lock, held for one sync (store/lock.py)."""

    def __init__(self, state_dir: str, name: str) -> None:
        super().__init__(os.path.join(state_dir, "locks", f"{name}.lock"), "daemon")
        self.name = name

    def acquire(self, *, wait: bool = False) -> JobLock:
        try:
            super().acquire(wait=wait)
        except Locked as exc:
            raise JobLocked(self.name, exc.holder) from None
        return self


def key_fingerprint(identity: str) -> str | None:
    """OpenSSH ``SHA256:...`` fingerprint of a key, from KEY.pub or the private key's public part."""
    blob = None
    try:
        with open(identity + ".pub") as f:
            blob = base64.b64decode(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        try:
            with open(identity) as f:
                body = "".join(line.strip() for line in f if not line.startswith("-----"))
            raw = base64.b64decode(body)
            magic = b"openssh-key-v1\0"
            if raw.startswith(magic):
                pos = len(magic)
                for _ in range(3):  # cipher name, kdf name, kdf options
                    pos += 4 + int.from_bytes(raw[pos : pos + 4], "big")
                pos += 4  # number of keys
                n = int.from_bytes(raw[pos : pos + 4], "big")
                blob = raw[pos + 4 : pos + 4 + n]
        except (OSError, ValueError):
            return None
    if not blob:
        return None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def read_job_passphrase(job: JobConfig) -> bytes:
    """passphrase_file, passphrase_command, $REPLICATOR_PASSPHRASE, the systemd credential (app/passphrase.py).

    :raises UsageError:"""
    passphrase = passphrase_from(job.passphrase_file, job.passphrase_command)
    if not passphrase:
        raise UsageError(f"no passphrase: set passphrase_file or passphrase_command, ${PASSPHRASE_ENV} or the "
                         f"systemd credential {CREDENTIAL_NAME}")
    return passphrase


def open_destination(job: JobConfig, passphrase: bytes, cache_dir: str):
    """The same destinations as ``replicator sync``: a locked local Repository, or a RemoteDestination
    for ssh:// (the host key must already be pinned in known_hosts: the daemon never accepts a new one)."""
    return open_destination_for(job.destination, passphrase, cache_dir=cache_dir, identity=job.identity,
                                known_hosts=job.known_hosts, streams=job.streams, bwlimit=job.bwlimit)


def confirm_command(job: JobConfig, state_dir: str) -> str:
    """The ``replicator sync ... --confirm-source`` an operator runs once to commit a refused source
    as it is: the job's source name, destination, keys and state cache, so the daemon's next run
    compares with that snapshot."""
    words = ["replicator", "sync", job.source, job.destination, "--name", job.source_name,
             "--cache-dir", job.cache_dir or os.path.join(state_dir, "cache")]
    for flag, value in (("--passphrase-file", job.passphrase_file),
                        ("--passphrase-command", job.passphrase_command), ("--identity", job.identity),
                        ("--known-hosts", job.known_hosts)):
        if value:
            words += [flag, value]
    return " ".join(shlex.quote(w) for w in [*words, "--confirm-source"])


class JobRunner(threading.Thread):
    """Runs one job until ``stop()``: waits for a reason to sync, syncs, records the outcome."""

    def __init__(self, job: JobConfig, service: Service, previous: dict | None = None) -> None:
        super().__init__(name=f"job-{job.name}", daemon=True)
        self.job = job
        self.svc = service
        self.log = JobLogger(job.name)
        self._cv = threading.Condition()
        self._stopping = threading.Event()
        now = time.monotonic()
        # Guarded by _cv:
        self._dirty_since: float | None = None  # wall time of the oldest change not yet committed
        self._first_change = 0.0  # monotonic, for max_delay
        self._last_change = 0.0  # monotonic, for debounce
        self._force = True  # sync at start: changes made while the daemon was down
        self._not_before = 0.0  # monotonic: backoff after a failure
        self._next_rescan = now + job.rescan_interval
        self._next_scheduled = now + (job.interval or 0)
        self._syncing_since: float | None = None  # wall time the sync in flight took its changes
        self.failures = 0
        prev = previous or {}
        self.info: dict[str, Any] = {
            "state": "starting", "source": job.source, "destination": job.destination,
            "mode": "continuous" if job.continuous else f"every {job.interval:g} seconds",
            "last_success": prev.get("last_success"), "last_snapshot": prev.get("last_snapshot"),
            "last_generation": prev.get("last_generation"), "last_duration": prev.get("last_duration"),
            "last_error": None, "last_error_time": None, "failures": 0, "next_retry": None,
            "refused": None,  # SourceVanished.reason while the source is refused
        }
        self._passphrase_warning: str | None = None  # the last one logged: once, not at every sync
        self._last_spot_check = 0.0  # monotonic time of the last spot check (0: never, so the first sync does one)
        self._last_success_start: float | None = None

    # --- called from other threads ---------------------------------------------------
    def notify_change(self, _path: str = "") -> None:
        now = time.monotonic()
        with self._cv:
            if self._dirty_since is None:
                self._dirty_since = time.time()
                self._first_change = now
            self._last_change = now
            self._cv.notify()

    def lag(self) -> float:
        """Seconds since the oldest change seen and not yet committed; 0 when in sync.

        Scheduled jobs see no changes: their lag is the time since the start of the
        last committed sync (nothing older than that can be missing)."""
        with self._cv:
            oldest = self._dirty_since
            if self._syncing_since is not None:
                oldest = self._syncing_since if oldest is None else min(oldest, self._syncing_since)
        if not self.job.continuous:
            start = self._last_success_start
            return 0.0 if start is None else max(0.0, time.time() - start)
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    def stop(self) -> None:
        self._stopping.set()
        with self._cv:
            self._cv.notify()

    def snapshot_info(self) -> dict:
        info = dict(self.info)
        info["lag_seconds"] = round(self.lag(), 3)
        info["pending_changes"] = self._dirty_since is not None
        return info

    # --- the job's thread ------------------------------------------------------------
    def run(self) -> None:
        watcher = None
        if self.job.continuous:
            from replicator.daemon.watch import SourceWatcher

            try:
                watcher = SourceWatcher(self.job.source, self.notify_change)
                watcher.start()
            except (OSError, Exception) as exc:  # noqa: BLE001 - fall back to rescans
                watcher = None
                self.log.warning(f"cannot watch {self.job.source} ({exc}); relying on the rescan every "
                                 f"{self.job.rescan_interval:g} s")
        self._set(state="idle")
        try:
            while not self._stopping.is_set():
                with self._cv:
                    wait = self._due_in()
                    if wait > 0:
                        self._cv.wait(min(wait, 1.0))
                        continue
                self._attempt()
        finally:
            if watcher is not None:
                watcher.stop()
            self._set(state="stopped")

    def _due_in(self) -> float:
        now = time.monotonic()
        job = self.job
        if self._force:
            due = now
        elif job.continuous:
            due = self._next_rescan
            if self._dirty_since is not None:
                due = min(due, self._last_change + job.debounce, self._first_change + job.max_delay)
        else:
            due = self._next_scheduled
        return max(due, self._not_before) - now

    def _progress(self, n: int) -> None:
        """Engine callback, called per chunk read: the cancellation point."""
        if self._stopping.is_set():
            raise Cancelled()
        self.svc.metrics_inc("bytes_read", self.job.name, n)

    def _attempt(self) -> None:
        job = self.job
        start_mono = time.monotonic()
        with self._cv:
            taken = self._dirty_since
            self._syncing_since = taken if taken is not None else None
            self._dirty_since = None
            self._force = False
        start_wall = time.time()
        self._set(state="syncing")
        try:
            report, stats, dest_id = self._sync_once()
        except BaseException as exc:  # noqa: BLE001 - every failure is recorded, the thread goes on
            with self._cv:
                if taken is not None:  # the changes are still not committed
                    self._dirty_since = taken if self._dirty_since is None else min(taken, self._dirty_since)
                self._syncing_since = None
            self._failed(exc)
        else:
            with self._cv:
                self._syncing_since = None
            self._succeeded(report, stats, time.monotonic() - start_mono, start_wall, dest_id)
        finally:
            now = time.monotonic()
            self._next_rescan = now + job.rescan_interval
            if not job.continuous:
                self._next_scheduled = start_mono + job.interval  # type: ignore[operator]
                while self._next_scheduled < now:
                    self._next_scheduled += job.interval  # type: ignore[operator]

    def _sync_once(self):
        job = self.job
        passphrase = read_job_passphrase(job)
        self._check_passphrase_file()
        if not os.path.isdir(job.source):
            raise UsageError(f"source {job.source} is not a directory")
        cache = job.cache_dir or os.path.join(self.svc.config.state_dir, "cache")
        options = job_sync_options(job, cache)  # reads the job's exclude files now
        with JobLock(self.svc.config.state_dir, job.name):
            with open_destination(job, passphrase, cache) as dest:
                report = SyncRun(job.source, dest, options, progress=self._progress).run()
                self._spot_check(dest)
        # The destination's warnings are in report.warnings (path "(destination)"), logged by _succeeded.
        return report, report.destination_stats, dest.id

    def _spot_check(self, dest) -> None:
        """After a committed sync, when due: read a sample of the destination's packs back and check them
        with the key (repo/subset.py).  Damage or a lying secondary is logged as an error and exported as
        ``replicator_spot_check_ok 0``; the sync itself stays committed."""
        job = self.job
        if job.spot_check is None or (self._last_spot_check
                                      and time.monotonic() - self._last_spot_check < job.spot_check_interval):
            return
        self._last_spot_check = time.monotonic()
        share, count = parse_subset(job.spot_check)
        try:
            result = verify_subset(dest.keyring, dest.sink, share=share, count=count)
            problems = result.problems
        except ReplicatorError as exc:
            problems = [f"spot check could not read the destination: {exc}"]
        m = self.svc.metrics
        if m is not None:
            m.spot_check_ok.labels(job.name).set(0 if problems else 1)
            m.spot_check_time.labels(job.name).set(time.time())
        for p in problems:
            self.log.error(f"spot check: {p}")
        self._set(spot_check="ok" if not problems else f"failed: {problems[0]}", spot_check_time=time.time())

    def _check_passphrase_file(self) -> None:
        """Log that others can read the passphrase file: when first seen, and again if it changes."""
        path = self.job.passphrase_file
        problem = passphrase_file_warning(path) if path else None
        if problem != self._passphrase_warning:
            self._passphrase_warning = problem
            if problem is not None:
                self.log.warning(problem)

    def _succeeded(self, report, stats: dict, duration: float, start_wall: float, dest_id: str) -> None:
        job, snap, name = self.job, report.snapshot, self.job.name
        self.failures = 0
        self._not_before = 0.0
        self._last_success_start = start_wall
        m = self.svc.metrics
        if m is not None:
            m.bytes_sent.labels(name).inc(stats.get("bytes_sent", 0))
            m.bytes_stored.labels(name).inc(stats.get("bytes_written", 0))
            m.chunks_new.labels(name).inc(report.chunks_new)
            m.chunks_dedup.labels(name).inc(report.chunks_total - report.chunks_new)
            m.files_changed.labels(name).inc(report.files - report.files_unchanged)
            m.duration.labels(name).observe(duration)
            m.syncs.labels(name).inc()
            m.last_success.labels(name).set(time.time())
            m.refused(name, None)
        for path, message in report.warnings:
            self.log.warning(f"skipped {path}: {message}")
        # A sync that changed nothing is a success too (the source was checked: the lag drops), but it
        # committed nothing, so it is logged as such and leaves no audit record.
        self.log.info("snapshot committed" if report.committed else "no change since snapshot", fields={
            "snapshot": snap.short_id, "generation": snap.generation, "files": report.files,
            "files_read": report.files - report.files_unchanged, "bytes_read": report.bytes_read,
            "chunks_new": report.chunks_new, "bytes_sent": stats.get("bytes_sent", 0),
            "seconds": round(duration, 3), "warnings": len(report.warnings)})
        self._set(state="idle", last_success=time.time(), last_snapshot=snap.id, last_generation=snap.generation,
                  last_duration=round(duration, 3), failures=0, next_retry=None, last_warnings=len(report.warnings),
                  refused=None)
        audit = self.svc.config.audit_log
        if audit and report.committed:
            record = {"event": "commit", "job": name, "source": job.source, "source_name": job.source_name,
                      "destination": job.destination, "repository": dest_id, "snapshot": snap.id,
                      "generation": snap.generation, "root_tree": snap.tree.hex(),
                      "files": report.files, "bytes": report.bytes_total}
            if job.remote and job.identity:
                record["client_key"] = key_fingerprint(job.identity)
            try:
                append_audit(audit, record)
            except (OSError, ValueError) as exc:
                self.log.error(f"cannot append to the audit log {audit}: {exc}")
                self._set(last_error=f"audit log: {exc}", last_error_time=time.time())

    def _failed(self, exc: BaseException) -> None:
        name = self.job.name
        if isinstance(exc, Cancelled):
            self.log.info("sync abandoned (stopping); nothing committed, the next start syncs again")
            return
        if isinstance(exc, SourceVanished):
            self._refused(exc)
            return
        retryable = getattr(exc, "retryable", False) if isinstance(exc, ReplicatorError) else \
            isinstance(exc, OSError) and getattr(exc, "errno", None) not in (errno.ENOSPC, errno.EDQUOT)
        message = str(exc) if isinstance(exc, (ReplicatorError, OSError)) else f"{type(exc).__name__}: {exc}"
        self.failures += 1
        now = time.monotonic()
        if retryable:
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (self.failures - 1)) * random.uniform(0.5, 1.0)
            self._not_before = now + delay
            with self._cv:
                self._force = True
            self.log.warning(f"sync failed, retrying in {delay:.1f} s: {message}",
                             fields={"failures": self.failures})
            state = "retrying"
        else:
            delay = PERMANENT_RETRY
            self._not_before = now + delay
            level = logging.ERROR
            if not isinstance(exc, (ReplicatorError, OSError)):
                self.log.log(level, f"sync failed (internal error): {message}", exc_info=exc)
            else:
                self.log.log(level, f"sync failed (not retryable; next try on change or rescan, not before "
                                    f"{delay:g} s): {message}", fields={"failures": self.failures})
            state = "failed"
        if self.svc.metrics is not None:
            self.svc.metrics.errors.labels(name, "retryable" if retryable else "permanent").inc()
        self._set(state=state, last_error=message, last_error_time=time.time(), failures=self.failures,
                  next_retry=time.time() + delay)

    def _refused(self, exc: SourceVanished) -> None:
        """The source looks vanished or replaced: failed, not retried with backoff; the next rescan or
        scheduled run looks again, and commits once the source is back (or confirmed by hand)."""
        job = self.job
        self.failures += 1
        now = time.monotonic()
        if job.continuous:
            delay = min(PERMANENT_RETRY, job.rescan_interval)
            self._not_before = now + delay
        else:
            delay = job.interval  # type: ignore[assignment]
            self._not_before = 0.0
        how = ""
        if exc.reason != "marker":  # a missing marker is not confirmed away
            how = f"; to commit the source as it is now: {confirm_command(job, self.svc.config.state_dir)}"
        self.log.error(f"source refused ({exc.reason}): {exc}; checking again at the next "
                       f"{'rescan' if job.continuous else 'scheduled run'} (in {delay:g} s){how}",
                       fields={"failures": self.failures})
        if self.svc.metrics is not None:
            self.svc.metrics.errors.labels(job.name, "permanent").inc()
            self.svc.metrics.refused(job.name, exc.reason)
        self._set(state="failed", last_error=str(exc), last_error_time=time.time(), failures=self.failures,
                  next_retry=time.time() + delay, refused=exc.reason)

    def _set(self, **changes: Any) -> None:
        self.info.update(changes)
        self.svc.write_status()


class Service:
    """The daemon process: configuration, job threads, signals, status file, metrics endpoint."""

    def __init__(self, config_path: str, log_format: str | None = None, notifier: Notifier | None = None) -> None:
        self.config_path = config_path
        self.log_format = log_format
        self.notifier = notifier or Notifier(None)  # systemd Type=notify (app/sdnotify.py)
        self.config: DaemonConfig = load_config(config_path)  # ConfigError: refuse to start
        self.metrics: Any = None  # daemon.metrics.Metrics when metrics_listen is set
        self.runners: dict[str, JobRunner] = {}
        self._status_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._reload = False
        self.log = logging.getLogger(LOGGER)
        self.started = time.time()
        remember_unlocked()  # scrypt once per key slot and passphrase, not at every sync (repo/keyring.py)

    def metrics_inc(self, what: str, job: str, n: float) -> None:
        if self.metrics is not None:
            getattr(self.metrics, what).labels(job).inc(n)

    def write_status(self) -> None:
        jobs = {name: r.snapshot_info() for name, r in list(self.runners.items())}
        doc = {"pid": os.getpid(), "updated": time.time(), "started": self.started, "config": self.config.path,
               "jobs": jobs}
        with self._status_lock:
            try:
                write_status(self.config.state_dir, doc)
            except OSError as exc:
                self.log.error(f"cannot write the status file in {self.config.state_dir}: {exc}")
            if not self._stop:
                self.notifier.status(status_line(jobs))

    def _start_job(self, job: JobConfig, previous: dict | None = None) -> None:
        runner = JobRunner(job, self, previous)
        self.runners[job.name] = runner
        if self.metrics is not None:
            self.metrics.watch_job(job.name, runner.lag, lambda: runner.info)
            self.metrics.refused(job.name, None)
        runner.start()
        self.log.info(f"job {job.name}: {job.source} -> {job.destination} "
                      f"({'continuous' if job.continuous else f'every {job.interval:g} s'})")

    def _stop_jobs(self, names: list[str], grace: float = STOP_GRACE, forget: bool = True) -> list[str]:
        """Stop the runners; :returns: the names of those still running after ``grace`` seconds."""
        runners = [self.runners[n] for n in names]
        for r in runners:
            r.stop()
        deadline = time.monotonic() + grace
        for r in runners:
            r.join(max(0.0, deadline - time.monotonic()))
            if r.is_alive():
                self.log.warning(f"job {r.job.name}: sync still running after {grace:g} s; abandoning it "
                                 "(nothing partial is committed)")
        stuck = [r.job.name for r in runners if r.is_alive()]
        if not forget:
            return stuck
        for n in names:
            del self.runners[n]
            if self.metrics is not None:
                self.metrics.forget(n)
        return stuck

    def _on_signal(self, signum, _frame) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._stop = True
        self._wake.set()

    def reload(self) -> None:
        try:
            new = load_config(self.config_path)
        except ReplicatorError as exc:
            self.log.error(f"configuration reload failed, keeping the running configuration: {exc}")
            return
        old = self.config
        for what in ("state_dir", "metrics_listen"):
            if getattr(new, what) != getattr(old, what):
                self.log.warning(f"reload: {what} changed; it takes effect at the next restart")
        new = DaemonConfig(path=new.path, state_dir=old.state_dir, metrics_listen=old.metrics_listen,
                           log_format=new.log_format, audit_log=new.audit_log, jobs=new.jobs)
        old_jobs = {j.name: j for j in old.jobs}
        new_jobs = {j.name: j for j in new.jobs}
        gone = [n for n in old_jobs if n not in new_jobs or new_jobs[n] != old_jobs[n]]
        previous = {n: dict(self.runners[n].info) for n in gone if n in self.runners}
        self._stop_jobs([n for n in gone if n in self.runners])
        self.config = new
        if self.log_format is None:
            setup_logging(new.log_format)
        for name, job in new_jobs.items():
            if name not in self.runners:
                self._start_job(job, previous.get(name) if name in old_jobs else None)
        self.log.info(f"configuration reloaded: {len(new.jobs)} jobs "
                      f"({', '.join(sorted(gone)) or 'none'} stopped or restarted)")
        self.write_status()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT.  :returns: the exit code (0).  :raises UsageError: cannot start."""
        cfg = self.config
        setup_logging(self.log_format or cfg.log_format)
        try:
            os.makedirs(cfg.state_dir, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create state_dir {cfg.state_dir}: {exc.strerror}") from None
        if cfg.metrics_listen is not None:
            from replicator.daemon.metrics import Metrics

            self.metrics = Metrics()
            try:
                self.metrics.serve(*cfg.metrics_listen)
            except OSError as exc:
                raise UsageError(f"{cfg.path}: metrics_listen: cannot listen on "
                                 f"{cfg.metrics_listen[0]}:{cfg.metrics_listen[1]}: {exc.strerror}") from None
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            old = read_status(cfg.state_dir) or {}
        except ValueError:
            old = {}
        self.log.info(f"daemon started (pid {os.getpid()}, config {cfg.path}, state {cfg.state_dir}, metrics "
                      f"{'{}:{}'.format(*cfg.metrics_listen) if cfg.metrics_listen else 'off'})")
        for job in cfg.jobs:
            self._start_job(job, (old.get("jobs") or {}).get(job.name))
        self.write_status()
        notify = self.notifier
        notify.ready()  # the jobs are loaded and running (their STATUS= went with the status file above)
        while not self._stop:
            # The watchdog is pinged from this loop, not a thread of its own: a hung loop stops the pings.
            due = notify.tick()
            self._wake.wait(STATUS_PERIOD if due is None else min(STATUS_PERIOD, due))
            self._wake.clear()
            if self._reload and not self._stop:
                self._reload = False
                self.log.info("SIGHUP: reloading the configuration")
                notify.reloading()
                self.reload()
                notify.ready()
            self.write_status()
        notify.stopping("stopping: waiting for syncs in flight to finish or abandon")
        self.log.info("stopping: waiting for syncs in flight to finish or abandon")
        self.stuck = self._stop_jobs(list(self.runners), forget=False)
        self.write_status()
        if self.metrics is not None:
            self.metrics.close()
        self.log.info("daemon stopped")
        return 0


def status_line(jobs: dict[str, dict]) -> str:
    """What systemd shows as the daemon's Status: ``syncing a, b``, ``idle, last sync 2026-...Z``,
    ``failing a; last sync ...`` (``no sync yet`` before a first success)."""
    syncing = sorted(n for n, j in jobs.items() if j.get("state") == "syncing")
    if syncing:
        return f"syncing {', '.join(syncing)}"
    times = [j["last_success"] for j in jobs.values() if isinstance(j.get("last_success"), (int, float))]
    last = f"last sync {rfc3339(max(times))}" if times else "no sync yet"
    failing = sorted(n for n, j in jobs.items() if j.get("state") in ("failed", "retrying"))
    if failing:
        return f"failing {', '.join(failing)}; {last}"
    return f"idle, {last}"


def run_daemon(config_path: str, log_format: str | None = None) -> int:
    """Entry point for ``replicator daemon``.  :raises ConfigError: (exit 2) on a bad configuration."""
    service = Service(config_path, log_format, Notifier.from_env(os.environ))  # $NOTIFY_SOCKET, $WATCHDOG_USEC
    try:
        code = service.run()
    finally:
        service.notifier.close()
    if getattr(service, "stuck", None):
        # A sync that did not reach a cancellation point (e.g. waiting on the network) would keep
        # the interpreter from exiting (its worker threads are joined at exit).  Nothing partial is
        # committed by construction, so leave now.
        logging.shutdown()
        os._exit(code)
    return code

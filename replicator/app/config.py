"""The daemon's configuration file (TOML): frozen dataclasses validated at load.

Owns: parsing ``replicator.toml`` (tomllib, or tomli on Python 3.10) into
``DaemonConfig`` / ``JobConfig`` and every check that can be made before the
daemon starts.  An error names the file, the line and the key
(``FILE:LINE: KEY: what is wrong``) so an operator can fix it without
guessing; the daemon then refuses to start (exit code 2).

Must never: open repositories, connect anywhere, or start threads.  The
documented example is ``packaging/replicator.toml``; the reference is
docs/OPERATIONS.md ("Configuration file").
"""
from __future__ import annotations

import math
import os
import re
import socket
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from replicator.app.passphrase import PASSPHRASE_ENV, credential_path, split_command
from replicator.constants import DEFAULT_MAX_SHRINK, MAX_EXCLUDE_FILE_BYTES, MAX_STREAMS
from replicator.errors import UsageError
from replicator.repo.subset import parse_subset
from replicator.sync.options import SyncOptions, check_marker_name
from replicator.sync.select import check_tag_name, parse_exclude_file
from replicator.transport.url import is_remote, parse_rate, parse_url

DEFAULT_CONFIG = "/etc/replicator/replicator.toml"
DEFAULT_STATE_DIR = "/var/lib/replicator"
DEFAULT_METRICS = "127.0.0.1:9464"
LOG_FORMATS = ("text", "json")
JOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_EVERY_RE = re.compile(r"^every\s+(\d+(?:\.\d+)?)\s*(s|sec|secs|second|seconds|m|min|mins|minute|minutes|"
                       r"h|hour|hours)$")
_UNIT = {"s": 1, "m": 60, "h": 3600}

GLOBAL_KEYS = {"state_dir", "metrics_listen", "log_format", "audit_log", "job"}
JOB_KEYS = {"name", "source", "source_name", "destination", "excludes", "mode", "bwlimit", "identity",
            "known_hosts", "passphrase_file", "passphrase_command", "cache_dir", "debounce", "max_delay",
            "rescan_interval",
            "streams", "workers", "max_shrink", "require_marker", "spot_check", "spot_check_interval",
            "exclude_files", "exclude_if_present", "one_file_system"}


class ConfigError(UsageError):
    """{}"""


@dataclass(frozen=True)
class JobConfig:
    """One replication job: a source directory kept in sync with one destination."""

    name: str
    source: str
    destination: str  # a local repository path or ssh://USER@HOST:PORT/NAME
    source_name: str  # the source name recorded in snapshots
    excludes: tuple[str, ...] = ()
    exclude_files: tuple[str, ...] = ()  # absolute paths, read at each sync (read_exclude_file)
    exclude_if_present: tuple[str, ...] = ()  # a directory holding one of these names is left out
    one_file_system: bool = False  # do not enter other filesystems below the source
    interval: float | None = None  # None: continuous (watch + rescan); else seconds between syncs
    bwlimit: int | None = None  # bytes per second (ssh only)
    identity: str | None = None
    known_hosts: str | None = None
    passphrase_file: str | None = None  # else passphrase_command, $REPLICATOR_PASSPHRASE, the systemd credential
    passphrase_command: str | None = None  # run without a shell (app/passphrase.py); its stdout is the passphrase
    cache_dir: str | None = None  # else STATE_DIR/cache
    debounce: float = 2.0  # seconds of quiet after a change before syncing
    max_delay: float = 10.0  # ... but never wait longer than this after the first change
    rescan_interval: float = 600.0  # continuous mode: full sync at least this often
    streams: int = 4
    workers: int | None = None
    max_shrink: float = DEFAULT_MAX_SHRINK  # refuse a sync that lost more than this share of the files
    require_marker: str | None = None  # a name that must exist in the source root
    spot_check: str | None = None  # "N" packs or "P%": read back and check after a sync (verify --read-data-subset)
    spot_check_interval: float = 86400.0  # seconds between spot checks

    @property
    def remote(self) -> bool:
        return self.destination.startswith("ssh://")

    @property
    def continuous(self) -> bool:
        return self.interval is None


@dataclass(frozen=True)
class DaemonConfig:
    path: str
    state_dir: str
    metrics_listen: tuple[str, int] | None  # None: no metrics endpoint
    log_format: str
    audit_log: str | None  # None: no audit log
    jobs: tuple[JobConfig, ...] = field(default_factory=tuple)

    def job(self, name: str) -> JobConfig:
        for j in self.jobs:
            if j.name == name:
                return j
        raise KeyError(name)


class Locator:
    """Finds the line of a key in the TOML text (tomllib does not keep positions).

    ``table`` names the array of tables (``[[job]]`` for the daemon, ``[[repo]]`` for ``serve --config``)."""

    _HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.-]+)\s*\]\]?")

    def __init__(self, text: str, table: str = "job") -> None:
        self.lines = text.splitlines()
        self._table = re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]")
        self._starts = [i for i, line in enumerate(self.lines) if self._HEADER.match(line)]
        self._tables = [i for i in self._starts if self._table.match(self.lines[i])]

    def _section(self, job: int | None) -> tuple[int, int]:
        """Line range (0-based, end exclusive) of the top level or of the job-th [[table]]."""
        starts = self._starts
        if job is None:
            return 0, starts[0] if starts else len(self.lines)
        jobs = self._tables
        if job >= len(jobs):
            return 0, 0
        begin = jobs[job]
        later = [i for i in starts if i > begin]
        return begin, later[0] if later else len(self.lines)

    def line(self, key: str | None, job: int | None = None) -> int:
        begin, end = self._section(job)
        if key is not None:
            pat = re.compile(rf'^\s*["\']?{re.escape(key)}["\']?\s*=')
            for i in range(begin, end):
                if pat.match(self.lines[i]):
                    return i + 1
        return begin + 1 if job is not None else 1


def toml_str(table: dict, key: str, index: int | None, fail: Callable[..., None], *, section: str,
             default: Any = None, required: bool = False, nonempty: bool = False) -> Any:
    """``table[key]`` as a string, ``default`` when absent; ``fail(key, message, index, label=...)`` (which raises)
    on a missing required key, a value that is not a string, or an empty one when ``required`` or ``nonempty``.
    ``section`` names the array of tables (``job``, ``repo``) in the message."""
    if key not in table:
        if required:
            fail(None, f"missing required key {key!r}", index, label=f"{section}[{index}].{key}")
        return default
    value = table[key]
    if not isinstance(value, str):
        fail(key, f"must be a string, not {type(value).__name__}", index)
    if (required or nonempty) and not value.strip():
        fail(key, "must not be empty", index)
    return value


def read_toml(path: str, table: str = "job", error: type[ConfigError] = ConfigError) -> tuple[dict, Locator]:
    """The parsed TOML file at ``path`` and a Locator over its text (arrays of tables named ``table``).

    :raises error: ``FILE: cannot read the configuration: why`` or ``FILE:LINE: TOML syntax error: what``.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise error(f"{path}: cannot read the configuration: {exc.strerror}") from None
    text = raw.decode("utf-8", errors="replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        line = m.group(1) if m else "1"
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise error(f"{path}:{line}: TOML syntax error: {msg}") from None
    return data, Locator(text, table)


def parse_mode(text: str) -> float | None:
    """``"continuous"`` -> None; ``"every 15 minutes"`` -> 900.0.  :raises ValueError:"""
    t = text.strip().lower()
    if t == "continuous":
        return None
    m = _EVERY_RE.match(t)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f'bad mode {text!r} (expected "continuous" or "every N seconds|minutes|hours")')
    return float(m.group(1)) * _UNIT[m.group(2)[0]]


def parse_listen(text: str) -> tuple[str, int] | None:
    """``"127.0.0.1:9464"`` -> (host, port); ``"off"`` -> None.  :raises ValueError:"""
    if text.strip().lower() in ("off", "none", ""):
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f'bad address {text!r} (expected HOST:PORT or "off")')
    return host.strip("[]"), int(port)


def load_config(path: str, env: Mapping[str, str] | None = None) -> DaemonConfig:
    """Read and validate the configuration file.

    :param env: the environment (for the $REPLICATOR_PASSPHRASE check); default os.environ.
    :raises ConfigError: ``FILE:LINE: KEY: message`` for the first problem found.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    data, loc = read_toml(path)

    def fail(key: str | None, message: str, job: int | None = None, label: str | None = None) -> None:
        where = label or (f"job[{job}].{key}" if job is not None and key else key or "job")
        raise ConfigError(f"{path}:{loc.line(key, job)}: {where}: {message}")

    for key in data:
        if key not in GLOBAL_KEYS:
            fail(key, f"unknown key (known: {', '.join(sorted(GLOBAL_KEYS - {'job'}))}, [[job]])")

    def get_str(table: dict, key: str, job: int | None, default: Any = None, required: bool = False) -> Any:
        return toml_str(table, key, job, fail, section="job", default=default, required=required)

    def get_num(table: dict, key: str, job: int | None, default: float, minimum: float,
                maximum: float | None = None, unit: str = "") -> float:
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(key, f"must be a number, not {type(value).__name__}", job)
        if not math.isfinite(value):  # TOML has nan and inf; nan compares false with every bound
            fail(key, f"must be a finite number, not {value}", job)
        if value < minimum:
            fail(key, f"must be at least {minimum}", job)
        if maximum is not None and value > maximum:
            fail(key, f"must be {minimum:g} to {maximum:g}{unit}, not {value:g}", job)
        return float(value)

    def get_int(table: dict, key: str, job: int | None, default: int, minimum: int, maximum: int) -> int:
        if key not in table:
            return default
        value = table[key]
        if type(value) is not int:  # not 2.5, not true
            fail(key, f"must be an integer, {minimum} to {maximum}, not {value!r}", job)
        if not minimum <= value <= maximum:
            fail(key, f"must be {minimum} to {maximum}, not {value}", job)
        return value

    state_dir = os.path.abspath(get_str(data, "state_dir", None, DEFAULT_STATE_DIR))
    log_format = get_str(data, "log_format", None, "text")
    if log_format not in LOG_FORMATS:
        fail("log_format", f"must be one of {', '.join(LOG_FORMATS)}")
    try:
        metrics = parse_listen(get_str(data, "metrics_listen", None, DEFAULT_METRICS))
    except ValueError as exc:
        fail("metrics_listen", str(exc))
    audit = get_str(data, "audit_log", None, os.path.join(state_dir, "audit.jsonl"))
    audit = None if audit.strip().lower() in ("off", "") else os.path.abspath(audit)

    tables = data.get("job", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        fail("job", "must be an array of tables ([[job]] sections)")
    if not tables:
        fail(None, "no [[job]] section: nothing to replicate", label="job")
    jobs: list[JobConfig] = []
    names: set[str] = set()
    for i, t in enumerate(tables):
        for key in t:
            if key not in JOB_KEYS:
                fail(key, f"unknown key (known: {', '.join(sorted(JOB_KEYS))})", i)
        name = get_str(t, "name", i, required=True)
        if not JOB_NAME_RE.match(name):
            fail("name", f"bad job name {name!r} (letters, digits, '_', '.', '-'; at most 64)", i)
        if name in names:
            fail("name", f"duplicate job name {name!r}", i)
        names.add(name)
        source = os.path.abspath(get_str(t, "source", i, required=True))
        dest = get_str(t, "destination", i, required=True)
        if is_remote(dest):
            try:
                parse_url(dest, what="destination")
            except UsageError as exc:
                fail("destination", str(exc), i)
        else:
            dest = os.path.abspath(dest)
        excludes = t.get("excludes", [])
        if not isinstance(excludes, list) or not all(isinstance(e, str) for e in excludes):
            fail("excludes", "must be a list of glob strings", i)
        exclude_files = t.get("exclude_files", [])
        if not isinstance(exclude_files, list) or not all(isinstance(e, str) and e for e in exclude_files):
            fail("exclude_files", "must be a list of file paths (one pattern a line in each)", i)
        tags = t.get("exclude_if_present", [])
        if not isinstance(tags, list):
            fail("exclude_if_present", "must be a list of file names", i)
        for tag in tags:
            try:
                check_tag_name(tag)
            except UsageError as exc:
                fail("exclude_if_present", str(exc).removeprefix("sync: --exclude-if-present needs "), i)
        one_fs = t.get("one_file_system", False)
        if type(one_fs) is not bool:
            fail("one_file_system", f"must be true or false, not {one_fs!r}", i)
        try:
            interval = parse_mode(get_str(t, "mode", i, "continuous"))
        except ValueError as exc:
            fail("mode", str(exc), i)
        bw = get_str(t, "bwlimit", i)
        bwlimit = None
        if bw is not None:
            try:
                bwlimit = parse_rate(bw)
            except UsageError as exc:
                fail("bwlimit", str(exc), i)
        identity = get_str(t, "identity", i)
        known_hosts = get_str(t, "known_hosts", i)
        if dest.startswith("ssh://"):
            if not identity:
                fail(None, "an ssh:// destination needs identity = KEY FILE", i, label=f"job[{i}].identity")
            if not known_hosts:
                fail(None, "an ssh:// destination needs known_hosts = FILE (pin the host key first with "
                           "'replicator sync ... --accept-host-key')", i, label=f"job[{i}].known_hosts")
        passphrase_file = get_str(t, "passphrase_file", i)
        passphrase_command = get_str(t, "passphrase_command", i)
        if passphrase_command is not None:
            if not passphrase_command.strip():
                fail("passphrase_command", "must not be empty", i)
            try:
                split_command(passphrase_command)
            except UsageError as exc:
                fail("passphrase_command", str(exc), i)
        if (passphrase_file is None and passphrase_command is None and not environ.get(PASSPHRASE_ENV)
                and credential_path(environ) is None):
            fail(None, "no passphrase: set passphrase_file or passphrase_command (or $REPLICATOR_PASSPHRASE, or "
                       "the systemd credential replicator-passphrase in $CREDENTIALS_DIRECTORY)", i,
                 label=f"job[{i}].passphrase_file")
        streams = get_int(t, "streams", i, 4, 1, MAX_STREAMS)
        workers = t.get("workers")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            fail("workers", "must be a positive integer", i)
        debounce = get_num(t, "debounce", i, 2.0, 0)
        max_delay = get_num(t, "max_delay", i, max(10.0, debounce), 0)
        if max_delay < debounce:
            fail("max_delay", f"must be at least debounce ({debounce})", i)
        cache = get_str(t, "cache_dir", i)
        max_shrink = get_num(t, "max_shrink", i, DEFAULT_MAX_SHRINK, 0, 1, " (a share of the files: 0.5 = 50%)")
        marker = get_str(t, "require_marker", i)
        if marker is not None:
            try:
                check_marker_name(marker)
            except UsageError as exc:
                fail("require_marker", str(exc).removeprefix("sync: "), i)
        spot = get_str(t, "spot_check", i)
        if spot is not None:
            try:
                parse_subset(spot)
            except ValueError as exc:
                fail("spot_check", str(exc).replace("--read-data-subset", "spot_check"), i)
        jobs.append(JobConfig(
            name=name, source=source, destination=dest,
            source_name=get_str(t, "source_name", i, f"{socket.gethostname()}:{source}"),
            excludes=tuple(excludes), interval=interval, bwlimit=bwlimit,
            exclude_files=tuple(os.path.abspath(e) for e in exclude_files), exclude_if_present=tuple(tags),
            one_file_system=one_fs,
            identity=os.path.abspath(identity) if identity else None,
            known_hosts=os.path.abspath(known_hosts) if known_hosts else None,
            passphrase_file=os.path.abspath(passphrase_file) if passphrase_file else None,
            passphrase_command=passphrase_command,
            cache_dir=os.path.abspath(cache) if cache else None,
            debounce=debounce, max_delay=max_delay,
            rescan_interval=get_num(t, "rescan_interval", i, 600.0, 1), streams=streams, workers=workers,
            max_shrink=max_shrink, require_marker=marker, spot_check=spot,
            spot_check_interval=get_num(t, "spot_check_interval", i, 86400.0, 60)))
    return DaemonConfig(path=os.path.abspath(path), state_dir=state_dir, metrics_listen=metrics,
                        log_format=log_format, audit_log=audit, jobs=tuple(jobs))


def read_exclude_file(path: str) -> tuple[str, ...]:
    """The patterns of the exclude file at ``path`` (``sync --exclude-file``, a job's ``exclude_files``;
    syntax in sync/select.py ``parse_exclude_file``), names as the file system's bytes decode.

    :raises UsageError: ``exclude file PATH: what is wrong`` (missing, not a regular file, unreadable,
        larger than MAX_EXCLUDE_FILE_BYTES, NUL bytes in it).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # NONBLOCK: a FIFO never blocks
    except FileNotFoundError:
        raise UsageError(f"exclude file {path}: does not exist") from None
    except OSError as exc:
        raise UsageError(f"exclude file {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise UsageError(f"exclude file {path}: is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise UsageError(f"exclude file {path}: is not a regular file")
        chunks = []
        size = 0
        while size <= MAX_EXCLUDE_FILE_BYTES and (piece := os.read(fd, 1 << 16)):
            chunks.append(piece)
            size += len(piece)
    except OSError as exc:
        raise UsageError(f"exclude file {path}: cannot read it: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > MAX_EXCLUDE_FILE_BYTES:
        raise UsageError(f"exclude file {path}: is larger than {MAX_EXCLUDE_FILE_BYTES >> 10} KiB "
                         "(one pattern a line is expected)")
    return parse_exclude_file(b"".join(chunks).decode("utf-8", "surrogateescape"), path)


def job_sync_options(job: JobConfig, cache_dir: str) -> SyncOptions:
    """What one sync of ``job`` does, as ``replicator sync`` would be told it; the job's exclude files
    are read now (an edit counts from the next sync on, without a reload).

    :raises UsageError: an exclude file that cannot be read (``read_exclude_file``).
    """
    patterns = list(job.excludes)
    for path in job.exclude_files:
        patterns.extend(read_exclude_file(path))
    return SyncOptions(job.source_name, excludes=tuple(patterns), cache_dir=cache_dir, workers=job.workers,
                       max_shrink=job.max_shrink, require_marker=job.require_marker,
                       exclude_if_present=job.exclude_if_present, one_file_system=job.one_file_system)


def _file_problem(path: str, directory: bool = False) -> str | None:
    """What is wrong with a file (or directory) the daemon will need, or None."""
    try:
        if directory:
            with os.scandir(path):
                pass
        else:
            with open(path, "rb") as f:
                if not f.read(1):
                    return f"{path} is empty"
    except FileNotFoundError:
        return f"{path} does not exist"
    except NotADirectoryError:
        return f"{path} is not a directory"
    except IsADirectoryError:
        return f"{path} is a directory, not a file"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    return None


def check_files(cfg: DaemonConfig, *, sources: bool = True) -> list[str]:
    """Every job's source directory, identity, known_hosts and passphrase file that is missing,
    unreadable or empty, and every exclude file that ``read_exclude_file`` refuses, one
    ``FILE:LINE: job[N].KEY: what`` per problem, all at once.

    Only ``daemon --check`` and the daemon's start call this: parsing alone never looks at these
    files (other commands and tests load configurations naming paths of another machine).
    ``sources=False`` (the daemon's start): a source not there yet (a volume mounted late at
    boot) fails only its own job, at each run, instead of keeping every job down."""
    try:
        with open(cfg.path, "rb") as f:
            loc = Locator(f.read().decode("utf-8", errors="replace"))
    except OSError:
        loc = Locator("")
    problems = []
    for i, job in enumerate(cfg.jobs):
        for key, path, directory in (("source", job.source, True), ("identity", job.identity, False),
                                     ("known_hosts", job.known_hosts, False),
                                     ("passphrase_file", job.passphrase_file, False)):
            if key == "source" and not sources:
                continue
            problem = _file_problem(path, directory) if path else None
            if problem is not None:
                problems.append(f"{cfg.path}:{loc.line(key, i)}: job[{i}].{key}: {problem}")
        for path in job.exclude_files:
            try:
                read_exclude_file(path)
            except UsageError as exc:
                problems.append(f"{cfg.path}:{loc.line('exclude_files', i)}: job[{i}].exclude_files: {exc}")
    return problems

"""The receiver's configuration file (``replicator serve --config FILE``): frozen dataclasses validated at load.

Owns: parsing the serve TOML (through ``app/config.py``'s ``read_toml`` and ``Locator``, the one TOML
reader) into ``ServeConfig`` / ``ServeRepo``, and the checks of the files it names.  Errors are one line,
``FILE:LINE: KEY: what is wrong``, as the daemon's.  ``serve`` refuses to start on one (exit 2); on SIGHUP
it logs it and keeps the configuration it has (cli/serve_cmd.py).

Must never: open repositories, listen, or start threads.  Reference: docs/OPERATIONS.md ("Serving many
repositories: serve --config").
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from replicator.app.config import JOB_NAME_RE, LOG_FORMATS, ConfigError, parse_listen, read_toml, toml_str
from replicator.errors import UsageError
from replicator.store.location import is_object_url
from replicator.transport.url import parse_size

DEFAULT_SERVE_METRICS = "127.0.0.1:9469"  # beside the daemon's 9464, so both run on one host
SERVE_KEYS = {"listen", "host_key", "authorized_keys", "metrics_listen", "log_format", "repo"}
REPO_KEYS = {"name", "url", "authorized_keys", "quota"}


class ServeConfigError(ConfigError):
    """{}"""


@dataclass(frozen=True)
class ServeRepo:
    """One served repository (a tenant)."""

    name: str
    url: str  # an absolute directory or s3://BUCKET/PREFIX
    authorized_keys: str | None = None  # keys in this file may read and write this repository only
    quota: int | None = None  # bytes of packs it may hold; None: no quota
    line: int = 0  # of its [[repo]] header, for "defined twice" errors


@dataclass(frozen=True)
class ServeConfig:
    path: str
    listen: tuple[str, int] | None = None
    host_key: str | None = None
    authorized_keys: str | None = None  # keys with replicator-repos="NAME:rw,..." (as --authorized-keys)
    metrics_listen: tuple[str, int] | None = None
    log_format: str = "text"
    repos: tuple[ServeRepo, ...] = ()


def _abs(path: str, base: str) -> str:
    """Relative paths in the file are relative to the file's directory (where the operator wrote them)."""
    return path if os.path.isabs(path) or is_object_url(path) else os.path.normpath(os.path.join(base, path))


def load_serve_config(path: str) -> ServeConfig:
    """Read and validate ``path``.  :raises ServeConfigError: ``FILE:LINE: KEY: message``, the first problem."""
    data, loc = read_toml(path, table="repo", error=ServeConfigError)
    base = os.path.dirname(os.path.abspath(path))

    def fail(key: str | None, message: str, i: int | None = None, label: str | None = None) -> None:
        where = label or (f"repo[{i}].{key}" if i is not None else key or "repo")
        raise ServeConfigError(f"{path}:{loc.line(key, i)}: {where}: {message}")

    def get_str(table: dict, key: str, i: int | None, required: bool = False) -> str | None:
        return toml_str(table, key, i, fail, section="repo", required=required, nonempty=True)

    for key in data:
        if key not in SERVE_KEYS:
            fail(key, f"unknown key (known: {', '.join(sorted(SERVE_KEYS - {'repo'}))}, [[repo]])")
    listen = metrics = None
    try:
        text = get_str(data, "listen", None)
        listen = parse_listen(text) if text is not None else None
    except ValueError as exc:
        fail("listen", str(exc))
    try:
        metrics = parse_listen(get_str(data, "metrics_listen", None) or DEFAULT_SERVE_METRICS)
    except ValueError as exc:
        fail("metrics_listen", str(exc))
    log_format = get_str(data, "log_format", None) or "text"
    if log_format not in LOG_FORMATS:
        fail("log_format", f"must be one of {', '.join(LOG_FORMATS)}")
    host_key = get_str(data, "host_key", None)
    keys = get_str(data, "authorized_keys", None)

    tables = data.get("repo", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        fail("repo", "must be an array of tables ([[repo]] sections)")
    repos: list[ServeRepo] = []
    first: dict[str, int] = {}
    for i, t in enumerate(tables):
        for key in t:
            if key not in REPO_KEYS:
                fail(key, f"unknown key (known: {', '.join(sorted(REPO_KEYS))})", i)
        name = get_str(t, "name", i, required=True)
        assert name is not None
        if not JOB_NAME_RE.match(name):
            fail("name", f"bad repository name {name!r} (letters, digits, '_', '.', '-'; at most 64)", i)
        if name in first:
            fail("name", f"repository {name!r} defined twice (first at line {first[name]})", i)
        first[name] = loc.line("name", i)
        url = get_str(t, "url", i, required=True)
        assert url is not None
        repo_keys = get_str(t, "authorized_keys", i)
        quota = t.get("quota")
        if quota is not None:
            if isinstance(quota, str):
                try:
                    quota = parse_size(quota)
                except UsageError as exc:
                    fail("quota", str(exc), i)
            elif isinstance(quota, bool) or not isinstance(quota, (int, float)) or not math.isfinite(quota):
                fail("quota", f"must be a number of bytes or a size with a unit (\"2TiB\"), not {quota!r}", i)
            if quota < 0:
                fail("quota", f"must be at least 0 bytes, not {quota}", i)
            quota = int(quota)
        repos.append(ServeRepo(name, _abs(url, base), _abs(repo_keys, base) if repo_keys else None, quota,
                               loc.line(None, i)))
    return ServeConfig(path=os.path.abspath(path), listen=listen, host_key=_abs(host_key, base) if host_key else None,
                       authorized_keys=_abs(keys, base) if keys else None, metrics_listen=metrics,
                       log_format=log_format, repos=tuple(repos))


def _unreadable(path: str) -> str | None:
    """Why ``path`` cannot be read as a file, or None (an empty keys file is valid: a tenant with no key yet)."""
    try:
        with open(path, "rb"):
            return None
    except FileNotFoundError:
        return f"{path} does not exist"
    except IsADirectoryError:
        return f"{path} is a directory, not a file"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"


def check_serve_files(cfg: ServeConfig) -> list[str]:
    """Every key file the configuration names that cannot be read, one ``FILE:LINE: KEY: what`` each."""
    from replicator.app.config import Locator

    try:
        with open(cfg.path, "rb") as f:
            loc = Locator(f.read().decode("utf-8", errors="replace"), "repo")
    except OSError:
        loc = Locator("", "repo")
    problems = []
    for key, path in (("host_key", cfg.host_key), ("authorized_keys", cfg.authorized_keys)):
        problem = _unreadable(path) if path else None
        if problem is not None:
            problems.append(f"{cfg.path}:{loc.line(key)}: {key}: {problem}")
    for i, repo in enumerate(cfg.repos):
        problem = _unreadable(repo.authorized_keys) if repo.authorized_keys else None
        if problem is not None:
            problems.append(f"{cfg.path}:{loc.line('authorized_keys', i)}: repo[{i}].authorized_keys: {problem}")
    return problems

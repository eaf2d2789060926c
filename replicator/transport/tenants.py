"""The repositories one receiver serves (its tenants), replaced whole on reload, and their running counts.

Owns: ``Tenant`` (name, storage URL, quota, its own authorized-keys file), ``Tenants`` (the current
table: ``get`` is what OPEN asks, ``replace`` swaps the table in one assignment, so a session sees
the old table or the new one, never a mix) and ``RepoStats`` per repository: bytes and number of
packs stored (counted once from the storage's listing, then kept as a running total by the sessions
that store or prune), last commit time per source tag, sessions open and opened, and requests refused
by reason.  ``serve`` reads these for its quota, and app/metrics.py for its metrics at each scrape.

Counts are by repository name and survive a reload that keeps the name and the URL; a new URL is
counted again.  Only what this process stores or prunes moves the total: a local sync or prune into a
served repository is seen at the next start (or reload with a new URL).

Must never: import asyncssh or cli/daemon, or list a repository more than once per URL.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from replicator.format import layout as L

NO_REPOSITORY = ""  # the repository label of refusals that name no served repository (bad OPEN, unknown key)


@dataclass(frozen=True)
class Tenant:
    name: str
    url: str
    quota: int | None = None  # bytes of packs; None: unlimited
    authorized_keys: str | None = None  # a key in this file may read and write this repository (only)


@dataclass
class RepoStats:
    """Running counts of one repository (any thread; ``lock`` guards every field)."""

    url: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    counted: bool = False  # bytes and packs hold the storage's listing plus what was stored since
    bytes: int = 0  # of packs (data/): what the quota limits
    packs: int = 0
    last_commit: dict[str, float] = field(default_factory=dict)  # source tag (hex) -> Unix time
    sessions: int = 0  # open now
    sessions_total: int = 0
    refused: Counter = field(default_factory=Counter)  # reason -> requests refused

    def count(self, storage) -> None:
        """Initialise bytes and packs from ``storage``'s listing, once (later calls return at once)."""
        with self.lock:
            if self.counted:
                return
        total = n = 0
        for name in storage.list(L.PACKS):
            if L.is_pack(name):
                total += storage.size(name)
                n += 1
        with self.lock:
            if not self.counted:
                self.bytes, self.packs, self.counted = self.bytes + total, self.packs + n, True

    def used(self) -> int:
        with self.lock:
            return self.bytes

    def stored(self, size: int) -> None:
        with self.lock:
            self.bytes += size
            self.packs += 1

    def deleted(self, size: int, packs: int) -> None:
        with self.lock:
            self.bytes = max(0, self.bytes - size)
            self.packs = max(0, self.packs - packs)

    def committed(self, tag: str, when: float | None = None) -> None:
        with self.lock:
            self.last_commit[tag] = time.time() if when is None else when

    def opened(self) -> None:
        with self.lock:
            self.sessions += 1
            self.sessions_total += 1

    def closed(self) -> None:
        with self.lock:
            self.sessions -= 1

    def refuse(self, reason: str) -> None:
        with self.lock:
            self.refused[reason] += 1

    def snapshot(self) -> dict:
        """A consistent copy for a metrics scrape."""
        with self.lock:
            return {"counted": self.counted, "bytes": self.bytes, "packs": self.packs,
                    "last_commit": dict(self.last_commit), "sessions": self.sessions,
                    "sessions_total": self.sessions_total, "refused": dict(self.refused)}


class Tenants:
    """The current table of served repositories (see module docstring)."""

    def __init__(self, tenants: Iterable[Tenant] = (), *, count_usage: bool = False) -> None:
        self.count_usage = count_usage  # count every repository's usage at its OPEN, not only those with a quota
        self._lock = threading.Lock()
        self._table: dict[str, Tenant] = {}
        self._stats: dict[str, RepoStats] = {}
        self.unnamed = RepoStats("")  # refusals before a served repository is known (NO_REPOSITORY)
        self.replace(tenants)

    @classmethod
    def from_urls(cls, repos: Mapping[str, str]) -> Tenants:
        """``{name: url}`` (the ``--repo`` flags alone): no quotas, no per-repository keys."""
        return cls(Tenant(name, url) for name, url in repos.items())

    def get(self, name: str) -> Tenant | None:
        return self._table.get(name)

    def __len__(self) -> int:
        return len(self._table)

    def names(self) -> list[str]:
        return list(self._table)

    def all(self) -> list[Tenant]:
        return list(self._table.values())

    def replace(self, tenants: Iterable[Tenant]) -> tuple[list[str], list[str]]:
        """Serve exactly ``tenants`` from now on.  :returns: (names added, names removed)."""
        table = {t.name: t for t in tenants}
        with self._lock:
            old = self._table
            for name, t in table.items():
                if name not in self._stats or self._stats[name].url != t.url:
                    self._stats[name] = RepoStats(t.url)
            self._table = table  # one assignment: OPEN sees the old table or the new one
            for name in set(self._stats) - set(table):
                if self._stats[name].sessions <= 0:
                    del self._stats[name]
        return sorted(set(table) - set(old)), sorted(set(old) - set(table))

    def stats(self, name: str) -> RepoStats:
        """The counts of repository ``name`` (served now, or still open in a session after a reload)."""
        with self._lock:
            found = self._stats.get(name)
            if found is None:
                found = self._stats[name] = RepoStats(self._table[name].url if name in self._table else "")
            return found

    def counts(self) -> dict[str, RepoStats]:
        """The counts of every repository served now, and of those a reload removed while a session of
        theirs is still open (a metrics scrape: O(repositories), no storage is read)."""
        with self._lock:
            return {name: stats for name, stats in self._stats.items()
                    if name in self._table or stats.sessions > 0}

    def uncounted(self) -> list[Tenant]:
        """Repositories whose usage has not been read from their storage yet."""
        return [t for t in self.all() if not self.stats(t.name).counted]

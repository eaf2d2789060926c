"""SyncOptions: what one sync of a source does, as the CLI and the daemon ask for it.

Plain values only, validated when built: a bad one raises ``UsageError``
with a one-line message, before anything is opened.  What belongs to one run
(the destination, an open state cache, a progress callback) is handed to
``replicator.sync.engine.SyncRun`` instead.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from replicator.constants import DEFAULT_MAX_SHRINK
from replicator.errors import UsageError
from replicator.sync.select import Selection, check_tag_name


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """How to sync a source.

    :param source: the source name recorded in the snapshot (``HOST:PATH`` by default in the CLI,
        ``source_name`` in the daemon); it also names the state cache.
    :param excludes: fnmatch patterns matched against each relative path and base name; an excluded
        directory is not descended.  Any iterable of strings; stored as a tuple.  The patterns of
        exclude files are read by the caller (app/config.py ``read_exclude_file``) and added here.
    :param exclude_if_present: plain names: a directory below the root holding one is left out with
        its contents (``CACHEDIR.TAG`` only with its signature; sync/select.py).
    :param one_file_system: do not enter directories on another filesystem than the root (``st_dev``);
        each such mount point is recorded as an empty directory.
    :param use_state: take files whose stat is unchanged from the state cache without reading them,
        and record the others.  False (``--no-cache``): read every file again and leave the cache alone.
    :param cache_dir: the directory holding the state cache (one file per destination id and source
        name).  None: no state cache is opened, unless ``SyncRun`` is handed an open one.
    :param workers: hashing/compression threads; None: the CPU count - 1, at least 1.
    :param max_shrink: refuse the snapshot (``SourceVanished``) when the source has lost more than
        this share of the files of its latest snapshot, 0 to 1 (1: never on the share alone; an
        empty source is still refused).
    :param require_marker: a name that must exist in the source root (file or directory, like
        syncthing's ``.stfolder``), or nothing is synced: it tells the volume from the empty
        directory it is mounted on.  None: no marker.
    :param confirm_source: commit even a source that looks vanished or replaced (empty, shrunk,
        on another filesystem): the operator has looked and says it is right.  A missing required
        marker is refused all the same.
    :param dry_run: walk and chunk, count what would be read and sent, and write nothing: no blob,
        tree or snapshot, no state-cache row (it is only read).  The destination should be opened
        read-only for it (app/destinations.py ``open_dry_run``).
    :param always_commit: commit a new snapshot even when nothing changed.  False (the default): a
        sync whose root tree and stats equal those of this site's last commit of the source commits
        nothing and reports that snapshot (repo/writer.py ``commit_snapshot``, docs/OPERATIONS.md).
    """

    source: str
    excludes: tuple[str, ...] = ()
    use_state: bool = True
    cache_dir: str | None = None
    workers: int | None = None
    max_shrink: float = DEFAULT_MAX_SHRINK
    require_marker: str | None = None
    confirm_source: bool = False
    exclude_if_present: tuple[str, ...] = ()
    one_file_system: bool = False
    dry_run: bool = False
    always_commit: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise UsageError(f"sync: the source name must be a non-empty string, not {self.source!r}")
        object.__setattr__(self, "excludes", _patterns(self.excludes))
        if not isinstance(self.use_state, bool):
            raise UsageError(f"sync: use_state must be true or false, not {self.use_state!r}")
        if self.cache_dir is not None and (not isinstance(self.cache_dir, str) or not self.cache_dir):
            raise UsageError(f"sync: the cache directory must be a non-empty path, not {self.cache_dir!r}")
        w = self.workers
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise UsageError(f"sync: workers must be a positive integer, not {w!r}")
        m = self.max_shrink
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or not 0 <= m <= 1:
            raise UsageError(f"sync: the share of files a source may lose must be a number from 0 to 1 "
                             f"(0.5 = 50%), not {m!r}")
        object.__setattr__(self, "max_shrink", float(m))
        if self.require_marker is not None:
            check_marker_name(self.require_marker)
        if not isinstance(self.confirm_source, bool):
            raise UsageError(f"sync: confirm_source must be true or false, not {self.confirm_source!r}")
        tags = self.exclude_if_present
        if isinstance(tags, (str, bytes)) or not isinstance(tags, (tuple, list)):
            raise UsageError(f"sync: exclude_if_present must be a list of file names, not {tags!r}")
        object.__setattr__(self, "exclude_if_present", tuple(check_tag_name(t) for t in tags))
        for key in ("one_file_system", "dry_run", "always_commit"):
            if not isinstance(getattr(self, key), bool):
                raise UsageError(f"sync: {key} must be true or false, not {getattr(self, key)!r}")

    def selection(self) -> Selection:
        """The compiled rules of what the walk leaves out (sync/select.py)."""
        return Selection(self.excludes, self.exclude_if_present, self.one_file_system)


def check_marker_name(name: object) -> str:
    """:returns: ``name``, a plain name for a file in the source root.  :raises UsageError:"""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UsageError(f"sync: the marker must be a plain file name in the source root (no '/'), not {name!r}")
    return name


def _patterns(excludes: Iterable[str]) -> tuple[str, ...]:
    if isinstance(excludes, (str, bytes)):  # one pattern where a list was meant: each letter would match
        raise UsageError(f"sync: excludes must be a list of glob patterns, not the single string {excludes!r}")
    try:
        patterns = tuple(excludes)
    except TypeError:
        raise UsageError(f"sync: excludes must be a list of glob patterns, not {type(excludes).__name__}") from None
    for p in patterns:
        if not isinstance(p, str):
            raise UsageError(f"sync: exclude patterns must be strings, not {p!r}")
    return patterns

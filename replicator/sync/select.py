"""Selection: which paths below a source root a sync leaves out, and why.

This module owns the rules, in one place, that ``sync`` and the daemon's jobs
apply during the walk (sync/walk.py asks; it never decides itself):

* **patterns** (``--exclude``, ``--exclude-file``, the job's ``excludes`` and
  ``exclude_files``): fnmatch globs matched, case-sensitively, against the
  relative path and against the base name; an excluded directory is not entered;
* **tagged directories** (``--exclude-if-present NAME``): a directory below
  the root that holds an entry NAME (of any kind, never followed) is left out
  with its contents.  ``CACHEDIR.TAG`` counts only as a regular file starting
  with the signature of the Cache Directory Tagging Specification, as restic,
  borg and GNU tar check it: a stray file of that name never hides data;
* **other filesystems** (``--one-file-system``): a directory whose ``st_dev``
  differs from the root's is a mount point; it is recorded as an empty
  directory and not entered, as ``rsync -x`` does.

Also the exclude-file syntax (``parse_exclude_file``: text in, patterns out;
the caller reads the file).  Must never: print, read argv or env, follow a
symlink, or open anything but a tag file that may be a CACHEDIR.TAG.
"""
from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

from replicator.constants import CACHEDIR_SIGNATURE, CACHEDIR_TAG
from replicator.errors import UsageError

# Why the walk left a path out (the ``why`` of ``on_excluded(relpath, why, what)``).
REASON_PATTERN = "pattern"  # what: the pattern that matched
REASON_TAGGED = "tagged"  # what: the tag name found in the directory
REASON_MOUNT = "mount"  # what: "" (the mount point itself is recorded, empty)

_TAG_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO never blocks


def parse_exclude_file(text: str, where: str) -> tuple[str, ...]:
    """The patterns of an exclude file: one per line, surrounding whitespace stripped.

    Blank lines and lines whose first non-blank character is ``#`` are ignored;
    ``\\r\\n`` line ends are accepted.  A pattern keeps the ``--exclude`` meaning.

    :param where: the file's path, for the message.
    :raises UsageError: the text holds NUL bytes (a binary file, not a list of patterns).
    """
    if "\0" in text:
        raise UsageError(f"exclude file {where}: is not a text file (it holds NUL bytes)")
    patterns = []
    for line in text.splitlines():
        pattern = line.strip()
        if pattern and not pattern.startswith("#"):
            patterns.append(pattern)
    return tuple(patterns)


def check_tag_name(name: object) -> str:
    """:returns: ``name``, a plain file name (as ``--exclude-if-present`` needs).  :raises UsageError:"""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UsageError(f"sync: --exclude-if-present needs a plain file name (no '/'), not {name!r}")
    return name


def _compile(patterns: Sequence[str]) -> re.Pattern[str] | None:
    # One alternation of fnmatch's own translations: what fnmatchcase would say for each pattern
    # (case-sensitive: the result must not depend on the platform's normcase), in one match call.
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


@dataclass(frozen=True, slots=True)
class Selection:
    """The compiled rules of one sync.  Build it from checked values (``SyncOptions.selection``).

    :param excludes: fnmatch patterns (from ``--exclude`` and the exclude files, in that order).
    :param exclude_if_present: plain names that tag a directory to be left out.
    :param one_file_system: do not enter a directory on another device than the root.
    """

    excludes: tuple[str, ...] = ()
    exclude_if_present: tuple[str, ...] = ()
    one_file_system: bool = False
    _any: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_any", _compile(self.excludes))

    def excluded(self, relpath: str, name: str) -> str | None:
        """:returns: the first pattern matching ``relpath`` or its base ``name``; None: not excluded."""
        if self._any is None or not (self._any.match(relpath) or self._any.match(name)):
            return None
        return next(p for p in self.excludes if fnmatch.fnmatchcase(relpath, p) or fnmatch.fnmatchcase(name, p))

    def tag_in(self, dir_fd: int, names: Sequence[str]) -> str | None:
        """:returns: the tag name that leaves out the directory open as ``dir_fd`` (listing ``names``),
        or None.  A CACHEDIR.TAG that cannot be read or lacks the signature does not count."""
        for tag in self.exclude_if_present:
            if tag in names and (tag != CACHEDIR_TAG or _is_cachedir_tag(dir_fd)):
                return tag
        return None

    def other_filesystem(self, root_dev: int, st: os.stat_result) -> bool:
        """Whether a directory lstat-ed as ``st`` is a mount point not to be entered."""
        return self.one_file_system and st.st_dev != root_dev


def _is_cachedir_tag(dir_fd: int) -> bool:
    """A regular file CACHEDIR.TAG in ``dir_fd`` (not through a symlink) starting with the signature."""
    try:
        fd = os.open(CACHEDIR_TAG, _TAG_FLAGS, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return os.pread(fd, len(CACHEDIR_SIGNATURE), 0) == CACHEDIR_SIGNATURE
    except OSError:
        return False
    finally:
        os.close(fd)

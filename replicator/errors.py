"""Exception hierarchy.

Every error the program can report is a ReplicatorError subclass.  Its
docstring is the message template, ``exit_code`` says how the CLI exits and
``retryable`` tells the daemon whether trying again may help.  Lower layers
raise these; only the CLI and the daemon print them (one line, no traceback).
IntegrityError is never retried and never downgraded to a warning.
"""
from __future__ import annotations

from replicator import constants as C


class ReplicatorError(Exception):
    """{}"""

    exit_code = C.EXIT_USAGE
    retryable = False

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.args = args

    def __str__(self) -> str:
        template = (self.__doc__ or "{}").strip().splitlines()[0]
        try:
            return template.format(*self.args)
        except (IndexError, KeyError):  # pragma: no cover - template/arg mismatch
            return " ".join(str(a) for a in self.args) or template


class UsageError(ReplicatorError):
    """{}"""

    exit_code = C.EXIT_USAGE


class RepositoryError(ReplicatorError):
    """repository {}: {}"""

    exit_code = C.EXIT_REPOSITORY


class RepositoryNotFound(RepositoryError):
    """no replicator repository at {} (run 'replicator init' first)"""


class RepositoryExists(RepositoryError):
    """{} already exists and is not empty; refusing to initialise a repository there"""


class UnsupportedVersion(RepositoryError):
    """{} has format version {}, this replicator reads versions {} to {}"""


class RepositoryLocked(RepositoryError):
    """repository {} is locked by another process ({}); try again when it has finished"""

    retryable = True


class WrongPassphrase(ReplicatorError):
    """wrong passphrase for repository {}"""

    exit_code = C.EXIT_PASSPHRASE


class IntegrityError(ReplicatorError):
    """integrity error: {}"""

    exit_code = C.EXIT_INTEGRITY


class StorageError(ReplicatorError):
    """storage error: {}"""

    exit_code = C.EXIT_STORAGE
    retryable = True


class DiskFull(StorageError):
    """no space left on device while writing {}; nothing committed was lost, free space and run again"""

    retryable = False


class ObjectNotFound(StorageError):
    """object {} not found in the repository"""

    retryable = False


class Interrupted(ReplicatorError):
    """interrupted; everything committed before is intact and the next run resumes"""

    exit_code = C.EXIT_INTERRUPTED


class HistoryDiverged(ReplicatorError):
    """{}: {}; nothing committed (if that history is right, sync once with --reset-lineage)"""

    exit_code = C.EXIT_DIVERGED


class Fenced(HistoryDiverged):
    """{}: {}; nothing committed"""


class LineageConflict(HistoryDiverged):
    """{}: {}; nothing committed (the next sync reads the new history and checks it again)"""

    retryable = True


class MissingChunks(IntegrityError):
    """snapshot {} references {} missing chunks; not committed"""


class AddressInUse(ReplicatorError):
    """cannot listen on {}: address already in use (another replicator serve, or another program, listens there)"""

    exit_code = C.EXIT_ADDRESS_IN_USE
    retryable = True


class ReadOnly(RepositoryError):
    """repository {}: {} needs a write session (opened read-only)"""


class SourceVanished(ReplicatorError):
    """{}"""

    # Not retryable: waiting does not bring a volume back.  The daemon tries again at the
    # next rescan, change or schedule, and commits as soon as the source looks like itself.
    exit_code = C.EXIT_SOURCE
    retryable = False
    REASONS = ("marker", "unreadable", "filesystem", "empty", "shrunk")  # the metric's ``reason`` label

    def __init__(self, reason: str, message: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        super().__init__(message)
        self.reason = reason

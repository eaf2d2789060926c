"""Append-only audit log: one JSON line per event, each chained to the previous one.

Owns the audit file format, shared by the daemon (one line per committed
snapshot) and, later, by the restore and prune commands: call
``append_audit(path, record)``; ``verify_audit(path)`` checks the chain.
Depends on nothing but the standard library and replicator/times.py (its ``time``
field is RFC 3339 UTC), so any command may use it.

Format (docs/OPERATIONS.md "Audit log"): UTF-8, one JSON object per line,
keys sorted, no spaces.  Every line has ``"prev"``: the SHA-256 (hex) of the
previous line's bytes without its newline; the first line chains to 64
zeros.  A modified, inserted or deleted line breaks the chain at the next
line; a line removed from the very end is only detectable against a copy of
the last hash kept elsewhere (``verify_audit(..., head=...)``).

Appends hold an exclusive flock on the file (several processes may append)
and are fsynced before returning.
Must never: rewrite or truncate the file.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass

from replicator.times import rfc3339

GENESIS = "0" * 64
_TAIL = 1 << 16  # an audit line is far shorter than this


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def _last_line(fd: int) -> bytes | None:
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    start = max(0, size - _TAIL)
    data = os.pread(fd, size - start, start).rstrip(b"\n")
    nl = data.rfind(b"\n")
    if nl < 0 and start > 0:
        raise ValueError("audit log: last line longer than 64 KiB")
    return data[nl + 1:]


def append_audit(path: str, record: dict) -> str:
    """Append ``record`` (plus ``time`` if absent, and ``prev``) as one line; fsync.

    :returns: the SHA-256 hex of the line written (the new head of the chain).
    :raises OSError: the file cannot be written; nothing half-written is left
        behind except on a crash mid-write, which verify reports as the last line.
    """
    doc = dict(record)
    doc.setdefault("time", rfc3339())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last = _last_line(fd)
        doc["prev"] = GENESIS if last is None else line_hash(last)
        line = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()
        os.write(fd, line + b"\n")
        os.fsync(fd)
        return line_hash(line)
    finally:
        os.close(fd)


@dataclass
class AuditCheck:
    ok: bool
    lines: int  # lines checked
    head: str  # hash of the last good line (GENESIS when empty)
    bad_line: int | None = None  # 1-based number of the first broken line
    problem: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def verify_audit(path: str, head: str | None = None) -> AuditCheck:
    """Check the hash chain.

    :param head: the expected hash of the last line, if a copy was kept elsewhere
        (detects lines removed from the end).
    :returns: an AuditCheck naming the first broken line, if any.
    :raises OSError: the file cannot be read.
    """
    prev = GENESIS
    n = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                return AuditCheck(False, n - 1, prev, n, "truncated line (no newline): a crash mid-append?")
            line = raw[:-1]
            try:
                doc = json.loads(line)
            except ValueError:
                return AuditCheck(False, n - 1, prev, n, "not a JSON object")
            if not isinstance(doc, dict) or not isinstance(doc.get("prev"), str):
                return AuditCheck(False, n - 1, prev, n, "no \"prev\" hash")
            if doc["prev"] != prev:
                return AuditCheck(False, n - 1, prev, n, "chain broken: \"prev\" is not the SHA-256 of the line "
                                                         "before (a line was modified, inserted or deleted)")
            prev = line_hash(line)
    if head is not None and head != prev:
        return AuditCheck(False, n, prev, n + 1, "the last line is not the expected head (lines removed at the end?)")
    return AuditCheck(True, n, prev)

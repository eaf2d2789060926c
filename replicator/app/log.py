"""Logging for long-running commands: one line per event on stderr.

Owns: the handler and formats (``text`` for a terminal or journald,
``json`` for journald/ELK: one JSON object per line; the time of both is
RFC 3339 UTC, replicator/times.py) and ``JobLogger``, a
context adapter that stamps every record with the job it concerns (asyncssh
SSHLogger style), so ``grep job=hospitals`` or a JSON filter finds a job's
whole history.  Extra fields passed as ``extra={"fields": {...}}`` become
``key=value`` pairs (text) or top-level keys (json).

Must never: configure logging at import time.
"""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable

from replicator.times import rfc3339

LOGGER = "replicator"


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [rfc3339(record.created), record.levelname.lower()]
        job = getattr(record, "job", None)
        if job:
            parts.append(f"job={job}")
        parts.append(record.getMessage())
        for k, v in (getattr(record, "fields", None) or {}).items():
            parts.append(f"{k}={v}")
        line = " ".join(parts)
        if record.exc_info:
            line += " " + self.formatException(record.exc_info).replace("\n", " | ")
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": rfc3339(record.created), "level": record.levelname.lower(), "logger": record.name,
               "message": record.getMessage()}
        job = getattr(record, "job", None)
        if job:
            doc["job"] = job
        doc.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, sort_keys=True)


class _LostConnectionWrites(logging.Filter):
    """asyncio's "socket.send() raised exception." warning, repeated for writes to a connection the peer cut
    (the answers already on their way): the session that loses its peer logs that in one line of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "socket.send() raised exception."


_LOST_WRITES = _LostConnectionWrites()


def quiet_lost_connection_writes() -> None:
    """Drop asyncio's warning about writes to a lost connection (``_LostConnectionWrites``), in every process:
    the sender reports the lost receiver in its one error line, ``serve`` the lost sender in its log."""
    logging.getLogger("asyncio").addFilter(_LOST_WRITES)  # added once: a filter already there is not added again


def setup_logging(fmt: str = "text", level: int = logging.INFO, also: Iterable[str] = ()) -> logging.Logger:
    """Send the ``replicator`` logger to stderr in ``fmt`` (text or json); idempotent.

    :param also: other loggers (a library's, e.g. ``asyncssh``) sent to the same handler, at their own level.
    """
    quiet_lost_connection_writes()
    logger = logging.getLogger(LOGGER)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    for name in (LOGGER, *also):
        each = logging.getLogger(name)
        for h in list(each.handlers):
            each.removeHandler(h)
        each.addHandler(handler)
        each.propagate = False
    logger.setLevel(level)
    return logger


class JobLogger(logging.LoggerAdapter):
    """``log.info("synced", fields={...})``: every record carries the job name."""

    def __init__(self, job: str, logger: logging.Logger | None = None) -> None:
        super().__init__(logger or logging.getLogger(LOGGER), {"job": job})

    def process(self, msg, kwargs):
        extra = dict(kwargs.pop("extra", None) or {})
        extra["job"] = self.extra["job"]
        if "fields" in kwargs:
            extra["fields"] = kwargs.pop("fields")
        kwargs["extra"] = extra
        return msg, kwargs

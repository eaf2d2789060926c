"""Destination URLs, rates and sizes: ``ssh://USER@HOST:PORT/NAME``, ``20M`` and ``2TiB``; the one parser of each.

The CLI, the daemon's configuration and the transport all parse through
here, so a URL that one accepts the others accept too.

Must never: import asyncssh or open a connection.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlsplit

from replicator.errors import UsageError
from replicator.store.location import is_object_url
from replicator.transport.frames import MAX_NAME_SIZE

SCHEME = "ssh://"
_RATE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
# Sizes (quotas): SI prefixes are powers of 1000, IEC ones (KiB...) of 1024, as df -H and df -h print them.
_SIZE_UNITS = {"": 1, "b": 1, **{p + "b": 1000 ** (i + 1) for i, p in enumerate("kmgtpe")},
               **{p: 1000 ** (i + 1) for i, p in enumerate("kmgtpe")},
               **{p + "ib": 1 << 10 * (i + 1) for i, p in enumerate("kmgtpe")}}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")
# Control (Cc: C0, DEL, C1), format (Cf: bidi overrides, zero-width), line and paragraph separators, surrogates.
_REFUSED_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}


@dataclass(frozen=True)
class RemoteUrl:
    user: str
    host: str
    port: int
    name: str

    def __str__(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}/{self.name}"


def is_remote(target: str) -> bool:
    """Whether ``target`` names a remote repository (anything with a scheme but s3://, which is storage
    opened in this process: store/location.py) rather than a local path or bucket."""
    return not is_object_url(target) and (target.startswith("ssh:") or "://" in target)


def parse_url(url: str, default_user: str | None = None, *, what: str = "remote") -> RemoteUrl:
    """``ssh://USER@HOST:PORT/NAME`` (port default 22).  :raises UsageError: naming ``what`` was bad.

    A control character anywhere is refused, not stripped (urlsplit silently drops tabs and newlines
    and strips leading control characters: "ssh://h/am\\niens" would name "amiens").  NAME must fit
    the wire: at most MAX_NAME_SIZE (255) bytes of UTF-8 (PROTOCOL.md 3).
    """
    bad = next((c for c in url if unicodedata.category(c) in _REFUSED_CATEGORIES), None)
    if bad is not None:
        raise UsageError(f"bad {what} {url!r}: contains a control character (U+{ord(bad):04X})")
    try:
        parts = urlsplit(url)
        port = parts.port or 22
    except ValueError as exc:
        raise UsageError(f"bad {what} {url!r}: {exc}") from None
    name = parts.path.lstrip("/")
    user = parts.username or default_user
    if parts.scheme != "ssh" or not parts.hostname or not name or "/" in name or not user:
        raise UsageError(f"bad {what} {url!r}: expected ssh://USER@HOST:PORT/NAME or a local path")
    if len(name.encode("utf-8")) > MAX_NAME_SIZE:
        raise UsageError(f"bad {what} {url[:80]!r}...: the repository name is {len(name.encode('utf-8'))} bytes "
                         f"long, at most {MAX_NAME_SIZE} bytes (UTF-8) are allowed")
    return RemoteUrl(user, parts.hostname, port, name)


def parse_rate(text: str) -> int:
    """``"20M"`` -> bytes per second (suffixes k, M, G are powers of 1024).  :raises UsageError:"""
    t = text.strip().lower().removesuffix("/s").removesuffix("b")
    try:
        value = float(t[:-1]) * _RATE_UNITS[t[-1]] if t and t[-1] in _RATE_UNITS else float(t)
    except ValueError:
        raise UsageError(f"bad rate {text!r} (e.g. 500k, 20M, 1G bytes per second)") from None
    if value < 1024:
        raise UsageError(f"rate {text!r} is below 1 KiB/s")
    return int(value)


def parse_size(text: str) -> int:
    """``"2TiB"`` -> 2199023255552, ``"500GB"`` -> 500 * 10**9, ``"1000"`` -> 1000 bytes.  :raises UsageError:"""
    m = _SIZE_RE.match(text.lower())
    if not m or m.group(2) not in _SIZE_UNITS or not math.isfinite(float(m.group(1))):
        raise UsageError(f"bad size {text!r} (bytes, or with a unit: 500GB, 2TiB, 1.5 TiB)")
    number = m.group(1)
    value = int(number) if "." not in number else float(number)  # exact for integers of any size
    return int(value * _SIZE_UNITS[m.group(2)])

"""systemd readiness and watchdog: the sd_notify datagram protocol, written here (no library).

The protocol is one datagram of ``KEY=VALUE`` lines sent to the unix socket
named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace).
``replicator daemon`` and ``replicator serve --listen`` send ``READY=1`` once they
serve, ``STATUS=...`` when what they do changes, ``WATCHDOG=1`` at half of
``$WATCHDOG_USEC`` from their main loop (so a hung loop stops the pings and
systemd restarts the unit), ``RELOADING=1`` and ``STOPPING=1``.

Why not a library: python-systemd needs libsystemd and a C build; the small
PyPI ``sdnotify``/``systemd-notify`` packages wrap these same twenty lines.

Must never: read the environment (the caller passes ``$NOTIFY_SOCKET`` and
``$WATCHDOG_USEC`` in, see ``from_env``), raise on a send (a vanished socket
must not stop replication), or block.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

log = logging.getLogger("replicator.sdnotify")


def watchdog_interval(usec: str | None, pid: str | None, own_pid: int) -> float | None:
    """:returns: seconds between two ``WATCHDOG=1`` (half of ``$WATCHDOG_USEC``), or None when no
    watchdog is asked of this process (unset, not a positive number, or ``$WATCHDOG_PID`` another's)."""
    if pid and pid.strip() != str(own_pid):
        return None
    try:
        value = int(usec or "")
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


class Notifier:
    """Sends sd_notify messages to one socket; every method is a no-op when ``address`` is None.

    Thread-safe: job threads report status while the main loop pings the watchdog.
    """

    def __init__(self, address: str | None, watchdog: float | None = None) -> None:
        self.watchdog = watchdog if address else None  # seconds between pings, or None
        self._target: str | bytes | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._status: str | None = None
        self._next_ping = 0.0
        if not address:
            return
        if address.startswith("@"):  # the abstract namespace: a leading NUL byte instead of '@'
            self._target = b"\0" + address[1:].encode()
        elif address.startswith("/"):
            self._target = address
        else:  # vsock:CID:PORT (systemd 254+) and anything else: not spoken here
            log.warning("NOTIFY_SOCKET %r is neither a path nor @abstract; not notifying systemd", address)
            self.watchdog = None
            return
        try:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        except OSError as exc:
            log.warning("cannot notify systemd: %s", exc)
            self._sock = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Notifier:
        """The notifier a unit's environment asks for (the caller, cli or daemon, passes ``os.environ``)."""
        return cls(env.get("NOTIFY_SOCKET") or None,
                   watchdog_interval(env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID"), os.getpid()))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram.  :returns: False when nothing was sent."""
        if self._sock is None or self._target is None:
            return False
        data = "\n".join(line.replace("\n", " ") for line in lines).encode()
        with self._lock:
            try:
                self._sock.sendto(data, self._target)
            except OSError as exc:  # the manager restarted or the socket is full: retried at the next message
                log.debug("sd_notify %r failed: %s", data[:60], exc)
                return False
        return True

    def ready(self, status: str | None = None) -> None:
        if status is not None:
            self._status = status
        self.send("READY=1", *([f"STATUS={status}"] if status else []))
        self._next_ping = time.monotonic()  # the first ping goes with the next tick

    def status(self, text: str) -> None:
        """``STATUS=text``, sent only when it changed."""
        if text != self._status:
            self._status = text
            self.send(f"STATUS={text}")

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self, status: str | None = None) -> None:
        self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def tick(self) -> float | None:
        """Ping the watchdog if due; call from the main loop.

        :returns: seconds until the next ping is due (wait no longer), or None without a watchdog."""
        if self.watchdog is None:
            return None
        now = time.monotonic()
        if now >= self._next_ping:
            self.send("WATCHDOG=1")
            self._next_ping = now + self.watchdog
        return max(0.0, self._next_ping - now)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

"""SSH for replication: the only importer of asyncssh.

Client side: ``connect`` opens one SSH connection with key authentication
(``--identity``), pins the server's host key against a known-hosts file
(unknown: refused with its SHA256 fingerprint unless the operator accepts
exactly that fingerprint, which is then appended; changed: always refused),
prefers AES-GCM ciphers, disables SSH compression (packs are encrypted, so
incompressible), and opens the ``replicator`` subsystem as a pair of byte
streams.  When the server has no such subsystem (OpenSSH with a ``ForceCommand``
or a ``command=`` key option and no ``Subsystem replicator`` line answers
"subsystem not found"), it asks to run ``REMOTE_COMMAND`` instead, which the
forced command replaces.  The session's stderr (where ``serve --stdio`` logs
under sshd) is drained and its last lines kept: a receiver that exits with an
error before or while serving is named at the sender with its exit status and
last line.

Server side: ``listen`` accepts key authentication only (no passwords, no
keyboard-interactive), and per session only the ``replicator`` subsystem: no
shell, no exec, no pty, no SFTP/SCP, no port, agent or X11 forwarding.  The
authorized-keys files are asked for at every connection (a callable over the
configuration, so a reload applies to the next connection) and read again
when one changed (size, mtime or inode; an unchanged file is not parsed
again, so 500 per-repository files cost 500 ``stat`` calls).  A file given
for no repository grants each key its ``replicator-repos="NAME:rw,..."``
option (a key without it may touch no repository); a file given for one
repository grants its keys ``rw`` on that repository only, whatever their
options say.  A key found in several files gets the union.

Must never: parse protocol frames (protocol.py) or touch repositories (server.py).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncssh
from asyncssh.stream import SSHServerStreamSession  # stream session whose request hooks we narrow

from replicator.transport.protocol import SUBSYSTEM, HostKeyError, TransportError

log = logging.getLogger("replicator.serve")
remote_log = logging.getLogger("replicator.transport.remote")  # the receiver's stderr, at the sender (debug)

# Measured here: asyncssh ~450 MB/s with AES-GCM vs ~245 MB/s with chacha20-poly1305.
CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]
PERMISSIONS_OPTION = "replicator-repos"
WINDOW = 8 * 1024 * 1024  # SSH channel window: a 20 ms RTT link needs ~window/RTT of buffering
PACKET = 256 * 1024 - 1024  # maximum SSH packet payload we accept/send
# Asked for when the server has no replicator subsystem.  Under OpenSSH a ForceCommand or command= replaces it
# (that one carries the repositories and rights); sshd without either runs it as the user's own command.
REMOTE_COMMAND = "replicator serve --stdio"
STDERR_LINES = 20  # last lines of the remote stderr kept to explain a failed receiver
EXIT_WAIT = 2.0  # seconds to wait, at the end of the stream, for the receiver's exit status
CMD_NOT_FOUND = 127  # a shell's exit status for a command it cannot find


def fingerprint(key) -> str:
    return key.get_fingerprint("sha256")


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _PinningClient(asyncssh.SSHClient):
    """Host key pinning against one known-hosts file (see module docstring)."""

    def __init__(self, known_hosts: str, accept: str | None, port: int) -> None:
        self._path = known_hosts
        self._accept = accept
        self._port = port
        self.refusal: HostKeyError | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key) -> bool:
        try:
            trusted = asyncssh.read_known_hosts(self._path).match(host, addr, self._port)[0] \
                if os.path.exists(self._path) else []
        except (ValueError, OSError) as exc:
            self.refusal = HostKeyError(f"cannot read known hosts file {self._path}: {exc}")
            return False
        fp = fingerprint(key)
        if key in trusted:
            return True
        if trusted:
            self.refusal = HostKeyError(
                f"HOST KEY CHANGED for {host}:{self._port}: it now presents {fp}, which is not the key pinned in "
                f"{self._path}; refusing (possible man-in-the-middle; if the key really changed, edit that file)")
            return False
        if self._accept is not None and self._accept == fp:
            line = f"{_known_hosts_name(host, self._port)} {key.export_public_key().decode().strip()}\n"
            with open(self._path, "a", encoding="ascii") as f:
                f.write(line)
            return True
        self.refusal = HostKeyError(
            f"unknown host key for {host}:{self._port}: {fp}; check it with the server's operator, then run "
            f"again with --accept-host-key {fp}")
        return False


class _RemoteStderr:
    """Reads the session's stderr to its end (so it never fills the channel's window) and keeps its last lines."""

    def __init__(self, stream) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.task = asyncio.get_running_loop().create_task(self._drain(stream))

    async def _drain(self, stream) -> None:
        try:
            while True:
                line = await stream.readline()
                if not line:
                    return
                text = line.decode("utf-8", "replace").rstrip()
                if text:
                    self.lines.append(text)
                    remote_log.debug("receiver: %s", text)
        except (asyncssh.Error, OSError):
            return

    def last(self) -> str:
        return self.lines[-1] if self.lines else ""


class _SessionReader:
    """The session's stdout as ``protocol.read_frame`` reads it (``readexactly``).  At its end, a receiver
    that exited with an error raises TransportError naming its exit status and last stderr line, instead
    of a bare end of stream."""

    def __init__(self, stream, channel, stderr: _RemoteStderr, where: str) -> None:
        self._stream = stream
        self._channel = channel
        self._stderr = stderr
        self._where = where

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    async def readexactly(self, n: int) -> bytes:
        try:
            return await self._stream.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            failure = await self._failure()
            if failure is not None:
                raise failure from None
            raise exc

    async def _failure(self) -> TransportError | None:
        # asyncio.wait, not wait_for: a helper that failed or was cancelled must not pass for our own cancellation.
        closed = asyncio.ensure_future(self._channel.wait_closed())
        try:
            await asyncio.wait({closed}, timeout=EXIT_WAIT)  # the exit status comes before the channel's close
        finally:
            closed.cancel()
        await asyncio.wait({self._stderr.task}, timeout=EXIT_WAIT)  # its last line, if still on its way
        status = self._channel.get_exit_status()
        sig = self._channel.get_exit_signal()
        if sig is not None:
            how = f"was killed by signal {sig[0]}"
        elif status is not None and status > 0:
            how = f"stopped with exit status {status}"
        else:
            return None
        last = self._stderr.last().removeprefix("replicator: error: ")
        hint = "" if status != CMD_NOT_FOUND else (
            f" (no ForceCommand, command= or Subsystem line runs replicator serve --stdio there; "
            f"sshd ran {REMOTE_COMMAND!r} itself)")
        return TransportError(f"{self._where}: the receiver {how}{': ' + last if last else ''}{hint}")


@dataclass
class ClientConnection:
    """An open client connection: ``reader``/``writer`` are the session's byte streams; ``how`` is
    ``subsystem`` or ``command`` (what the server accepted)."""

    conn: Any
    reader: Any
    writer: Any
    how: str = "subsystem"
    stderr: _RemoteStderr | None = None

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - the channel may be gone
            pass
        if self.stderr is not None:
            self.stderr.task.cancel()
        self.conn.close()

    async def wait_closed(self) -> None:
        await self.conn.wait_closed()


async def connect(host: str, port: int, username: str, identity: str, known_hosts: str,
                  accept_host_key: str | None = None, timeout: float = 30) -> ClientConnection:
    """:raises HostKeyError: unknown or changed host key.  :raises TransportError: anything else."""
    try:
        key = asyncssh.read_private_key(identity)
    except (OSError, ValueError, asyncssh.KeyImportError) as exc:
        raise TransportError(f"cannot read identity {identity}: {exc}") from None
    client = _PinningClient(known_hosts, accept_host_key, port)
    try:
        conn, _ = await asyncio.wait_for(asyncssh.create_connection(
            lambda: client, host, port, username=username, client_keys=[key], known_hosts=([], [], []),
            server_host_key_algs="default", encryption_algs=CIPHERS, compression_algs=None,
            agent_path=None, agent_forwarding=False, x11_forwarding=False, password=None,
            kbdint_auth=False, gss_host=None, config=None, connect_timeout=timeout,
            keepalive_interval=30, keepalive_count_max=4), timeout)
    except asyncssh.HostKeyNotVerifiable:
        raise client.refusal or HostKeyError(f"host key of {host}:{port} not verifiable") from None
    except asyncssh.PermissionDenied:
        raise TransportError(f"{host}:{port} refused our key {identity} (is it in the server's authorized keys?)") \
            from None
    except (asyncssh.Error, OSError, asyncio.TimeoutError) as exc:
        if client.refusal:
            raise client.refusal from None
        raise TransportError(f"cannot connect to {host}:{port}: {exc or exc.__class__.__name__}") from None
    where = f"{host}:{port}"
    how = "subsystem"
    try:
        try:
            writer, reader, stderr = await conn.open_session(subsystem=SUBSYSTEM, encoding=None, window=WINDOW,
                                                             max_pktsize=PACKET)
        except asyncssh.ChannelOpenError as refused:  # OpenSSH: "subsystem not found" (ForceCommand, command=)
            how = "command"
            try:
                writer, reader, stderr = await conn.open_session(command=REMOTE_COMMAND, encoding=None,
                                                                 window=WINDOW, max_pktsize=PACKET)
            except asyncssh.ChannelOpenError as exc:
                raise TransportError(f"{where} refused the {SUBSYSTEM} subsystem ({refused.reason}) and the "
                                     f"command {REMOTE_COMMAND!r} ({exc.reason})") from None
    except TransportError:
        conn.close()
        raise
    except (asyncssh.Error, OSError) as exc:
        conn.close()
        raise TransportError(f"{where} refused the {SUBSYSTEM} session: {exc}") from None
    tail = _RemoteStderr(stderr)
    return ClientConnection(conn, _SessionReader(reader, writer.channel, tail, where), writer, how, tail)


# --- server --------------------------------------------------------------------------
Handler = Callable[[object, object, str, dict], Awaitable[None]]
KeyFiles = Callable[[], Sequence[tuple[str, "str | None"]]]  # (file, None or the one repository its keys get)


class _KeyFileCache:
    """Parsed authorized-keys files, parsed again only when their (size, mtime, inode) changed."""

    def __init__(self) -> None:
        self._parsed: dict[str, tuple[tuple[int, int, int], Any]] = {}

    def get(self, path: str):
        """:raises OSError, ValueError: the file cannot be read or parsed."""
        st = os.stat(path)
        stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        hit = self._parsed.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        entries = asyncssh.read_authorized_keys(path) if st.st_size else None  # asyncssh refuses an empty file
        self._parsed[path] = (stamp, entries)
        return entries


class _ReplicatorSession(SSHServerStreamSession):
    """A session that accepts the replicator subsystem and nothing else."""

    def pty_requested(self, *args) -> bool:
        return False

    def shell_requested(self) -> bool:
        return False

    def exec_requested(self, command: str) -> bool:
        return False

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == SUBSYSTEM


class _Server(asyncssh.SSHServer):
    def __init__(self, key_files: KeyFiles, cache: _KeyFileCache, handler: Handler, parse_permissions) -> None:
        self._key_files = key_files
        self._cache = cache
        self._handler = handler
        self._parse = parse_permissions
        self._conn = None
        self._peer = ("?", 0)
        self._label = "?"
        self._permissions: dict = {}

    def connection_made(self, conn) -> None:
        self._conn = conn
        self._peer = conn.get_extra_info("peername")[:2]

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key) -> bool:
        fp = fingerprint(key)
        files = self._key_files()
        perms: dict[str, str] = {}
        found = False
        for path, repo in files:
            try:
                entries = self._cache.get(path)
                options = entries.validate(key, self._peer[0], self._peer[0]) if entries is not None else None
            except (OSError, ValueError) as exc:
                log.error("cannot read authorized keys %s: %s", path, exc)
                continue
            if options is None:
                continue
            found = True
            if repo is not None:
                perms[repo] = "rw"
                continue
            try:
                values: list[str] = list(options.get(PERMISSIONS_OPTION, []))
                granted = self._parse(",".join(values))
            except ValueError as exc:
                log.error("key %s: bad %s option in %s: %s", fp, PERMISSIONS_OPTION, path, exc)
                continue
            for name, mode in granted.items():
                perms[name] = "".join(sorted(set(perms.get(name, "") + mode)))
        if not found:
            where = files[0][0] if len(files) == 1 else f"any of {len(files)} authorized keys files"
            log.warning("refused key %s from %s (not in %s)", fp, self._peer[0], where)
            return False
        self._label = f"key {fp} from {self._peer[0]}"
        self._permissions = perms
        return True

    def session_requested(self):
        label, perms, handler = self._label, dict(self._permissions), self._handler

        async def run(stdin, stdout, _stderr) -> None:
            try:
                await handler(stdin, stdout, label, perms)
            finally:
                try:
                    stdout.channel.exit(0)
                except Exception:  # noqa: BLE001 - already closed
                    pass

        return _ReplicatorSession(run)


async def listen(host: str, port: int, host_key: str, authorized_keys: str | KeyFiles, handler: Handler,
                 parse_permissions) -> tuple[Any, int]:
    """Start the SSH server.

    :param authorized_keys: one file (its keys' ``replicator-repos`` options), or a callable asked at each
        connection for the (file, repository or None) pairs in force (module docstring).
    :returns: (acceptor with ``close()``/``wait_closed()``, bound port)."""
    try:
        keys = [asyncssh.read_private_key(host_key)]
    except (OSError, ValueError, asyncssh.KeyImportError) as exc:
        raise TransportError(f"cannot read host key {host_key}: {exc}") from None
    for name in ("asyncssh", "asyncssh.sftp"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if isinstance(authorized_keys, str):
        if not os.path.exists(authorized_keys):
            raise TransportError(f"authorized keys file {authorized_keys} does not exist")
        one: list[tuple[str, str | None]] = [(authorized_keys, None)]
        key_files: KeyFiles = lambda: one  # noqa: E731
    else:
        key_files = authorized_keys
    cache = _KeyFileCache()
    acceptor = await asyncssh.listen(
        host, port, server_factory=lambda: _Server(key_files, cache, handler, parse_permissions),
        server_host_keys=keys, encoding=None, allow_pty=False, agent_forwarding=False, x11_forwarding=False,
        allow_scp=False, sftp_factory=None, password_auth=False, kbdint_auth=False, gss_host=None,
        compression_algs=None, login_timeout=30, window=WINDOW, max_pktsize=PACKET, config=None,
        keepalive_interval=60, keepalive_count_max=3)
    bound = acceptor.sockets[0].getsockname()[1] if acceptor.sockets else port
    return acceptor, bound


def generate_key(path: str, comment: str = "replicator") -> str:
    """Write a new Ed25519 private key (and PATH.pub). :returns: its public key line."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    key.write_private_key(path)
    os.chmod(path, 0o600)
    key.write_public_key(path + ".pub")
    return key.export_public_key().decode().strip()

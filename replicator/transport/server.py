"""The receiving side: one protocol session per SSH channel, storing through a LocalSink.

The receiver never has the passphrase.  Each session opens the repository
through repo/local_sink.py, the same sink a local sync writes through (with
``untrusted=True``: the sink checks every pack's SHA-256 name and shape and
every snapshot's refs), so a repository holds the same objects whichever
way it was written, and an acknowledgement means durable.

Requests are handled in arrival order by one worker thread (storage calls
block), and answered in the same order, so a client may pipeline.  Any
protocol violation or refused request ends the session with one ERROR
frame; jobs not yet started are then skipped, so nothing the peer sent after
the failure becomes visible.

Must never: import cli/daemon or asyncssh (ssh.py owns it), decrypt anything,
or write a snapshot whose refs are not all present.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from replicator.errors import (
    IntegrityError,
    MissingChunks,
    ObjectNotFound,
    ReplicatorError,
    RepositoryLocked,
    StorageError,
)
from replicator.repo.local_sink import LocalSink
from replicator.store.lock import Locked
from replicator.transport import protocol as P
from replicator.transport.frames import ProtocolError

log = logging.getLogger("replicator.serve")

SMALL_FRAME = 64 * 1024  # limit before OPEN: an unopened session cannot make us buffer 64 MiB
MAX_QUEUED = 8  # requests accepted ahead of their answers (each at most one frame)
PERM_READ, PERM_WRITE = "r", "w"


class Refused(Exception):
    """A request the server refuses: becomes one ERROR frame and ends the session."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _error_code(exc: ReplicatorError) -> int:
    """The ERROR code for a refusal the sink raised."""
    if isinstance(exc, MissingChunks):
        return P.E_MISSING_REFS
    if isinstance(exc, IntegrityError):
        return P.E_INTEGRITY
    if isinstance(exc, (Locked, RepositoryLocked)):
        return P.E_LOCKED
    if isinstance(exc, StorageError):
        return P.E_STORAGE
    return P.E_NOT_ALLOWED


def parse_permissions(text: str) -> dict[str, str]:
    """``"amiens:rw,archive:r"`` -> ``{"amiens": "rw", "archive": "r"}``.  :raises ValueError:"""
    perms: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        repo, sep, mode = item.rpartition(":")
        if not sep or not repo or not mode or set(mode) - {PERM_READ, PERM_WRITE}:
            raise ValueError(f"bad permission {item!r} (expected NAME:r, NAME:w or NAME:rw)")
        perms[repo] = "".join(sorted(set(perms.get(repo, "") + mode)))
    return perms


@dataclass(frozen=True)
class Peer:
    """Who is on the other end: a label for logs (key fingerprint, address) and what it may do."""

    label: str
    permissions: dict[str, str] = field(default_factory=dict)


class ServerSession:
    """One client session over a reader (``readexactly``) and a writer (``write``/``drain``/``close``)."""

    def __init__(self, reader, writer, repos: dict[str, str], peer: Peer,
                 on_commit: Callable[[str, str], None] | None = None) -> None:
        self._reader = reader
        self._on_commit = on_commit
        self._writer = writer
        self._repos = repos
        self._peer = peer
        self._state = P.STATE_START
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serve")
        self._answers: asyncio.Queue = asyncio.Queue(MAX_QUEUED)
        self._failed = False  # set on the event loop; read by the worker thread before each job
        self._sink: LocalSink | None = None
        self._repo_name = ""
        self._refs: list[bytes] = []
        self.commits = 0
        self.packs = 0

    # --- driver ----------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        responder = loop.create_task(self._respond())
        try:
            await self._read_loop(loop)
        except Refused as exc:
            await self._fail(exc.code, exc.message)
        except ProtocolError as exc:
            await self._fail(exc.code, str(exc))
        except (ConnectionError, OSError) as exc:
            self._failed = True
            log.warning("%s: connection lost: %s", self._peer.label, exc)
        finally:
            if not responder.done():
                if self._failed:
                    responder.cancel()
                else:
                    await self._answers.put(None)
            try:
                await responder
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - already logged by _respond
                pass
            await loop.run_in_executor(self._pool, self._release)
            self._pool.shutdown(wait=True)
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the channel may be gone already
                pass

    async def _read_loop(self, loop) -> None:
        ours = P.Hello()
        self._writer.write(ours.encode())
        while True:
            limit = P.F.MAX_FRAME_SIZE if self._state == P.STATE_OPEN else SMALL_FRAME
            msg = await P.read_message(self._reader, limit, copy=False)  # a pack is not copied again
            if self._failed:
                return
            if msg is None:
                if self._state == P.STATE_OPEN and self._refs:
                    log.info("%s: closed with an uncommitted snapshot pending; nothing committed", self._peer.label)
                return
            if msg.TYPE not in P.ALLOWED[self._state]:
                raise ProtocolError(f"message type {msg.TYPE} not allowed in state {self._state}")
            if isinstance(msg, P.Hello):
                version = P.negotiate(ours, msg)
                log.debug("%s: protocol version %d, peer software %s", self._peer.label, version, msg.software)
                self._state = P.STATE_READY
                continue
            if isinstance(msg, P.Bye):
                return
            if isinstance(msg, P.Open):
                self._state = P.STATE_OPEN  # optimistic: a refused OPEN ends the session anyway
            job = {P.Open: self._open, P.List: self._list, P.Get: self._get, P.PutPack: self._put_pack,
                   P.Refs: self._add_refs, P.Commit: self._commit}[type(msg)]
            await self._answers.put(loop.run_in_executor(self._pool, self._guarded, job, msg))

    async def _respond(self) -> None:
        while True:
            item = await self._answers.get()
            if item is None:
                return
            try:
                answer = await item
            except Refused as exc:
                await self._fail(exc.code, exc.message)
                return
            except ProtocolError as exc:
                await self._fail(exc.code, str(exc))
                return
            except ReplicatorError as exc:
                await self._fail(_error_code(exc), str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - one line to the peer and the log, never a traceback
                log.exception("%s: internal error", self._peer.label)
                await self._fail(P.E_INTERNAL, f"internal error: {exc.__class__.__name__}")
                return
            if answer is not None:
                await P.write_message(self._writer, answer)

    async def _fail(self, code: int, message: str) -> None:
        if self._failed:
            return
        self._failed = True
        level = logging.WARNING if code in (P.E_NOT_ALLOWED, P.E_PROTOCOL, P.E_INTEGRITY, P.E_MISSING_REFS) \
            else logging.ERROR
        log.log(level, "%s: refused (%s): %s", self._peer.label, P.ERROR_NAMES.get(code, code), message)
        try:
            self._writer.write(P.Error(code, message).encode())
            await self._writer.drain()
        except Exception:  # noqa: BLE001 - the peer may be gone
            pass
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001
            pass

    def _guarded(self, job, msg):
        """Worker thread: skip every job once the session failed (nothing after a failure is made visible)."""
        if self._failed:
            return None
        return job(msg)

    # --- jobs (worker thread, in arrival order) ----------------------------------
    def _open(self, msg: P.Open):
        name = msg.repository
        want = PERM_WRITE if msg.mode == P.MODE_WRITE else PERM_READ
        if want not in self._peer.permissions.get(name, ""):
            raise Refused(P.E_NOT_ALLOWED, f"not allowed: {'write to' if want == PERM_WRITE else 'read'} "
                                           f"repository {name!r}")
        path = self._repos.get(name)
        if path is None:
            raise Refused(P.E_NO_REPOSITORY, f"no such repository {name!r} on this server")
        try:
            self._sink = LocalSink.open(path, writable=msg.mode == P.MODE_WRITE, untrusted=True, role="serve")
            config, keyfile = self._sink.describe()
        except Locked:
            raise Refused(P.E_LOCKED, f"repository {name!r} is locked by another writer") from None
        except ReplicatorError as exc:
            raise Refused(P.E_NO_REPOSITORY, f"repository {name!r}: {exc}") from None
        self._repo_name = name
        log.info("%s: opened %s for %s", self._peer.label, name, "write" if msg.mode == P.MODE_WRITE else "read")
        return P.OpenOk(config, keyfile)

    @property
    def sink(self) -> LocalSink:
        """The repository this session opened (the state machine allows requests only after OPEN)."""
        if self._sink is None:
            raise ProtocolError("no repository is open")
        return self._sink

    def _release(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def _need(self, perm: str, what: str) -> None:
        if perm not in self._peer.permissions.get(self._repo_name, ""):
            raise Refused(P.E_NOT_ALLOWED, f"not allowed: {what} in repository {self._repo_name!r}")

    def _list(self, msg: P.List):
        if msg.prefix == "data/":
            self._need(PERM_READ, "listing packs")
        return P.Names(tuple(self.sink.list(msg.prefix)))

    def _get(self, msg: P.Get):
        if msg.name.startswith("data/"):
            self._need(PERM_READ, "reading packs")
        try:
            return P.Data(next(self.sink.get_many([msg.name]))[1])
        except ObjectNotFound:
            raise Refused(P.E_NOT_FOUND, f"{msg.name} not found") from None

    def _put_pack(self, msg: P.PutPack):
        self._need(PERM_WRITE, "storing packs")
        self.sink.put_pack(msg.name, msg.data, msg.ids)
        self.packs += 1
        return P.PackOk(msg.name)

    def _add_refs(self, msg: P.Refs):
        self._need(PERM_WRITE, "committing snapshots")
        P.check_sorted(list(msg.ids), "REFS ids", self._refs[-1] if self._refs else None)
        self._refs.extend(msg.ids)
        return None

    def _commit(self, msg: P.Commit):
        self._need(PERM_WRITE, "committing snapshots")
        try:
            P.check_sorted(list(msg.refs), "COMMIT refs", self._refs[-1] if self._refs else None)
        except ProtocolError as exc:
            raise Refused(P.E_PROTOCOL, str(exc)) from None
        refs, self._refs = self._refs + list(msg.refs), []
        self.sink.commit(msg.name, msg.data, refs)
        self.commits += 1
        log.info("%s: committed %s in %s (%d refs)", self._peer.label, msg.name[10:26], self._repo_name, len(refs))
        if self._on_commit is not None:
            # After the commit point; the hook must not block (it queues work) and can never undo the commit.
            try:
                self._on_commit(self._repo_name, msg.name)
            except Exception:  # noqa: BLE001
                log.exception("%s: commit hook failed (the snapshot is committed)", self._peer.label)
        return P.CommitOk(msg.name)


async def serve_session(reader, writer, repos: dict[str, str], peer: Peer,
                        on_commit: Callable[[str, str], None] | None = None) -> ServerSession:
    """Run one session.  ``on_commit(repository name, snapshot object name)`` is called after each commit."""
    session = ServerSession(reader, writer, repos, peer, on_commit)
    await session.run()
    return session

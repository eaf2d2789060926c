"""The receiving side: one protocol session per SSH channel, storing through a LocalSink.

The receiver never has the passphrase.  Each session opens the repository
through repo/local_sink.py, the same sink a local sync writes through (with
``untrusted=True``: the sink checks every pack's SHA-256 name and shape and
every snapshot's refs), so a repository holds the same objects whichever
way it was written, and an acknowledgement means durable.

Requests are handled in arrival order by one worker thread (storage calls
block), and answered in the same order, so a client may pipeline.  Any
protocol violation or refused request ends the session with one ERROR
frame, in its place in that order: the requests before it are executed and
answered, nothing after it is executed (the worker itself records the
failure before the next job can start), so nothing the peer sent after the
failure becomes visible.  A failed session always ends: the repository is
closed (its lock released) before the ERROR is written, and the channel is
closed after it, however many requests wait behind it and whether or not
the peer reads or closes.

A receiver serving many repositories passes a ``Tenants`` table (transport/tenants.py): OPEN asks
it for the repository at that moment (so a reload applies to the next OPEN, and a session already
open keeps its repository to its end), PUT_PACK is refused with ``E_QUOTA`` when the pack would take
the repository past its quota (checked before anything is written, so nothing of it is stored), and
the session keeps the repository's running counts (bytes, packs, commits, sessions, refusals).

Must never: import cli/daemon or asyncssh (ssh.py owns it), decrypt anything,
or write a snapshot whose refs are not all present.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from replicator.constants import ID_SIZE
from replicator.errors import (
    Fenced,
    IntegrityError,
    LineageConflict,
    MissingChunks,
    ObjectNotFound,
    ReplicatorError,
    RepositoryLocked,
    StorageError,
)
from replicator.format import idlist as I
from replicator.format.head import Claim
from replicator.repo.local_sink import LocalSink
from replicator.store.lock import Locked
from replicator.transport import protocol as P
from replicator.transport.frames import ProtocolError
from replicator.transport.tenants import RepoStats, Tenant, Tenants

log = logging.getLogger("replicator.serve")

SMALL_FRAME = 64 * 1024  # limit until OPEN succeeded: an unopened session cannot make us buffer 64 MiB
MAX_QUEUED = 8  # requests accepted ahead of their answers (each at most one frame)
MAX_QUEUED_BYTES = 16 * 1024 * 1024  # frame bytes queued for the worker at most before reading on: one pack
RESPOND_BATCH = 1 << 20  # bytes of answers already done written together, at most (more when one is bigger)
ERROR_DRAIN_SECONDS = 10.0  # how long a failed session waits for its ERROR to leave before closing anyway
PERM_READ, PERM_WRITE = "r", "w"


class Refused(Exception):
    """A request the server refuses: becomes one ERROR frame and ends the session."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Failure:
    """Why a session ended early: ``code`` is the ERROR sent, None when the peer is gone (nothing to send)."""

    code: int | None
    message: str


_END = object()  # BYE or end of stream, after the answers before it
_SKIPPED = object()  # a request behind a failure: never executed, never answered


def _error_code(exc: ReplicatorError) -> int:
    """The ERROR code for a refusal the sink raised."""
    if isinstance(exc, Fenced):
        return P.E_FENCED
    if isinstance(exc, LineageConflict):
        return P.E_DIVERGED
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
    """One client session over a reader (``readexactly``) and a writer (``write``/``drain``/``close``).

    Three parts: the read loop (event loop) decodes frames, checks the state
    machine and queues one job per request, at most MAX_QUEUED ahead of the
    answers; the worker thread runs the jobs in order; the responder (event
    loop) writes their answers in the same order.  Every way a session can
    end is a job in that order too: a violation the read loop detected, end
    of stream, BYE.  The first job that fails sets ``_failed`` **on the worker
    thread, before its ERROR can be written**, and closes the repository (the
    writer lock is free before the peer can read the ERROR); every job behind
    it sees the flag and is skipped.  When the responder reaches the failure
    (or the end) it stops, the read loop is cancelled wherever it waits (a
    read, or a full queue), the ERROR is written (at most ERROR_DRAIN_SECONDS
    of waiting for the peer to take it) and the channel closed.
    """

    def __init__(self, reader, writer, repos: Mapping[str, str] | Tenants, peer: Peer,
                 on_commit: Callable[[str, str], None] | None = None) -> None:
        self._reader = reader
        self._on_commit = on_commit
        self._writer = writer
        self._tenants = repos if isinstance(repos, Tenants) else Tenants.from_urls(repos)
        self._tenant: Tenant | None = None  # the repository opened, as the table said at OPEN
        self._stats: RepoStats | None = None
        self._peer = peer
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serve")
        self._answers: asyncio.Queue = asyncio.Queue(MAX_QUEUED)
        self._queued_bytes = 0  # of the frames queued for the worker and not done (the read loop's side)
        self._room = asyncio.Event()  # set when a queued frame is done: the read loop may read on
        self.max_queued_bytes = 0  # the most ever queued (tests check the bound)
        self._failed = threading.Event()  # set by the worker in request order (or once the peer is gone)
        self._opened = False  # OPEN succeeded: frames may be MAX_FRAME_SIZE from now on (read loop only)
        self._sink: LocalSink | None = None
        self._repo_name = ""
        self._refusing: RepoStats | None = None  # a served repository an OPEN was refused for
        self._mode = 0
        self._refs = bytearray()  # the commit's refs so far: 32 bytes per id, one buffer (issue 11)
        self._base: P.RefsBase | None = None  # version 4: this commit's refs are a difference from these
        self._dropped = bytearray()
        self.failure: Failure | None = None
        self.commits = 0
        self.packs = 0

    # --- driver ----------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reading: asyncio.Task | None = None
        failure: Failure | None = None
        try:
            try:
                self._writer.write(P.Hello().encode())
            except Exception as exc:  # noqa: BLE001 - the channel is gone before we said anything
                failure = Failure(None, f"connection lost: {exc or exc.__class__.__name__}")
            else:
                reading = loop.create_task(self._read_loop(loop))
                failure = await self._respond()
        finally:
            if reading is not None:
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
            self._failed.set()  # anything still queued is skipped: the session is over
            # The worker runs jobs in order, so this runs after every job already queued.
            await loop.run_in_executor(self._pool, self._release)
            self._pool.shutdown(wait=False)  # idle by now: nothing to wait for
            self.failure = failure
            if failure is not None:
                await self._send_error(failure)
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the channel may be gone already
                pass

    async def _queue(self, loop, fn, *args, size: int = 0) -> asyncio.Future:
        """Queue one job for the worker and its future for the responder (waits while MAX_QUEUED are queued).

        ``size``: the bytes of the frame the job holds, counted against MAX_QUEUED_BYTES until it is done."""
        fut = loop.run_in_executor(self._pool, fn, *args)
        if size:
            self._queued_bytes += size
            self.max_queued_bytes = max(self.max_queued_bytes, self._queued_bytes)
            fut.add_done_callback(lambda _f: self._done_bytes(size))
        await self._answers.put(fut)
        return fut

    def _done_bytes(self, size: int) -> None:
        self._queued_bytes -= size
        self._room.set()

    async def _wait_for_room(self) -> None:
        """Before reading a frame: wait while MAX_QUEUED_BYTES of frames wait for the worker, so the receiver
        holds one pack (being stored) and reads the next only then; the sender's data waits in the channel."""
        while self._queued_bytes >= MAX_QUEUED_BYTES:
            self._room.clear()
            await self._room.wait()

    async def _read_loop(self, loop) -> None:
        ours = P.Hello()
        state = P.STATE_START
        while True:
            limit = P.F.MAX_FRAME_SIZE if self._opened else SMALL_FRAME
            await self._wait_for_room()
            try:
                got = await P.read_frame(self._reader, limit)
                size = len(got[1]) if got is not None else 0
                msg = P.decode_message(*got, copy=False) if got is not None else None  # a pack is not copied again
                del got
                if msg is not None and msg.TYPE not in P.ALLOWED[state]:
                    raise ProtocolError(f"message type {msg.TYPE} not allowed in state {state}")
                if isinstance(msg, P.Hello):
                    version = P.negotiate(ours, msg)
                    log.debug("%s: protocol version %d, peer software %s", self._peer.label, version, msg.software)
                    state = P.STATE_READY
                    continue
            except ProtocolError as exc:
                await self._queue(loop, self._violation, Failure(exc.code, str(exc)))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the channel failed under the read: the peer is gone
                await self._queue(loop, self._violation, Failure(None, f"connection lost: {exc or type(exc).__name__}"))
                return
            if msg is None or isinstance(msg, P.Bye):
                await self._queue(loop, self._end, "BYE" if msg is not None else "end of stream")
                return
            job = {P.Open: self._open, P.List: self._list, P.Get: self._get, P.PutPack: self._put_pack,
                   P.Refs: self._add_refs, P.Commit: self._commit, P.GetRange: self._get_range,
                   P.Declare: self._declare, P.Forget: self._forget, P.Prune: self._prune,
                   P.RefsBase: self._refs_base, P.Drop: self._drop, P.GetRanges: self._get_ranges}[type(msg)]
            fut = await self._queue(loop, self._guarded, job, msg, size=size)
            if isinstance(msg, P.Open):
                # The big frame limit only once the OPEN succeeded: wait for it before reading on.
                if await fut is _SKIPPED or isinstance(fut.result(), Failure):
                    return
                self._opened = True
                state = P.STATE_OPEN
            del msg, fut  # the worker holds the frame until it is done; this loop must not hold it longer

    async def _respond(self) -> Failure | None:
        """Write the answers in request order.  :returns: the failure that ended the session, None for a clean end.

        Answers already done when one is written go with it in one write (P.write_parts joins the small
        ones), up to ``RESPOND_BATCH`` bytes: a round of small GET_RANGEs is answered in a few SSH packets.
        """
        fut: asyncio.Future | None = None  # taken from the queue, not answered yet
        while True:
            parts: list = []
            size = 0
            while True:
                if fut is None:
                    fut = await self._answers.get()
                result = await fut
                fut = None
                if result is _END or isinstance(result, Failure):
                    failed = await self._write_answers(parts)
                    if failed is not None or result is _END:
                        return failed
                    assert isinstance(result, Failure)
                    return result
                if result is not None and result is not _SKIPPED:  # REFS has no answer; nothing is skipped
                    got = list(result)  # before a failure, which returned above
                    parts.extend(got)
                    size += sum(P.F.nbytes(p) for p in got)
                if size >= RESPOND_BATCH or self._answers.empty():
                    break
                fut = self._answers.get_nowait()
                if not fut.done():
                    break  # write what is ready; this one is awaited next
            failed = await self._write_answers(parts)
            if failed is not None:
                return failed

    async def _write_answers(self, parts: list) -> Failure | None:
        if not parts:
            return None
        try:
            P.write_parts(self._writer, parts)
            await self._writer.drain()
        except Exception as exc:  # noqa: BLE001 - the channel broke under the write: the peer is gone
            self._failed.set()  # the worker skips what is queued (best effort: nothing can be answered)
            return Failure(None, f"connection lost while answering: {exc or type(exc).__name__}")
        return None

    async def _send_error(self, failure: Failure) -> None:
        if failure.code is None:
            log.warning("%s: %s", self._peer.label, failure.message)
            return
        level = logging.WARNING if failure.code in (P.E_NOT_ALLOWED, P.E_PROTOCOL, P.E_INTEGRITY, P.E_MISSING_REFS,
                                                    P.E_NOT_FOUND, P.E_VERSION) else logging.ERROR
        log.log(level, "%s: refused (%s): %s", self._peer.label, P.ERROR_NAMES.get(failure.code, failure.code),
                failure.message)
        try:
            self._writer.write(P.Error(failure.code, failure.message).encode())
            await asyncio.wait_for(self._writer.drain(), ERROR_DRAIN_SECONDS)
        except Exception:  # noqa: BLE001 - the peer may be gone or not reading: the session ends anyway
            pass

    # --- the worker's side of the failure state (worker thread, in request order) ------------------
    def _fail(self, failure: Failure) -> Failure:
        self._failed.set()
        if failure.code is not None:
            stats = self._stats or self._refusing or self._tenants.unnamed
            stats.refuse(P.ERROR_REASONS.get(failure.code, str(failure.code)))
        self._release()  # the lock is free before the ERROR is written
        return failure

    def _guarded(self, job, msg):
        """Run one request, unless the session failed.  :returns: the answer's frame parts, None, or a Failure.

        Never raises: a future with an exception nobody awaits would be logged as "never retrieved".
        """
        if self._failed.is_set():
            return _SKIPPED
        try:
            answer = job(msg)
            return None if answer is None else answer.encode_parts()
        except Refused as exc:
            failure = Failure(exc.code, exc.message)
        except ProtocolError as exc:
            failure = Failure(exc.code, str(exc))
        except ReplicatorError as exc:
            failure = Failure(_error_code(exc), str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug: one line to the peer, the traceback to our log
            log.exception("%s: internal error", self._peer.label)
            failure = Failure(P.E_INTERNAL, f"internal error: {exc.__class__.__name__}")
        return self._fail(failure)

    def _violation(self, failure: Failure):
        """What the read loop found wrong, in its place in the order (the requests before it were executed)."""
        return _SKIPPED if self._failed.is_set() else self._fail(failure)

    def _end(self, why: str):
        if self._failed.is_set():
            return _SKIPPED
        if self._refs or self._base is not None:
            log.info("%s: %s with an uncommitted snapshot pending; nothing committed", self._peer.label, why)
        self._release()
        return _END

    # --- jobs (worker thread, in arrival order) ----------------------------------
    def _open(self, msg: P.Open):
        name = msg.repository
        want = PERM_WRITE if msg.mode == P.MODE_WRITE else PERM_READ
        tenant = self._tenants.get(name)
        if tenant is not None:
            self._refusing = self._tenants.stats(name)  # a refusal of a served repository counts under its name
        if want not in self._peer.permissions.get(name, ""):
            raise Refused(P.E_NOT_ALLOWED, f"not allowed: {'write to' if want == PERM_WRITE else 'read'} "
                                           f"repository {name!r}")
        if tenant is None:
            raise Refused(P.E_NO_REPOSITORY, f"no such repository {name!r} on this server")
        try:
            self._sink = LocalSink.open(tenant.url, writable=msg.mode == P.MODE_WRITE, untrusted=True,
                                        role="serve")
            config, keyfile = self._sink.describe()
            stats = self._tenants.stats(name)
            if tenant.quota is not None or self._tenants.count_usage:
                stats.count(self._sink.storage)  # once per repository and URL (a no-op after the first)
        except Locked:
            raise Refused(P.E_LOCKED, f"repository {name!r} is locked by another writer") from None
        except ReplicatorError as exc:
            raise Refused(P.E_NO_REPOSITORY, f"repository {name!r}: {exc}") from None
        self._repo_name = name
        self._tenant = tenant
        self._stats = stats
        stats.opened()
        self._mode = msg.mode
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
            if self._stats is not None:
                self._stats.closed()

    def _need(self, perm: str, what: str) -> None:
        if perm not in self._peer.permissions.get(self._repo_name, ""):
            raise Refused(P.E_NOT_ALLOWED, f"not allowed: {what} in repository {self._repo_name!r}")

    def _need_write_session(self, what: str) -> None:
        """PUT_PACK, REFS and COMMIT: the key's ``w`` and a session opened for write (which holds the lock)."""
        self._need(PERM_WRITE, what)
        if self._mode != P.MODE_WRITE:
            raise Refused(P.E_NOT_ALLOWED, f"not allowed: {what} in a session opened for read "
                                           f"(OPEN repository {self._repo_name!r} for write)")

    def _check_refs(self, ids: tuple[bytes, ...], what: str) -> None:
        """Strictly increasing after the refs so far, and at most MAX_SNAPSHOT_REFS of them in all."""
        if I.id_count(self._refs) + len(ids) > P.MAX_SNAPSHOT_REFS:
            raise Refused(P.E_PROTOCOL, f"more than MAX_SNAPSHOT_REFS ({P.MAX_SNAPSHOT_REFS}) refs for one snapshot")
        try:
            P.check_sorted(list(ids), what, bytes(self._refs[-ID_SIZE :]) if self._refs else None)
        except ProtocolError as exc:
            raise Refused(P.E_PROTOCOL, str(exc)) from None

    def _list(self, msg: P.List):
        if msg.prefix == "data/":
            self._need(PERM_READ, "listing packs")
        names = P.Names(tuple(self.sink.list(msg.prefix)))
        if len(names.names) > P.MAX_NAMES or sum(2 + len(n) for n in names.names) > P.F.MAX_FRAME_SIZE - 5:
            raise Refused(P.E_STORAGE, f"{len(names.names)} objects under {msg.prefix} do not fit in one NAMES "
                                       "frame (protocol version 1)")
        return names

    def _get(self, msg: P.Get):
        if msg.name.startswith("data/"):
            self._need(PERM_READ, "reading packs")
        try:
            return P.Data(next(self.sink.get_many([msg.name]))[1])
        except ObjectNotFound:
            raise Refused(P.E_NOT_FOUND, f"{msg.name} not found") from None

    def _put_pack(self, msg: P.PutPack):
        self._need_write_session("storing packs")
        size = len(msg.data)
        quota = self._tenant.quota if self._tenant is not None else None
        stats = self._stats
        if quota is not None and stats is not None:
            used = stats.used()
            # Only this session writes the repository (it holds the lock), so the total cannot move meanwhile.
            if used + size > quota and not self.sink.storage.exists(msg.name):
                raise Refused(P.E_QUOTA, f"quota exceeded: repository {self._repo_name!r} holds {used} bytes of "
                                         f"its quota of {quota} bytes; a pack of {size} bytes would take it to "
                                         f"{used + size} bytes (nothing of it was stored)")
        before = self.sink.stats["packs_stored"]
        self.sink.put_pack(msg.name, msg.data, msg.ids, msg.proof)
        if stats is not None and self.sink.stats["packs_stored"] > before:
            stats.stored(size)
        self.packs += 1
        return P.PackOk(msg.name)

    def _get_range(self, msg: P.GetRange):
        return self._ranges([(msg.name, msg.offset, msg.length)]).answers[0]

    def _get_ranges(self, msg: P.GetRanges):
        return self._ranges(msg.ranges)

    def _ranges(self, wanted) -> P.Ranges:
        self._need(PERM_READ, "reading packs")
        try:
            return P.Ranges(tuple(P.Range(size, data) for size, data in self.sink.get_ranges(wanted)))
        except ObjectNotFound as exc:
            raise Refused(P.E_NOT_FOUND, f"{exc.args[0] if exc.args else 'a pack'} not found") from None

    def _declare(self, msg: P.Declare):
        self._need_write_session("declaring objects")
        try:
            if msg.ids:
                self.sink.declare_pack(msg.name, msg.ids, msg.proof)
            else:
                self.sink.declare_snapshot(msg.name, msg.proof)
        except ObjectNotFound:
            raise Refused(P.E_NOT_FOUND, f"{msg.name} (or its refs) not found") from None
        return P.DeclareOk(msg.name)

    def _forget(self, msg: P.Forget):
        self._need_write_session("forgetting snapshots")
        found = self.sink.forget(msg.name, msg.proof)
        log.info("%s: forgot %s in %s%s", self._peer.label, msg.name[10:26], self._repo_name,
                 "" if found else " (already gone)")
        return P.ForgetOk(msg.name)

    def _prune(self, msg: P.Prune):
        self._need_write_session("pruning")
        dry_run = bool(msg.flags & P.PRUNE_DRY_RUN)
        report = self.sink.prune(dry_run=dry_run)
        if not dry_run and self._stats is not None:
            self._stats.deleted(report["bytes_deleted"], report["packs_deleted"])
        log.info("%s: %s %s: %d of %d packs (%d bytes)", self._peer.label, "dry-run prune of" if dry_run else "pruned",
                 self._repo_name, report["packs_deleted"], report["packs_total"], report["bytes_deleted"])
        return P.PruneOk(tuple(report[k] for k in P.PRUNE_COUNTERS))

    def _add_refs(self, msg: P.Refs):
        self._need_write_session("committing snapshots")
        self._check_refs(msg.ids, "REFS ids")
        self._refs += b"".join(msg.ids)
        return None

    def _refs_base(self, msg: P.RefsBase):
        self._need_write_session("committing snapshots")
        if self._base is not None or self._refs or self._dropped:
            raise Refused(P.E_PROTOCOL, "REFS_BASE after refs of the same commit")
        self._base = msg
        return None

    def _drop(self, msg: P.Drop):
        self._need_write_session("committing snapshots")
        if self._base is None:
            raise Refused(P.E_PROTOCOL, "DROP without REFS_BASE")
        if I.id_count(self._dropped) + len(msg.ids) > P.MAX_SNAPSHOT_REFS:
            raise Refused(P.E_PROTOCOL, f"more than MAX_SNAPSHOT_REFS ({P.MAX_SNAPSHOT_REFS}) dropped refs")
        try:
            P.check_sorted(list(msg.ids), "DROP ids", bytes(self._dropped[-ID_SIZE :]) if self._dropped else None)
        except ProtocolError as exc:
            raise Refused(P.E_PROTOCOL, str(exc)) from None
        self._dropped += b"".join(msg.ids)
        return None

    def _full_refs(self, added: bytearray, parent: str | None) -> I.Buffer:
        """The commit's refs: ``added`` itself, or (after REFS_BASE) the base's refs with the difference applied,
        checked against the count and digest the key holder's side computed over the refs it means."""
        base, dropped = self._base, self._dropped
        self._base, self._dropped = None, bytearray()
        if base is None:
            return added
        if base.base != parent:
            raise Refused(P.E_PROTOCOL, f"REFS_BASE names {base.base[:16]}, not the commit's parent "
                                        f"{(parent or 'none')[:16]}")
        try:
            refs = I.apply_difference(self.sink.refs_of(base.base), dropped, added)
        except ObjectNotFound:
            raise Refused(P.E_NOT_FOUND, f"the refs of base snapshot {base.base[:16]} are not here; "
                                         "the next sync sends its refs whole") from None
        except ValueError as exc:
            raise Refused(P.E_INTEGRITY, f"refs difference against snapshot {base.base[:16]}: {exc}; "
                                         "the next sync sends its refs whole") from None
        if I.id_count(refs) != base.count or P.refs_digest(refs) != base.digest:
            raise Refused(P.E_INTEGRITY, f"refs difference against snapshot {base.base[:16]} gives {I.id_count(refs)} "
                                         f"refs that are not the {base.count} the sender meant; "
                                         "the next sync sends its refs whole")
        return refs

    def _commit(self, msg: P.Commit):
        self._need_write_session("committing snapshots")
        self._check_refs(msg.refs, "COMMIT refs")
        added, self._refs = self._refs, bytearray()
        added += b"".join(msg.refs)
        refs = self._full_refs(added, msg.parent)
        self.sink.commit(msg.name, msg.data, refs, msg.proof, Claim(msg.tag, msg.parent))
        self.commits += 1
        if self._stats is not None:
            self._stats.committed(msg.tag.hex())
        log.info("%s: committed %s in %s (%d refs)", self._peer.label, msg.name[10:26], self._repo_name, I.id_count(refs))
        if self._on_commit is not None:
            # After the commit point; the hook must not block (it queues work) and can never undo the commit.
            try:
                self._on_commit(self._repo_name, msg.name)
            except Exception:  # noqa: BLE001
                log.exception("%s: commit hook failed (the snapshot is committed)", self._peer.label)
        return P.CommitOk(msg.name)


async def serve_session(reader, writer, repos: Mapping[str, str] | Tenants, peer: Peer,
                        on_commit: Callable[[str, str], None] | None = None) -> ServerSession:
    """Run one session.  ``on_commit(repository name, snapshot object name)`` is called after each commit."""
    session = ServerSession(reader, writer, repos, peer, on_commit)
    await session.run()
    return session

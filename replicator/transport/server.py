"""The receiving side: one protocol session per SSH channel, writing a plain local repository.

The receiver never has the passphrase.  It hands out ``config`` and
``keys/default`` (the key file is sealed under the passphrase), lists and
serves ``ids/`` and ``snapshots/`` objects, stores uploaded packs after
checking that their SHA-256 is their name, keeps for each pack an
``ids/<pack hash>`` object (the blob ids it holds, as the sender declared
them), and commits a snapshot only if every blob id it references is in
those lists.  Writes go through repo.local.LocalStorage (temporary file,
fsync, link, directory fsync), so an acknowledgement means durable.

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
import errno
import fcntl
import hashlib
import logging
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from replicator import constants as C
from replicator.errors import ObjectNotFound, ReplicatorError, StorageError
from replicator.repo.local import LocalStorage
from replicator.repo.repository import CONFIG_NAME, KEY_NAME, LOCK_FILE, Repository
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


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
        self._storage: LocalStorage | None = None
        self._repo_name = ""
        self._mode = 0
        self._lock_fd: int | None = None
        self._present: set[bytes] = set()
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
            await self._fail(P.E_PROTOCOL, str(exc))
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
            msg = await P.read_message(self._reader, limit)
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
                await self._fail(P.E_PROTOCOL, str(exc))
                return
            except ReplicatorError as exc:
                await self._fail(P.E_STORAGE, str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - one line to the peer and the log, never a traceback
                log.exception("%s: internal error", self._peer.label)
                await self._fail(P.E_INTERNAL, f"internal error: {exc.__class__.__name__}")
                return
            if answer is not None:
                self._writer.write(answer.encode())
                await self._writer.drain()

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
            storage, _config = Repository.open_storage(path)
            config, keyfile = storage.get(CONFIG_NAME), storage.get(KEY_NAME)
        except ReplicatorError as exc:
            raise Refused(P.E_NO_REPOSITORY, f"repository {name!r}: {exc}") from None
        self._storage, self._repo_name, self._mode = storage, name, msg.mode
        if msg.mode == P.MODE_WRITE:
            self._lock(storage.root)
            storage.clean_temporaries()
            for obj in storage.list("ids/"):
                digest = obj.rsplit("/", 1)[-1]
                if not P.IDS_NAME_RE.match(obj) or not storage.exists(f"data/{digest[:2]}/{digest}"):
                    continue  # an id list whose pack is gone (prune) proves nothing is present
                data = storage.get(obj)
                if len(data) % C.ID_SIZE == 0:
                    self._present.update(data[i : i + C.ID_SIZE] for i in range(0, len(data), C.ID_SIZE))
        log.info("%s: opened %s for %s", self._peer.label, name, "write" if msg.mode == P.MODE_WRITE else "read")
        return P.OpenOk(config, keyfile)

    def _lock(self, root: str) -> None:
        fd = os.open(os.path.join(root, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise Refused(P.E_LOCKED, f"repository {self._repo_name!r} is locked by another writer") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} (serve)\n".encode(), 0)
        self._lock_fd = fd

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _need(self, perm: str, what: str) -> None:
        if perm not in self._peer.permissions.get(self._repo_name, ""):
            raise Refused(P.E_NOT_ALLOWED, f"not allowed: {what} in repository {self._repo_name!r}")

    def _list(self, msg: P.List):
        if msg.prefix == "data/":
            self._need(PERM_READ, "listing packs")
        names = self._storage.list(msg.prefix)
        if msg.prefix == "ids/":
            # Only id lists of packs that exist: a sender deduplicates against whatever is listed here.
            names = (n for n in names if P.IDS_NAME_RE.match(n) and self._storage.exists(f"data/{n[4:6]}/{n[4:]}"))
        return P.Names(tuple(sorted(names)))

    def _get(self, msg: P.Get):
        if msg.name.startswith("data/"):
            self._need(PERM_READ, "reading packs")
        try:
            return P.Data(self._storage.get(msg.name))
        except ObjectNotFound:
            raise Refused(P.E_NOT_FOUND, f"{msg.name} not found") from None

    def _put_pack(self, msg: P.PutPack):
        self._need(PERM_WRITE, "storing packs")
        digest = msg.name.rsplit("/", 1)[1]
        if _sha256_hex(msg.data) != digest:
            raise Refused(P.E_INTEGRITY, f"pack {digest[:16]}: content does not match its name")
        if not (msg.data.startswith(C.PACK_MAGIC) and msg.data.endswith(C.PACK_FOOTER_MAGIC)
                and len(msg.data) >= C.PACK_HEADER_SIZE + C.PACK_FOOTER_SIZE):
            raise Refused(P.E_INTEGRITY, f"pack {digest[:16]} is not a pack")
        self._store_once(msg.name, msg.data)
        ids_name = f"ids/{digest}"
        if self._storage.exists(ids_name):
            data = self._storage.get(ids_name)
            self._present.update(data[i : i + C.ID_SIZE] for i in range(0, len(data), C.ID_SIZE))
        else:
            # After the pack (a crash between leaves a pack without ids: harmless, re-sent next time).
            self._store_once(ids_name, b"".join(msg.ids))
            self._present.update(msg.ids)
        self.packs += 1
        return P.PackOk(msg.name)

    def _store_once(self, name: str, data: bytes) -> None:
        try:
            self._storage.put(name, data)
        except FileExistsError:
            pass  # objects are named by content (packs) or by their pack: already have it
        except StorageError as exc:
            raise Refused(P.E_STORAGE, str(exc)) from None

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
        missing = sum(1 for r in refs if r not in self._present)
        if missing:
            raise Refused(P.E_MISSING_REFS, f"snapshot references {missing} missing chunks; not committed")
        digest = msg.name.rsplit("/", 1)[1]
        data = msg.data
        if _sha256_hex(data) != digest:
            raise Refused(P.E_INTEGRITY, f"snapshot {digest[:16]}: content does not match its name")
        if not data.startswith(C.SNAPSHOT_MAGIC) or len(data) < 60 or \
                not C.FORMAT_VERSION_MIN <= int.from_bytes(data[8:10], "little") <= C.FORMAT_VERSION_MAX:
            raise Refused(P.E_INTEGRITY, f"snapshot {digest[:16]} is not a snapshot of a supported version")
        # refs first, the snapshot last: its appearance is the commit point.
        self._store_once(f"refs/{digest}", b"".join(refs))
        self._store_once(msg.name, data)
        self.commits += 1
        log.info("%s: committed %s in %s (%d refs)", self._peer.label, digest[:16], self._repo_name, len(refs))
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


# --- key-less verification at the receiving site ---------------------------------
@dataclass
class KeylessReport:
    packs: int = 0
    ids_objects: int = 0
    snapshots: int = 0
    refs_checked: int = 0
    problems: list[str] = field(default_factory=list)
    not_checked: tuple[str, ...] = (
        "snapshot signatures and content (need the passphrase)",
        "chunk content and pack tables (need the passphrase)",
        "whether ids/ lists match the encrypted pack tables (need the passphrase)",
    )

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return dict(self.__dict__, ok=self.ok, not_checked=list(self.not_checked))


def verify_without_key(path: str) -> KeylessReport:
    """Check what can be checked without the passphrase.

    Every pack's SHA-256 equals its name; every ``ids/`` object names an
    existing pack and is a whole number of ids; every snapshot's SHA-256 equals
    its name and it has a ``refs/`` object whose ids are all in ``ids/`` lists.
    :raises RepositoryNotFound: no repository at ``path``.
    """
    storage, _cfg = Repository.open_storage(path)
    report = KeylessReport()
    packs = set()
    for name in sorted(storage.list("data/")):
        report.packs += 1
        m = P.PACK_NAME_RE.match(name)
        if not m:
            report.problems.append(f"{name}: not a pack name")
            continue
        packs.add(m.group(2))
        if _sha256_hex(storage.get(name)) != m.group(2):
            report.problems.append(f"pack {name}: content does not match its name")
    present: set[bytes] = set()
    for name in sorted(storage.list("ids/")):
        report.ids_objects += 1
        digest = name.rsplit("/", 1)[-1]
        data = storage.get(name)
        if not P.IDS_NAME_RE.match(name) or digest not in packs:
            report.problems.append(f"{name}: no such pack")
            continue
        if len(data) % C.ID_SIZE:
            report.problems.append(f"{name}: not a whole number of 32-byte ids")
            continue
        present.update(data[i : i + C.ID_SIZE] for i in range(0, len(data), C.ID_SIZE))
    for name in sorted(storage.list("snapshots/")):
        report.snapshots += 1
        digest = name.rsplit("/", 1)[-1]
        if _sha256_hex(storage.get(name)) != digest:
            report.problems.append(f"snapshot {digest[:16]}: content does not match its name")
        try:
            refs = storage.get(f"refs/{digest}")
        except ObjectNotFound:
            report.problems.append(f"snapshot {digest[:16]}: no refs/ object (not written by replicator serve?)")
            continue
        missing = sum(1 for i in range(0, len(refs), C.ID_SIZE) if refs[i : i + C.ID_SIZE] not in present)
        report.refs_checked += len(refs) // C.ID_SIZE
        if len(refs) % C.ID_SIZE or missing:
            report.problems.append(f"snapshot {digest[:16]}: references {missing} missing chunks")
    return report

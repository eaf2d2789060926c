"""RemoteDestination: sync.Destination over one SSH channel to ``replicator serve``.

The sender does everything that needs the key: it fetches ``config`` and
``keys/default`` from the receiver, unlocks the master key with the
passphrase, computes ids, compresses, encrypts and builds packs locally
(repo.packs.PackWriter), and uploads whole sealed packs with the sorted list
of blob ids each holds.  Up to ``window`` packs travel unacknowledged; a pack
counts as stored only when the receiver acknowledges it, which it does once
the pack is durable.  Dedup is a local lookup: the receiver's ``ids/``
objects are downloaded once (cached per repository id in the cache
directory) and every id uploaded in this session is added.

asyncssh needs an event loop while the sync engine is synchronous and
threaded: the connection lives on a private loop in a background thread, and
the synchronous methods submit coroutines to it.

Must never: import asyncssh (ssh.py does), print, or read argv/env.
"""
from __future__ import annotations

import asyncio
import collections
import os
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Coroutine
from urllib.parse import urlsplit

from replicator import constants as C
from replicator.core import crypto
from replicator.core.chunker import Chunker, gear_table
from replicator.core.compress import compress
from replicator.core.ids import IdHasher
from replicator.errors import IntegrityError, UnsupportedVersion, UsageError
from replicator.repo import keys as K
from replicator.repo.packs import PackWriter
from replicator.repo.repository import parse_config
from replicator.repo.snapshot import Snapshot, open_snapshot, seal_snapshot
from replicator.repo.tree import TreeItem, encode_tree
from replicator.transport import protocol as P
from replicator.transport import ssh
from replicator.transport.frames import ProtocolError

DEFAULT_WINDOW = 4  # packs in flight: 4 x 16 MiB keeps a 20 ms RTT link full up to ~3 GB/s
WRITE_PIECE = 256 * 1024  # bandwidth limiting granularity
GET_BATCH = 64  # id lists fetched concurrently at session start


@dataclass(frozen=True)
class RemoteUrl:
    user: str
    host: str
    port: int
    name: str

    def __str__(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}/{self.name}"


def parse_url(url: str, default_user: str | None = None) -> RemoteUrl:
    """``ssh://USER@HOST:PORT/NAME`` (port default 22).  :raises UsageError:"""
    try:
        parts = urlsplit(url)
        port = parts.port or 22
    except ValueError as exc:
        raise UsageError(f"bad remote {url!r}: {exc}") from None
    name = parts.path.lstrip("/")
    user = parts.username or default_user
    if parts.scheme != "ssh" or not parts.hostname or not name or "/" in name or not user:
        raise UsageError(f"bad remote {url!r}: expected ssh://USER@HOST:PORT/NAME")
    return RemoteUrl(user, parts.hostname, port, name)


def parse_rate(text: str) -> int:
    """``"20M"`` -> bytes per second (suffixes k, M, G are powers of 1024).  :raises UsageError:"""
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("/s").removesuffix("b")
    try:
        value = float(t[:-1]) * mult[t[-1]] if t and t[-1] in mult else float(t)
    except ValueError:
        raise UsageError(f"bad rate {text!r} (e.g. 500k, 20M, 1G bytes per second)") from None
    if value < 1024:
        raise UsageError(f"rate {text!r} is below 1 KiB/s")
    return int(value)


class _TokenBucket:
    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.tokens = float(min(rate, WRITE_PIECE))
        self.stamp = time.monotonic()

    async def take(self, n: int) -> None:
        now = time.monotonic()
        self.tokens = min(float(self.rate), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


class ClientSession:
    """The protocol client on the event loop: ordered requests, answers matched in order."""

    def __init__(self, conn: ssh.ClientConnection, where: str, bwlimit: int | None = None) -> None:
        self._conn = conn
        self._where = where
        self._bucket = _TokenBucket(bwlimit) if bwlimit else None
        self._pending: collections.deque[tuple[int, asyncio.Future]] = collections.deque()
        self._wlock = asyncio.Lock()
        self._reader_task: asyncio.Task | None = None
        self._dead: BaseException | None = None
        self.bytes_sent = 0
        self.bytes_received = 0

    async def start(self) -> int:
        ours = P.Hello()
        await self._write(ours.encode())
        try:
            msg = await P.read_message(self._conn.reader, 1 << 16)
        except ProtocolError as exc:
            raise ProtocolError(f"{self._where}: {exc}") from None
        if isinstance(msg, P.Error):
            raise P.RemoteError(self._where, msg.message, msg.code)
        if not isinstance(msg, P.Hello):
            raise ProtocolError(f"{self._where} did not answer with HELLO (is it replicator serve?)")
        version = P.negotiate(ours, msg)
        self._reader_task = asyncio.get_running_loop().create_task(self._read_answers())
        return version

    async def _write(self, frame: bytes) -> None:
        writer = self._conn.writer
        if self._bucket is None:
            writer.write(frame)
        else:
            view = memoryview(frame)
            for i in range(0, len(view), WRITE_PIECE):
                piece = view[i : i + WRITE_PIECE]
                await self._bucket.take(len(piece))
                writer.write(bytes(piece))
                await writer.drain()
        await writer.drain()
        self.bytes_sent += len(frame)

    def _fail_all(self, exc: BaseException) -> None:
        self._dead = exc
        while self._pending:
            _t, fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(exc)

    async def _read_answers(self) -> None:
        try:
            while True:
                got = await P.read_frame(self._conn.reader)
                if got is None:
                    raise P.TransportError(f"{self._where} closed the connection")
                self.bytes_received += P.F.HEADER_SIZE + len(got[1])
                msg = P.decode_message(*got)
                if isinstance(msg, P.Error):
                    raise P.RemoteError(self._where, msg.message, msg.code)
                if not self._pending:
                    raise ProtocolError(f"{self._where} sent an unrequested message (type {msg.TYPE})")
                expect, fut = self._pending.popleft()
                if msg.TYPE != expect:
                    raise ProtocolError(f"{self._where} answered with type {msg.TYPE}, expected {expect}")
                if not fut.done():
                    fut.set_result(msg)
        except asyncio.CancelledError:
            self._fail_all(P.TransportError(f"connection to {self._where} closed"))
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            if not isinstance(exc, (P.RemoteError, ProtocolError, P.TransportError)):
                exc = P.TransportError(f"connection to {self._where} lost: {exc}")
            self._fail_all(exc)

    async def send(self, msg, expect: int | None) -> asyncio.Future | None:
        """Queue ``msg``; :returns: a future for its answer (None when it has none)."""
        if self._dead is not None:
            raise self._dead
        frame = msg.encode()
        async with self._wlock:
            fut = None
            if expect is not None:
                fut = asyncio.get_running_loop().create_future()
                self._pending.append((expect, fut))
            try:
                await self._write(frame)
            except (OSError, Exception) as exc:  # noqa: BLE001 - the channel broke under us
                if self._dead is not None:
                    raise self._dead from None
                raise P.TransportError(f"connection to {self._where} lost: {exc}") from None
        return fut

    async def request(self, msg, expect: int):
        fut = await self.send(msg, expect)
        return await fut

    async def close(self) -> None:
        if self._dead is None:
            try:
                await self.send(P.Bye(), None)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        if self._reader_task is not None:
            self._reader_task.cancel()
            try:
                await self._reader_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._conn.close()
        try:
            await asyncio.wait_for(self._conn.wait_closed(), 5)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001
            pass


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ssh-loop", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine) -> Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine, timeout: float | None = None) -> Any:
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


class RemoteDestination:
    """A sync.Destination at ``replicator serve``.  Use as a context manager; not reusable after commit."""

    def __init__(self, url: RemoteUrl, passphrase: bytes, *, identity: str, known_hosts: str,
                 accept_host_key: str | None = None, cache_dir: str | None = None,
                 window: int = DEFAULT_WINDOW, bwlimit: int | None = None) -> None:
        self.url = url
        self.location = str(url)
        self.window = max(1, window)
        self.warnings: list[str] = []
        self.stats = {"packs_written": 0, "bytes_written": 0, "blobs_written": 0, "bytes_sent": 0,
                      "bytes_received": 0, "id_lists_fetched": 0}
        self._writer: PackWriter | None = None
        self._inflight: collections.deque[Future] = collections.deque()
        self._refs: set[bytes] = set()
        self._known: set[bytes] = set()
        self._session: ClientSession | None = None
        self._io = _LoopThread()
        try:
            self._open(passphrase, identity, known_hosts, accept_host_key, bwlimit, cache_dir)
        except BaseException:
            self.close()
            raise

    def _open(self, passphrase, identity, known_hosts, accept_host_key, bwlimit, cache_dir) -> None:
        u = self.url
        conn = self._io.run(ssh.connect(u.host, u.port, u.user, identity, known_hosts, accept_host_key))
        self._session = ClientSession(conn, f"{u.host}:{u.port}", bwlimit)
        self._io.run(self._session.start())
        ok = self._call(P.Open(u.name, P.MODE_WRITE), P.OPEN_OK)
        self.config = parse_config(ok.config, self.location)
        self.id = self.config["id"]
        self.params = self.config["params"]
        self.compression_level: int = self.config["compression_level"]
        id_bytes = bytes.fromhex(self.id)
        master = K.unlock(ok.keyfile, id_bytes, passphrase, self.location)
        self.keys = K.KeySet.derive(master, id_bytes)
        self.public_key = bytes.fromhex(K.parse_keyfile(ok.keyfile)["signing_public_key"])
        self.signer = crypto.SigningKey(self.keys.sign_seed)
        self.chunk_hasher = IdHasher(self.keys.chunk_id)
        self.tree_hasher = IdHasher(self.keys.tree_id)
        self._load_ids(os.path.join(cache_dir, self.id, "remote-ids") if cache_dir else None)

    def _call(self, msg, expect: int):
        return self._io.run(self._session.request(msg, expect))

    def _load_ids(self, cache: str | None) -> None:
        """Every blob id the receiver lists in ``ids/``; the lists are fetched once and cached."""
        names = [n for n in self._call(P.List("ids/"), P.NAMES).names if P.IDS_NAME_RE.match(n)]
        digests = {n.split("/", 1)[1]: n for n in names}
        lists: dict[str, bytes] = {}
        if cache:
            os.makedirs(cache, exist_ok=True)
            for fn in os.listdir(cache):
                if fn in digests:
                    with open(os.path.join(cache, fn), "rb") as f:
                        lists[fn] = f.read()
                else:
                    os.unlink(os.path.join(cache, fn))  # the receiver no longer lists it
        missing = [d for d in digests if d not in lists]

        async def fetch(batch: list[str]) -> list:
            futs = [await self._session.send(P.Get(digests[d]), P.DATA) for d in batch]
            return [(await f).data for f in futs]

        for i in range(0, len(missing), GET_BATCH):
            batch = missing[i : i + GET_BATCH]
            for digest, data in zip(batch, self._io.run(fetch(batch))):
                lists[digest] = data
                self.stats["id_lists_fetched"] += 1
                if cache:
                    tmp = os.path.join(cache, f".tmp-{digest}")
                    with open(tmp, "wb") as f:
                        f.write(data)
                    os.replace(tmp, os.path.join(cache, digest))
        for data in lists.values():
            self._known.update(data[i : i + C.ID_SIZE] for i in range(0, len(data) - len(data) % C.ID_SIZE,
                                                                        C.ID_SIZE))

    # --- Destination ---------------------------------------------------------------
    def chunker(self) -> Chunker:
        return Chunker(self.params, gear_table(self.keys.gear))

    def has_blob(self, blob_id: bytes) -> bool:
        """Thread-safe local lookup: the receiver's id lists plus everything sent in this session."""
        return blob_id in self._known

    def store_blob(self, blob_type: int, blob_id: bytes, method: int, payload: bytes, raw_len: int) -> bool:
        if blob_id in self._known:
            return False
        if self._writer is None:
            self._writer = PackWriter(self.keys.encrypt)
        self._writer.add(blob_type, blob_id, method, payload, raw_len)
        self._known.add(blob_id)
        self.stats["blobs_written"] += 1
        if len(self._writer) >= C.PACK_TARGET_SIZE or self._writer.count >= C.PACK_MAX_BLOBS:
            self._ship()
        return True

    def _ship(self) -> None:
        """Seal the current pack and upload it without waiting for its ack (up to ``window`` in flight)."""
        writer, self._writer = self._writer, None
        if writer is None or not writer.count:
            return
        name, data, entries = writer.finish()
        ids = tuple(sorted({e.id for e in entries}))
        self._inflight.append(self._io.submit(self._session.request(P.PutPack(name, ids, data), P.PACK_OK)))
        self.stats["packs_written"] += 1
        self.stats["bytes_written"] += len(data)
        while len(self._inflight) > self.window or (self._inflight and self._inflight[0].done()):
            self._inflight.popleft().result()
        self.stats["bytes_sent"] = self._session.bytes_sent

    def flush(self) -> None:
        """Upload the pack being filled and wait until every pack is acknowledged (durable)."""
        self._ship()
        while self._inflight:
            self._inflight.popleft().result()
        self.stats["bytes_sent"] = self._session.bytes_sent

    def store_tree(self, items: list[TreeItem]) -> bytes:
        data = encode_tree(items)
        tree_id = self.tree_hasher(data)
        self._refs.add(tree_id)
        for item in items:
            self._refs.update(item.entry.chunks)
        if tree_id not in self._known:
            method, payload = compress(data, self.compression_level)
            self.store_blob(C.BLOB_TREE, tree_id, method, payload, len(data))
        return tree_id

    def _snapshots(self, damaged: list[str]) -> list[Snapshot]:
        names = [n for n in self._call(P.List("snapshots/"), P.NAMES).names if P.SNAPSHOT_NAME_RE.match(n)]

        async def fetch() -> list:
            futs = [await self._session.send(P.Get(n), P.DATA) for n in names]
            return [(await f).data for f in futs]

        snaps = []
        for name, data in zip(names, self._io.run(fetch())):
            try:
                snaps.append(open_snapshot(name, data, self.keys.encrypt, self.public_key, self.id))
            except (IntegrityError, UnsupportedVersion) as exc:
                damaged.append(str(exc))
        return snaps

    def commit_snapshot(self, source: str, tree_id: bytes, stats: dict) -> Snapshot:
        """Flush, number the snapshot from the receiver's snapshots, seal it and COMMIT it with its refs."""
        self.flush()
        damaged: list[str] = []
        previous = [s for s in self._snapshots(damaged) if s.source == source]
        for problem in damaged:
            self.warnings.append(f"{problem} (ignored when numbering this snapshot)")
        latest = max(previous, key=lambda s: s.generation, default=None)
        # Same numbering rule as Repository.commit_snapshot (docs/FORMAT.md 12.4/12.5).
        snap = Snapshot(id="", repository=self.id, source=source,
                        generation=(latest.generation if latest else 0) + len(damaged) + 1,
                        time_ns=time.time_ns(), tree=tree_id, hostname=socket.gethostname(), stats=stats,
                        parent=latest.id if latest else None)
        name, data = seal_snapshot(snap, self.keys.encrypt, self.signer)
        refs = sorted(self._refs | {tree_id})
        batch = P.MAX_IDS_PER_FRAME
        while len(refs) > batch:
            self._io.run(self._session.send(P.Refs(tuple(refs[:batch])), None))
            refs = refs[batch:]
        self._call(P.Commit(name, data, tuple(refs)), P.COMMIT_OK)
        self._refs = set()
        self.stats["bytes_sent"] = self._session.bytes_sent
        self.stats["bytes_received"] = self._session.bytes_received
        return open_snapshot(name, data, self.keys.encrypt, self.public_key, self.id)

    # --- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        """Say BYE and close.  Packs not acknowledged are simply re-sent by the next run."""
        for fut in self._inflight:
            fut.cancel()
        self._inflight.clear()
        if self._session is not None:
            self.stats["bytes_sent"] = self._session.bytes_sent
            self.stats["bytes_received"] = self._session.bytes_received
            try:
                self._io.run(self._session.close(), timeout=15)
            except Exception:  # noqa: BLE001 - closing
                pass
            self._session = None
        self._io.stop()

    def __enter__(self) -> "RemoteDestination":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""RemoteSink: a key-less Sink over one SSH channel to ``replicator serve``.

The writer (repo/writer.py) does everything that needs the key on this side;
this module only moves sealed objects.  At OPEN the receiver hands out
``config`` and the sealed ``keys/default``, which the writer unlocks itself.
Packs are uploaded whole with the sorted ids each holds; up to ``window``
travel unacknowledged, and a pack counts as durable only once the receiver
acknowledges it.  Held ids are the receiver's ``ids/`` lists whose declaration
proof verifies with the key holder's public key (``trust``), fetched once
(cached per repository id in the cache directory, only once verified), plus
every id put in this session: a list the receiver forged or kept from before
proofs existed is not deduplicated against (``legacy_packs``; the writer's
upgrade signs the genuine ones).

asyncssh needs an event loop while the writer is synchronous and threaded:
the connection lives on a private loop in a background thread, and the
synchronous methods submit coroutines to it.

Must never: hold or derive a key, import asyncssh (ssh.py does), print, or
read argv/env.
"""
from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from replicator.constants import ID_SIZE
from replicator.format import idlist as I
from replicator.format import layout as L
from replicator.format.head import Claim
from replicator.format.idlist import IDS_MAGIC, Verifier, decode_ids
from replicator.format.repoconfig import parse_config
from replicator.store import atomic
from replicator.store.idset import IdSet
from replicator.store.lock import pid_alive
from replicator.transport import protocol as P
from replicator.transport import ssh
from replicator.transport.frames import ProtocolError
from replicator.transport.refs_cache import RefsCache
from replicator.transport.url import RemoteUrl

DEFAULT_WINDOW = 4  # packs in flight: 4 x 16 MiB keeps a 20 ms RTT link full up to ~3 GB/s
WRITE_PIECE = 256 * 1024  # bandwidth limiting granularity
GET_BATCH = 64  # objects fetched concurrently
ANY_BODY = P.F.MAX_FRAME_SIZE  # an answer whose body has no cap below the frame's


@dataclass
class _Pending:
    """A request waiting for its answer, and what the answer may be: its type and the largest body accepted."""

    expect: int
    fut: asyncio.Future
    what: str
    max_body: int = ANY_BODY
    id_list: bool = False  # a GET of ids/: counts against the session's MAX_REMOTE_ID_BYTES


def _retrieved(fut: asyncio.Future) -> None:
    """Done callback: mark a failure as seen, so a request nobody awaits any more is not logged at exit."""
    if not fut.cancelled():
        fut.exception()


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
        self._pending: collections.deque[_Pending] = collections.deque()
        self._wlock = asyncio.Lock()
        self._reader_task: asyncio.Task | None = None
        self._dead: BaseException | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.id_list_bytes = 0  # ids/ objects held this session (cached and fetched), at most MAX_REMOTE_ID_BYTES

    async def start(self) -> int:
        ours = P.Hello()
        await self._write(ours)
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

    async def _write(self, msg) -> None:
        """Write one message part by part (no joined copy of a 16 MiB pack), paced by ``--bwlimit``."""
        writer = self._conn.writer
        if self._bucket is None:
            self.bytes_sent += await P.write_message(writer, msg)
            return
        for part in msg.encode_parts():
            view = memoryview(part)
            for i in range(0, len(view), WRITE_PIECE):
                piece = view[i : i + WRITE_PIECE]
                await self._bucket.take(len(piece))
                writer.write(piece)
                await writer.drain()
            self.bytes_sent += len(view)

    def _fail_all(self, exc: BaseException) -> None:
        if self._dead is None:
            self._dead = exc
        while self._pending:
            fut = self._pending.popleft().fut
            if not fut.done():
                fut.set_exception(exc)

    def count_id_lists(self, nbytes: int) -> None:
        """Add ``nbytes`` of id lists to this session's.  :raises ProtocolError: past MAX_REMOTE_ID_BYTES."""
        self.id_list_bytes += nbytes
        if self.id_list_bytes > P.MAX_REMOTE_ID_BYTES:
            raise ProtocolError(f"{self._where} lists more than MAX_REMOTE_ID_BYTES ({P.MAX_REMOTE_ID_BYTES}) bytes "
                                f"of id lists ({P.MAX_REMOTE_ID_BYTES // 32} chunk ids); refusing to hold more")

    def _check_answer(self, msg_type: int, body: bytes | memoryview) -> None:
        """Caps checked on the raw body before it is decoded (PROTOCOL.md 3, "Limits": the sender's caps).

        :raises ProtocolError:
        """
        if msg_type == P.ERROR or not self._pending:
            return  # an ERROR is capped by its decoder; an unrequested message is refused after decoding
        head = self._pending[0]
        if len(body) > head.max_body:
            cap = "MAX_ID_LIST_OBJECT" if head.id_list else "its cap"
            raise ProtocolError(f"{self._where} answered {head.what} with {len(body)} bytes, more than {cap} "
                                f"({head.max_body})")
        if msg_type == P.NAMES and len(body) >= 4:
            count = int.from_bytes(body[:4], "big")
            if count > P.MAX_LISTED_NAMES:
                raise ProtocolError(f"{self._where} listed {count} names, more than MAX_LISTED_NAMES "
                                    f"({P.MAX_LISTED_NAMES})")
        if head.id_list and msg_type == P.DATA:
            self.count_id_lists(max(0, len(body) - 4))

    async def _read_answers(self) -> None:
        try:
            while True:
                got = await P.read_frame(self._conn.reader)
                if got is None:
                    raise P.TransportError(f"{self._where} closed the connection")
                self.bytes_received += P.F.HEADER_SIZE + len(got[1])
                self._check_answer(*got)
                msg = P.decode_message(*got)
                if isinstance(msg, P.Error):
                    raise P.RemoteError(self._where, msg.message, msg.code)
                if not self._pending:
                    raise ProtocolError(f"{self._where} sent an unrequested message (type {msg.TYPE})")
                head = self._pending.popleft()
                if msg.TYPE != head.expect:
                    raise ProtocolError(f"{self._where} answered {head.what} with type {msg.TYPE}, "
                                        f"expected {head.expect}")
                if not head.fut.done():
                    head.fut.set_result(msg)
        except asyncio.CancelledError:
            self._fail_all(P.TransportError(f"connection to {self._where} closed"))
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            if not isinstance(exc, (P.RemoteError, ProtocolError, P.TransportError)):
                exc = P.TransportError(f"connection to {self._where} lost: {exc}")
            self._fail_all(exc)

    async def send(self, msg, expect: int | None, *, max_body: int = ANY_BODY,
                   id_list: bool = False) -> asyncio.Future | None:
        """Queue ``msg``; :returns: a future for its answer (None when it has none).

        ``max_body``: the largest answer body accepted (checked before decoding); ``id_list``: the answer
        is an ids/ object, counted against MAX_REMOTE_ID_BYTES.  Every failure of the session is raised
        by every request waiting in it, and a failure nobody awaits is never logged.
        """
        return (await self.send_many([msg], expect, max_body=max_body, id_list=id_list))[0]

    async def send_many(self, msgs: Sequence, expect: int | None, *, max_body: int = ANY_BODY,
                        id_list: bool = False, answers: Sequence[int] | None = None) -> list[asyncio.Future | None]:
        """``send`` of each of ``msgs`` (all answered by ``expect``, or none), in one write: small frames are
        joined (P.write_parts), so a round of small requests costs a few SSH packets, not one or two each.

        ``answers``: how many answers each message gets (GET_RANGES: one per range); the futures of all
        answers are returned, in order.  Default: one each (none when ``expect`` is None)."""
        if self._dead is not None:
            raise self._dead
        async with self._wlock:
            if self._dead is not None:
                raise self._dead
            futs: list[asyncio.Future | None] = []
            for i, msg in enumerate(msgs):
                if expect is None:
                    futs.append(None)
                    continue
                detail = next((str(getattr(msg, a)) for a in ("name", "prefix", "repository") if hasattr(msg, a)), "")
                for _ in range(1 if answers is None else answers[i]):
                    fut = asyncio.get_running_loop().create_future()
                    fut.add_done_callback(_retrieved)
                    self._pending.append(_Pending(expect, fut, f"{type(msg).__name__} {detail}".strip(), max_body,
                                                  id_list))
                    futs.append(fut)
            try:
                if self._bucket is None:  # big parts in drained pieces: asyncssh holds no copy of a whole pack
                    self.bytes_sent += await P.write_parts_paced(self._conn.writer,
                                                                 (p for m in msgs for p in m.encode_parts()))
                else:
                    for msg in msgs:
                        await self._write(msg)
            except (OSError, Exception) as exc:  # noqa: BLE001 - the channel broke under us
                if self._dead is None:
                    self._fail_all(P.TransportError(f"connection to {self._where} lost: {exc}"))
                assert self._dead is not None
                raise self._dead from None
        return futs

    async def request(self, msg, expect: int, **caps):
        fut = await self.send(msg, expect, **caps)
        assert fut is not None  # an expected answer always has a future
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


def _written_by_a_live_process(temporary: str) -> bool:
    """Whether an atomic.py temporary (``.tmp-<pid>-<random>``) may still be written by a process of this host."""
    try:
        return pid_alive(int(temporary[len(atomic.TMP_PREFIX):].split("-", 1)[0]))
    except ValueError:
        return True  # not ours to judge: left alone


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # another sender of this host removed it first


def _answer_caps(name: str) -> dict:
    """What a DATA answer to GET ``name`` may be (its body: u32 length + the object)."""
    if name.startswith(L.IDS):
        return {"max_body": 4 + P.MAX_ID_LIST_OBJECT, "id_list": True}
    if name.startswith(L.SNAPSHOTS):
        return {"max_body": 4 + P.MAX_SNAPSHOT_OBJECT}
    return {}


async def _answer_of(fut: asyncio.Future):
    """The answer a request waits for (on the loop), for the sender's thread to wait on."""
    return await fut


class RemoteSink:
    """A Sink at ``replicator serve``.  Use as a context manager."""

    def __init__(self, url: RemoteUrl, *, identity: str, known_hosts: str, accept_host_key: str | None = None,
                 cache_dir: str | None = None, window: int | None = DEFAULT_WINDOW, bwlimit: int | None = None,
                 mode: int = P.MODE_WRITE) -> None:
        self.url = url
        self.location = str(url)
        self.window = max(1, window or DEFAULT_WINDOW)
        self.warnings: list[str] = []
        self.stats = {"bytes_sent": 0, "bytes_received": 0, "id_lists_fetched": 0}
        self._inflight: collections.deque[Future] = collections.deque()
        self._held: IdSet | None = None  # the receiver's ids in bounded RAM (store/idset.py), made at open
        self.legacy_packs: set[str] = set()  # packs whose listed ids carry no valid proof
        self._session: ClientSession | None = None
        self._io = _LoopThread()
        try:
            conn = self._io.run(ssh.connect(url.host, url.port, url.user, identity, known_hosts, accept_host_key))
            self._session = ClientSession(conn, f"{url.host}:{url.port}", bwlimit)
            self.version = self._io.run(self._session.start())
            ok = self._call(P.Open(url.name, mode), P.OPEN_OK)
            self._config, self._keyfile = ok.config, ok.keyfile
            repo_id = parse_config(ok.config, self.location)["id"]
            self._cache = os.path.join(cache_dir, repo_id, "remote-ids") if cache_dir else None
            # The refs this site last committed per source: the next commit sends a difference from them.
            self._last_refs = RefsCache(os.path.join(cache_dir, repo_id)) if cache_dir else None
            # Its runs go in the sender's cache dir (disk, not RAM), private to this process.
            self._held = IdSet(parent=os.path.join(cache_dir, repo_id, "remote-idset") if cache_dir else None)
        except BaseException:
            self.close()
            raise

    @property
    def session(self) -> ClientSession:
        if self._session is None:
            raise P.TransportError(f"connection to {self.location} closed")
        return self._session

    def _call(self, msg, expect: int):
        return self._io.run(self.session.request(msg, expect))

    def _update_stats(self) -> None:
        if self._session is not None:
            self.stats["bytes_sent"] = self._session.bytes_sent
            self.stats["bytes_received"] = self._session.bytes_received

    def trust(self, verifier: Verifier) -> None:
        """Load the receiver's id lists, keeping those whose proof ``verifier`` accepts (the writer's
        public key, known from the passphrase, never the one the receiver hands out)."""
        self._load_ids(self._cache, verifier)

    def _load_ids(self, cache: str | None, verifier: Verifier) -> None:
        """Every blob id the receiver lists in ``ids/`` with a valid proof; the lists are fetched once and
        cached once verified.

        At most MAX_ID_LIST_OBJECT bytes each and MAX_REMOTE_ID_BYTES in all, cached or fetched:
        a receiver cannot make this side hold more (:raises ProtocolError:).
        """
        names = self.list(L.IDS)
        digests = {L.digest_of(n): n for n in names}
        lists: set[str] = set()  # digests of the lists read, cached or fetched: their ids go straight to held

        def ids_of(digest: str, data: bytes) -> Iterator[bytes]:
            lists.add(digest)
            try:
                yield from decode_ids(data, L.ids_name(digest))
            except ValueError as exc:
                self.warnings.append(f"{self.location}: {exc}; its chunks will be sent again")

        def listed() -> Iterator[bytes]:
            if cache:
                os.makedirs(cache, exist_ok=True)
                # Senders of this host share the cache (parallel syncs of many sources): another one's list
                # being written is left to it, and one it removed meanwhile is fetched again below.
                for fn in os.listdir(cache):
                    path = os.path.join(cache, fn)
                    if fn.startswith(atomic.TMP_PREFIX):
                        if not _written_by_a_live_process(fn):
                            _remove_quietly(path)  # a crashed sender's
                        continue
                    try:
                        if fn in digests and os.path.getsize(path) <= P.MAX_ID_LIST_OBJECT:
                            with open(path, "rb") as f:
                                data = f.read()
                            if data.startswith(IDS_MAGIC):  # cached once verified; a 0.2 entry is fetched again
                                self.session.count_id_lists(len(data))
                                yield from ids_of(fn, data)
                                continue
                    except FileNotFoundError:
                        continue
                    _remove_quietly(path)  # not listed any more, not a list we would fetch, or cached before proofs
            missing = [digests[d] for d in digests if d not in lists]
            for name, data in self.get_many(missing):
                digest = L.digest_of(name)
                self.stats["id_lists_fetched"] += 1
                if verifier.ids_object(digest, data) is None:
                    self.legacy_packs.add(digest)
                    continue
                if cache:
                    atomic.replace(os.path.join(cache, digest), data)
                yield from ids_of(digest, data)

        self._ids().rebuild(listed())  # a bulk load: one sort and merge, not a lookup per id
        if self.legacy_packs:
            self.warnings.append(f"{self.location}: {len(self.legacy_packs)} id list(s) carry no valid proof of a "
                                 f"key holder (written before 0.3, or forged): their chunks are sent again unless "
                                 f"the upgrade signs them")

    # --- Sink ------------------------------------------------------------------------
    def describe(self) -> tuple[bytes, bytes]:
        return self._config, self._keyfile

    def has(self, blob_id: bytes) -> bool:
        """Thread-safe local lookup: the receiver's id lists plus everything put in this session."""
        return blob_id in self._ids()

    def _ids(self) -> IdSet:
        if self._held is None:
            raise P.TransportError(f"connection to {self.location} closed")
        return self._held

    def put_pack(self, name: str, data: bytes | bytearray | memoryview, ids: Sequence[bytes], proof: bytes) -> None:
        """Upload, returning once the pack is written to the channel, without waiting for the ack; at most
        ``window`` packs unacknowledged.  Nothing keeps the pack once it is written, so the window costs no
        memory: the packs held are the caller's one (until this returns) and none in flight."""
        self._pipeline(P.PutPack(name, tuple(ids), proof, memoryview(data)), P.PACK_OK, written=True)
        self._ids().add_many(ids)
        self.legacy_packs.discard(L.digest_of(name))

    def _pipeline(self, msg, expect: int, window: int | None = None, *, written: bool = False) -> None:
        """Send ``msg`` and keep its answer in flight (at most ``window``).  ``written``: wait until it has
        been written (not answered), and keep only the answer, never the message, in flight."""
        if written:
            answer = self._io.run(self.session.send(msg, expect))
            del msg
            assert answer is not None  # an expected answer always has a future
            self._inflight.append(self._io.submit(_answer_of(answer)))
        else:
            self._inflight.append(self._io.submit(self.session.request(msg, expect)))
        while len(self._inflight) > (window or self.window) or (self._inflight and self._inflight[0].done()):
            self._inflight.popleft().result()
        self._update_stats()

    def declare_pack(self, name: str, ids: Sequence[bytes], proof: bytes) -> None:
        """Send a signed declaration for a stored pack (pipelined; ``flush`` waits for the answers)."""
        self._pipeline(P.Declare(name, tuple(ids), proof), P.DECLARE_OK, GET_BATCH)
        self._ids().add_many(ids)
        self.legacy_packs.discard(L.digest_of(name))

    def declare_snapshot(self, name: str, proof: bytes) -> None:
        self._pipeline(P.Declare(name, (), proof), P.DECLARE_OK, GET_BATCH)

    def get_ranges(self, wanted: Sequence[tuple[str, int, int]]) -> list[tuple[int, bytes]]:
        """For each (pack name, offset, length): (its size, those bytes): all in GET_RANGES requests sent at
        once (version 5), else GET_RANGE pipelined GET_BATCH at a time."""
        async def fetch(batch) -> list[tuple[int, bytes]]:
            if self.version >= P.GET_RANGES_VERSION:
                groups = P.group_ranges(batch)
                futs = await self.session.send_many([P.GetRanges(tuple(g)) for g in groups], P.RANGE,
                                                    answers=[len(g) for g in groups])
            else:
                futs = await self.session.send_many([P.GetRange(*w) for w in batch], P.RANGE)
            return [((m := await f).size, m.data) for f in futs if f is not None]

        out: list[tuple[int, bytes]] = []
        step = len(wanted) if self.version >= P.GET_RANGES_VERSION else GET_BATCH  # the caller bounds its rounds
        for i in range(0, len(wanted), max(1, step)):
            out.extend(self._io.run(fetch(wanted[i : i + step])))
        self._update_stats()
        return out

    def flush(self) -> None:
        """Wait until every pack put so far is acknowledged (durable at the receiver)."""
        while self._inflight:
            self._inflight.popleft().result()
        self._update_stats()

    def list(self, prefix: str) -> list[str]:
        pattern = {L.IDS: L.IDS_RE, L.SNAPSHOTS: L.SNAPSHOT_RE, L.PACKS: L.PACK_RE}[prefix]
        return sorted(n for n in self._call(P.List(prefix), P.NAMES).names if pattern.match(n))

    def get_many(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        names = list(names)

        async def fetch(batch: list[str]) -> list[bytes]:
            futs = [await self.session.send(P.Get(n), P.DATA, **_answer_caps(n)) for n in batch]
            return [(await f).data for f in futs if f is not None]

        for i in range(0, len(names), GET_BATCH):
            batch = names[i : i + GET_BATCH]
            yield from zip(batch, self._io.run(fetch(batch)))
        self._update_stats()

    def commit(self, name: str, data: bytes, refs: I.Buffer | Sequence[bytes], proof: bytes, claim: Claim) -> None:
        """Commit; the refs (one sorted buffer) go as a difference from the parent's when this site committed
        that parent and kept its refs (version 4: REFS_BASE, DROP, then the added ids as REFS and COMMIT), else
        whole.  The frames carry views of the buffers: no id is ever a bytes object of its own."""
        full = I.as_buffer(refs)  # no copy of a buffer (it is not modified)
        send = memoryview(full)
        cache = self._last_refs if self.version >= P.REFS_DIFF_VERSION else None
        base = cache.load(claim.tag, claim.parent) if cache is not None and claim.parent else None
        if base is not None and claim.parent:
            dropped, added = I.difference(base, full)
            if len(dropped) + len(added) < len(full):
                self._io.run(self.session.send(P.RefsBase(claim.parent, I.id_count(full), P.refs_digest(full)),
                                               None))
                step = P.MAX_IDS_PER_FRAME * ID_SIZE
                for i in range(0, len(dropped), step):
                    self._io.run(self.session.send(P.Drop(P.ids_view(memoryview(dropped)[i : i + step])), None))
                send = memoryview(added)
            del base, dropped
        last = P.max_commit_refs(name, data)  # what fits in COMMIT's frame beside the snapshot
        start, count = 0, I.id_count(send)
        while count - start > last:
            batch = min(P.MAX_IDS_PER_FRAME, count - start - last)
            self._io.run(self.session.send(P.Refs(P.ids_view(send[start * ID_SIZE : (start + batch) * ID_SIZE])), None))
            start += batch
        try:
            self._call(P.Commit(name, data, proof, claim.tag, claim.parent, P.ids_view(send[start * ID_SIZE :])),
                       P.COMMIT_OK)
        except BaseException:
            if cache is not None:
                cache.forget(claim.tag)  # whatever went wrong, the next commit sends its refs whole
            raise
        if cache is not None:
            cache.save(claim.tag, L.digest_of(name), full)
        self.stats["refs_sent"] = self.stats.get("refs_sent", 0) + count
        self._update_stats()

    # --- deleting (a write session: the receiver holds its lock) ---------------------
    def forget(self, names_and_proofs: Sequence[tuple[str, bytes]]) -> None:
        """Delete these snapshots at the receiver, each on its key holder's forget proof (pipelined)."""
        for name, proof in names_and_proofs:
            self._pipeline(P.Forget(name, proof), P.FORGET_OK, GET_BATCH)
        self.flush()

    def prune(self, *, dry_run: bool = False) -> dict[str, int]:
        """The receiver's key-less prune, run under its lock.  :returns: its counters (``P.PRUNE_COUNTERS``)."""
        answer = self._call(P.Prune(P.PRUNE_DRY_RUN if dry_run else 0), P.PRUNE_OK)
        self._update_stats()
        return answer.as_dict()

    # --- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        """Say BYE and close.  Packs not acknowledged are simply re-sent by the next run."""
        for fut in self._inflight:
            fut.cancel()
        self._inflight.clear()
        if self._session is not None:
            self._update_stats()
            try:
                self._io.run(self._session.close(), timeout=15)
            except Exception:  # noqa: BLE001 - closing
                pass
            self._session = None
        self._io.stop()
        if self._held is not None:
            self._held.close()
            self._held = None

    def __enter__(self) -> RemoteSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Fuzz the receiver's session logic: mutated frame sequences against ``ServerSession`` over a real repository.

Each session is a valid frame sequence (HELLO, OPEN, LIST/GET/PUT_PACK/REFS/COMMIT/FORGET/PRUNE,
BYE or end of stream) with 0 to 3 mutations: bit flips, byte overwrites,
truncation, dropped, duplicated, swapped or shuffled frames, frames spliced in
from another sequence, oversized or zero lengths, random types, random junk.
It is fed to ``ServerSession`` in-process (tests/transport/inproc.py: an
asyncio StreamReader and a collecting writer, as ``serve --stdio`` wires it),
storing through ``LocalSink`` into a real directory.

Every session must:

* end by itself within SESSION_TIMEOUT (0 hangs), having closed its channel
  and written nothing after closing;
* produce only whole, valid frames: HELLO, then answers, then at most one
  ERROR, never ERROR 9 (internal error); no traceback in the log and no
  exception reported to the event loop ("Future exception was never retrieved");
* answer exactly what ``Model`` (PROTOCOL.md 4 to 6 written out independently
  of server.py) predicts: the same answer types in the same order and the same
  ERROR code, so a request behind a failure is never executed;
* leave the writer lock free (``LocalSink.open(writable=True)`` succeeds);
* commit exactly the snapshots the model commits: nothing is committed unless
  the session's frames form a valid commit;
* delete exactly what the model deletes: FORGET removes a snapshot that is not
  the head of its source (on a key holder's proof), PRUNE (not a dry run) every
  pack, with its id list, that no remaining snapshot's refs name; the packs, id
  lists and snapshots on disk after the session are the model's;
* stay below PEAK_BYTES of traced allocations (tracemalloc peak).

SEED is fixed; a failure names the seed and the session number, and
``FUZZ_SEED=<n>`` reruns the quick test with another seed.  The long run
(``-m soak``) does SLOW_SESSIONS with other seeds.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import struct
import time
import tracemalloc
from dataclasses import dataclass, field

import pytest

from replicator import constants as C
from replicator.format import layout as L
from replicator.format.head import Claim, decode_head
from replicator.format.idlist import Verifier, decode_ids, parse_list
from replicator.repo.local_sink import LocalSink
from replicator.transport import frames as F
from replicator.transport import protocol as P
from replicator.transport import server as S
from replicator.transport.frames import ProtocolError
from tests.transport.inproc import (
    REPO,
    commit,
    fake_pack,
    fake_snapshot,
    keyring,
    lock_is_free,
    make_repository,
    put,
    run_session,
)

SEED = int(os.environ.get("FUZZ_SEED", "20240611"))
QUICK_SESSIONS = int(os.environ.get("FUZZ_SESSIONS", "10000"))
SLOW_SESSIONS = 100_000
SESSION_TIMEOUT = 5.0  # seconds: a session still running then is a hang
PEAK_BYTES = 16 << 20  # traced allocation peak of one session (its input is at most ~200 KiB)
TRACE_EVERY = 16  # sessions traced by tracemalloc: every 16th, and every one with a rewritten length field
PERMS = ("rw", "rw", "rw", "r", "w")


# --- the model: what PROTOCOL.md says a receiver answers ------------------------------------------
@dataclass
class Expect:
    answers: list[str] = field(default_factory=list)  # message class names, HELLO first
    error: int | None = None  # the ERROR code that ends the session, None for a clean end
    commits: list[str] = field(default_factory=list)  # snapshot object names committed, in order
    forgotten: list[str] = field(default_factory=list)  # snapshot object names FORGET deleted
    pruned: int = 0  # packs deleted by PRUNE
    objects: set[str] = field(default_factory=set)  # what is on disk at the end, as far as the model sees


class Repo:
    """What is on disk at the start of a session, read the way any reader would (no server internals)."""

    _lists: dict[str, tuple[bytes, ...]] = {}  # ids/ objects are immutable: each is read once

    def __init__(self, root: str) -> None:
        self.root = root
        self.objects: set[str] = set()
        for dirpath, _dirs, files in os.walk(root):
            rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
            self.objects.update(fn if rel == "." else f"{rel}/{fn}" for fn in files)
        with open(os.path.join(root, "config"), "rb") as c, open(os.path.join(root, "keys", "default"), "rb") as k:
            self.verifier = Verifier(json.loads(c.read())["id"], bytes.fromhex(json.loads(k.read())["signing_public_key"]))
        self.id_lists: dict[str, tuple[bytes, ...]] = {}
        self.refs: dict[str, tuple[bytes, ...]] = {}  # refs/ objects by name
        self.heads: set[str] = set()  # snapshot digests that are the head of a source (never forgotten)
        for name in self.objects:
            if L.IDS_RE.match(name) or L.REFS_RE.match(name):
                key = f"{root}/{name}"
                if key not in self._lists:
                    with open(os.path.join(root, name), "rb") as f:
                        data = f.read()
                    self._lists[key] = tuple(decode_ids(data if L.IDS_RE.match(name) else
                                                        parse_list(data, name).ids, name))
                (self.id_lists if L.IDS_RE.match(name) else self.refs)[name] = self._lists[key]
            elif L.HEAD_RE.match(name):
                with open(os.path.join(root, name), "rb") as f:
                    head = decode_head(f.read(), name)
                if head.snapshot:
                    self.heads.add(head.snapshot)

    def held(self) -> set[bytes]:
        """Ids of ``ids/`` lists whose pack exists (what a write session may reference)."""
        out: set[bytes] = set()
        for name, ids in self.id_lists.items():
            if L.pack_name(L.digest_of(name)) in self.objects:
                out.update(ids)
        return out


def _increasing(ids: list[bytes]) -> bool:
    return all(a < b for a, b in zip(ids, ids[1:]))


def model(stream: bytes, repo: Repo, perms: str) -> Expect:
    """PROTOCOL.md 3 to 6 for one session over ``stream`` (the peer's bytes, then end of stream)."""
    out = Expect(["Hello"])
    objects, id_lists, held, verifier = set(repo.objects), dict(repo.id_lists), repo.held(), repo.verifier
    snap_refs, heads = dict(repo.refs), set(repo.heads)
    out.objects = objects
    state, opened, mode, refs = P.STATE_START, False, 0, []
    pos = 0

    def fail(code: int) -> Expect:
        out.error = code
        out.answers.append("Error")
        return out

    while True:
        if pos == len(stream):
            return out
        if len(stream) - pos < 5:
            return fail(P.E_PROTOCOL)  # end of stream inside a header
        length, msg_type = struct.unpack(">IB", stream[pos : pos + 5])
        if length == 0 or length > (F.MAX_FRAME_SIZE if opened else S.SMALL_FRAME):
            return fail(P.E_PROTOCOL)
        if pos + 4 + length > len(stream):
            return fail(P.E_PROTOCOL)  # end of stream inside a body
        body = stream[pos + 5 : pos + 4 + length]
        pos += 4 + length
        try:
            msg = P.decode_message(msg_type, body)
        except ProtocolError:
            return fail(P.E_PROTOCOL)
        if msg_type not in P.ALLOWED[state]:
            return fail(P.E_PROTOCOL)
        if isinstance(msg, P.Hello):
            if min(msg.max_version, P.PROTOCOL_VERSION_MAX) < max(msg.min_version, P.PROTOCOL_VERSION_MIN):
                return fail(P.E_VERSION)
            state = P.STATE_READY
            continue
        if isinstance(msg, P.Bye):
            return out
        writes = "w" in perms and mode == P.MODE_WRITE
        if isinstance(msg, P.Open):
            if ("w" if msg.mode == P.MODE_WRITE else "r") not in (perms if msg.repository == REPO else ""):
                return fail(P.E_NOT_ALLOWED)
            state, opened, mode = P.STATE_OPEN, True, msg.mode
            out.answers.append("OpenOk")
        elif isinstance(msg, P.List):
            if msg.prefix == L.PACKS and "r" not in perms:
                return fail(P.E_NOT_ALLOWED)
            out.answers.append("Names")
        elif isinstance(msg, P.Get):
            if msg.name.startswith(L.PACKS) and "r" not in perms:
                return fail(P.E_NOT_ALLOWED)
            if msg.name not in objects:
                return fail(P.E_NOT_FOUND)
            out.answers.append("Data")
        elif isinstance(msg, P.GetRange):
            if "r" not in perms:
                return fail(P.E_NOT_ALLOWED)
            if msg.name not in objects:
                return fail(P.E_NOT_FOUND)
            out.answers.append("Range")
        elif isinstance(msg, P.Declare):
            if not writes:
                return fail(P.E_NOT_ALLOWED)
            if msg.name not in objects:
                return fail(P.E_NOT_FOUND)
            if not (verifier.pack(L.digest_of(msg.name), b"".join(msg.ids), msg.proof) if msg.ids
                    else verifier.snapshot(L.digest_of(msg.name), msg.proof)):
                return fail(P.E_INTEGRITY)
            out.answers.append("DeclareOk")
        elif isinstance(msg, P.PutPack):
            if not writes:
                return fail(P.E_NOT_ALLOWED)
            data = bytes(msg.data)
            if not verifier.pack(L.digest_of(msg.name), b"".join(msg.ids), msg.proof) \
                    or hashlib.sha256(data).hexdigest() != L.digest_of(msg.name) \
                    or len(data) < C.PACK_HEADER_SIZE + C.PACK_FOOTER_SIZE \
                    or data[:8] != C.PACK_MAGIC or data[-8:] != C.PACK_FOOTER_MAGIC:
                return fail(P.E_INTEGRITY)
            ids_name = L.ids_name(L.digest_of(msg.name))
            objects.update((msg.name, ids_name))
            id_lists.setdefault(ids_name, msg.ids)  # an existing list stays the declaration
            held.update(id_lists[ids_name])
            out.answers.append("PackOk")
        elif isinstance(msg, (P.Refs, P.Commit)):
            batch = msg.ids if isinstance(msg, P.Refs) else msg.refs
            if not writes:
                return fail(P.E_NOT_ALLOWED)
            if len(refs) + len(batch) > P.MAX_SNAPSHOT_REFS or not _increasing([*refs[-1:], *batch]):
                return fail(P.E_PROTOCOL)
            refs.extend(batch)
            if isinstance(msg, P.Commit):
                data, all_refs, refs = msg.data, refs, []
                if not verifier.snapshot(L.digest_of(msg.name), msg.proof) or \
                        hashlib.sha256(data).hexdigest() != L.digest_of(msg.name) or not data.startswith(
                        C.SNAPSHOT_MAGIC) or len(data) < 60 or not (
                        C.FORMAT_VERSION_MIN <= int.from_bytes(data[8:10], "little") <= C.FORMAT_VERSION_MAX):
                    return fail(P.E_INTEGRITY)
                if any(r not in held for r in all_refs):
                    return fail(P.E_MISSING_REFS)
                objects.update((msg.name, L.refs_name(L.digest_of(msg.name))))
                snap_refs[L.refs_name(L.digest_of(msg.name))] = tuple(all_refs)
                heads.add(L.digest_of(msg.name))  # a new source each time (commit() in inproc.py)
                out.commits.append(msg.name)
                out.answers.append("CommitOk")
        elif isinstance(msg, P.Forget):
            if not writes:
                return fail(P.E_NOT_ALLOWED)
            digest = L.digest_of(msg.name)
            if not verifier.forget(digest, msg.proof):
                return fail(P.E_INTEGRITY)
            if digest in heads:
                return fail(P.E_NOT_ALLOWED)  # the latest of a source is never forgotten
            if msg.name in objects:
                out.forgotten.append(msg.name)
            objects.difference_update((msg.name, L.refs_name(digest)))
            snap_refs.pop(L.refs_name(digest), None)
            out.answers.append("ForgetOk")
        elif isinstance(msg, P.Prune):
            if not writes:
                return fail(P.E_NOT_ALLOWED)
            if not msg.flags & P.PRUNE_DRY_RUN:
                live = {L.refs_name(L.digest_of(n)) for n in objects if L.SNAPSHOT_RE.match(n)}
                referenced = {i for name, ids in snap_refs.items() if name in live for i in ids}
                for name in sorted(n for n in objects if L.IDS_RE.match(n)):
                    pack = L.pack_name(L.digest_of(name))
                    if pack not in objects:
                        objects.discard(name)  # an orphaned list
                    elif not referenced.intersection(id_lists[name]):
                        objects.difference_update((name, pack))
                        out.pruned += 1
                id_lists = {n: ids for n, ids in id_lists.items() if n in objects}
                held = {i for n, ids in id_lists.items() for i in ids}
            out.answers.append("PruneOk")


# --- valid sessions ----------------------------------------------------------------------------
def _ids(rnd: random.Random, n: int) -> tuple[bytes, ...]:
    return tuple(sorted({rnd.randbytes(32) for _ in range(n)}))


@dataclass
class Corpus:
    """What valid sessions are made of: a few packs (fixed, so the repository stays small), the held ids."""

    packs: list[tuple[str, bytes, tuple[bytes, ...]]]
    existing: list[str]  # objects a GET finds
    heads: list[str]  # snapshots that are the head of their source: a FORGET of them is refused
    older: str  # a snapshot that is not a head: a FORGET deletes it (put back after the session)
    saved: dict[str, bytes]  # the older snapshot's objects, to put back

    @classmethod
    def build(cls, root: str, rnd: random.Random) -> Corpus:
        packs = []
        for i in range(4):
            name, data = fake_pack(rnd.randbytes(64 + 200 * i))
            packs.append((name, data, _ids(rnd, 1 + 3 * i)))
        # The repository starts with pack 0 and one snapshot referencing its ids.
        # A second source has two snapshots: the older one is no head, so it may be forgotten.
        sink = LocalSink.open(root, writable=True, untrusted=True, role="fuzz set-up")
        names = []
        try:
            first = put(root, packs[0][0], packs[0][2], packs[0][1])
            sink.put_pack(first.name, first.data, first.ids, first.proof)
            parent, tags = None, (os.urandom(16), os.urandom(16), None)
            for salt, tag in zip((b"initial", b"older", b"newer"), tags):
                sname, sdata = fake_snapshot(salt)
                sink.commit(sname, sdata, packs[0][2], commit(root, sname, sdata).proof,
                            Claim(tag or tags[1], parent if tag is None else None))
                parent = L.digest_of(sname)
                names.append(sname)
        finally:
            sink.close()
        saved = {}
        for name in (names[1], L.refs_name(L.digest_of(names[1]))):
            with open(os.path.join(root, name), "rb") as f:
                saved[name] = f.read()
        existing = [packs[0][0], L.ids_name(L.digest_of(packs[0][0])), *names]
        return cls(packs, existing, [names[0], names[2]], names[1], saved)


def valid_session(rnd: random.Random, corpus: Corpus, tag: int, root: str) -> list[bytes]:
    """A sequence of well-formed frames, most of which a correct receiver serves without error (with
    permission); a few ask what the receiver must refuse: no common version, a missing object, missing refs."""
    frames = [P.Hello(2, 3).encode() if rnd.random() < 0.02 else P.Hello().encode()]
    write = rnd.random() < 0.8
    frames.append(P.Open(REPO, P.MODE_WRITE if write else P.MODE_READ).encode())
    held = set(corpus.packs[0][2])
    for _ in range(rnd.randint(0, 6)):
        kind = rnd.choice(["list", "get", "pack", "commit", "forget", "prune"] if write else ["list", "get"])
        if kind == "list":
            frames.append(P.List(rnd.choice(P.LIST_PREFIXES)).encode())
        elif kind == "get":
            missing = rnd.random() < 0.05
            frames.append(P.Get("ids/" + rnd.randbytes(32).hex() if missing else rnd.choice(corpus.existing)).encode())
        elif kind == "forget":
            r = rnd.random()  # mostly the older snapshot; a head (refused), a gone one, a proof for another
            target = corpus.older if r < 0.6 else rnd.choice(corpus.heads) if r < 0.8 else \
                f"snapshots/{rnd.randbytes(32).hex()}"
            signed = f"snapshots/{rnd.randbytes(32).hex()}" if rnd.random() < 0.05 else target
            frames.append(P.Forget(target, keyring(root).declarer.forget(L.digest_of(signed))).encode())
        elif kind == "prune":
            frames.append(P.Prune(P.PRUNE_DRY_RUN if rnd.random() < 0.3 else 0).encode())
        elif kind == "pack":
            name, data, ids = rnd.choice(corpus.packs)
            frames.append(put(root, name, ids, data).encode())
            held.update(ids)
        else:
            refs = sorted(rnd.sample(sorted(held), rnd.randint(0, len(held))))
            if rnd.random() < 0.05:
                refs = sorted({*refs, rnd.randbytes(32)})  # a chunk the receiver does not hold
            sname, sdata = fake_snapshot(b"%d:%d" % (tag, len(frames)))
            split = rnd.randint(0, len(refs))
            while split > 0 and rnd.random() < 0.5:  # REFS batches, then COMMIT's last batch
                cut = rnd.randint(1, split)
                frames.append(P.Refs(tuple(refs[:cut])).encode())
                refs, split = refs[cut:], split - cut
            frames.append(commit(root, sname, sdata, refs).encode())
    if rnd.random() < 0.7:
        frames.append(P.Bye().encode())
    return frames


# --- mutations ---------------------------------------------------------------------------------
LENGTHS = (0, 1, 4, S.SMALL_FRAME, S.SMALL_FRAME + 1, F.MAX_FRAME_SIZE, F.MAX_FRAME_SIZE + 1, 2 ** 32 - 1)


def _flip(rnd, frames, _other):
    blob = bytearray(b"".join(frames))
    for _ in range(rnd.randint(1, 4)):
        i = rnd.randrange(len(blob))
        blob[i] ^= 1 << rnd.randrange(8)
    return [bytes(blob)]


def _overwrite(rnd, frames, _other):
    blob = bytearray(b"".join(frames))
    i = rnd.randrange(len(blob))
    blob[i : i + 4] = rnd.randbytes(rnd.choice((1, 2, 4)))
    return [bytes(blob)]


def _truncate(rnd, frames, _other):
    blob = b"".join(frames)
    return [blob[: rnd.randrange(len(blob))]]


def _drop(rnd, frames, _other):
    frames = list(frames)
    del frames[rnd.randrange(len(frames))]
    return frames


def _duplicate(rnd, frames, _other):
    frames = list(frames)
    i = rnd.randrange(len(frames))
    frames.insert(rnd.randrange(len(frames) + 1), frames[i])
    return frames


def _swap(rnd, frames, _other):
    frames = list(frames)
    i, j = rnd.randrange(len(frames)), rnd.randrange(len(frames))
    frames[i], frames[j] = frames[j], frames[i]
    return frames


def _shuffle(rnd, frames, _other):
    frames = list(frames)
    rnd.shuffle(frames)
    return frames


def _splice(rnd, frames, other):
    frames = list(frames)
    frames.insert(rnd.randrange(len(frames) + 1), rnd.choice(other))
    return frames


def _length(rnd, frames, _other):
    frames = list(frames)
    i = rnd.randrange(len(frames))
    if len(frames[i]) >= 5:
        length = rnd.choice(LENGTHS + (len(frames[i]) - 4 + rnd.choice((-2, -1, 1, 2)),))
        frames[i] = struct.pack(">I", max(0, length)) + frames[i][4:]
    return frames


def _type(rnd, frames, _other):
    frames = list(frames)
    i = rnd.randrange(len(frames))
    if len(frames[i]) >= 5:
        frames[i] = frames[i][:4] + bytes([rnd.randrange(256)]) + frames[i][5:]
    return frames


def _junk(rnd, frames, _other):
    frames = list(frames)
    if rnd.random() < 0.5:
        junk = rnd.randbytes(rnd.randint(0, 40))
    else:
        body = rnd.randbytes(rnd.randint(0, 80))
        junk = struct.pack(">IB", len(body) + 1, rnd.randrange(1, 16)) + body
    frames.insert(rnd.randrange(len(frames) + 1), junk)
    return frames


MUTATIONS = [_flip, _overwrite, _truncate, _drop, _duplicate, _swap, _shuffle, _splice, _length, _type, _junk]


def mutated_session(rnd: random.Random, corpus: Corpus, tag: int, root: str) -> tuple[bytes, list[str]]:
    frames = valid_session(rnd, corpus, tag, root)
    other = valid_session(rnd, corpus, tag + 1_000_000_000, root)
    ops: list[str] = []
    for _ in range(rnd.choice((0, 1, 1, 1, 2, 2, 3))):
        frames = [f for f in frames if f]
        if not frames:
            break
        op = rnd.choice(MUTATIONS)
        frames = op(rnd, frames, other)
        ops.append(op.__name__.lstrip("_"))
    return b"".join(frames), ops


# --- the driver --------------------------------------------------------------------------------
class _Records(logging.Handler):
    """Every replicator log record with a traceback or from an internal error: none may appear."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "internal error" in record.getMessage():
            self.bad.append(self.format(record))


@dataclass
class Report:
    sessions: int = 0
    commits: int = 0
    forgotten: int = 0  # snapshots a FORGET deleted
    pruned: int = 0  # packs a PRUNE deleted
    clean: int = 0
    errors: dict = field(default_factory=dict)
    peak: int = 0
    traced: int = 0
    seconds: float = 0.0


def writer_lock_free(root: str, full: bool) -> bool:
    """The repository's writer lock is free: ``LocalSink.open(writable=True)`` every 100th session, the same
    flock on the same file (store/lock.py) for the others (LocalSink.open reads every id list: 0.9 ms)."""
    if full:
        return lock_is_free(root)
    from replicator.store.lock import LOCK_FILE, FileLock, Locked

    try:
        FileLock(os.path.join(root, LOCK_FILE), "fuzz").acquire().release()
    except Locked:
        return False
    return True


def _cleanup(root: str, names: set[str], corpus: Corpus, heads: set[str]) -> None:
    """Remove this session's snapshots, refs and heads so the repository stays the same size run after run,
    and put back the older snapshot a FORGET deleted."""
    for name in names:
        digest = name.split("/")[1]
        for path in (os.path.join(root, "snapshots", digest), os.path.join(root, "refs", digest)):
            if os.path.exists(path):
                os.unlink(path)
    for name in set(os.listdir(os.path.join(root, "heads"))) - heads:
        os.unlink(os.path.join(root, "heads", name))
    for name, data in corpus.saved.items():
        if not os.path.exists(os.path.join(root, name)):
            with open(os.path.join(root, name), "wb") as f:
                f.write(data)


def _on_disk(root: str) -> set[str]:
    """Packs, id lists and snapshots in the repository (what FORGET and PRUNE delete)."""
    out: set[str] = set()
    for prefix in (L.PACKS, L.IDS, L.SNAPSHOTS):
        for dirpath, _dirs, files in os.walk(os.path.join(root, prefix)):
            rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
            out.update(f"{rel}/{fn}" for fn in files)
    return out


async def fuzz(root: str, seed: int, sessions: int) -> Report:
    rnd = random.Random(seed)
    corpus = Corpus.build(root, rnd)
    loop = asyncio.get_running_loop()
    loop_errors: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx.get("message", repr(ctx))))
    records = _Records()
    serve_log = logging.getLogger("replicator.serve")
    saved = serve_log.level, serve_log.propagate
    serve_log.setLevel(logging.WARNING)  # 10^4 sessions: keep their lines out of pytest's capture
    serve_log.propagate = False
    serve_log.addHandler(records)
    report = Report()
    start = time.monotonic()
    initial = set(os.listdir(os.path.join(root, "snapshots")))
    initial_heads = set(os.listdir(os.path.join(root, "heads")))
    try:
        for i in range(sessions):
            stream, ops = mutated_session(rnd, corpus, i, root)
            perms = rnd.choice(PERMS)
            expect = model(stream, Repo(root), perms)
            where = f"seed {seed}, session {i}, mutations {ops}, perms {perms!r}, input {stream[:300].hex()}"
            traced = i % TRACE_EVERY == 0 or "length" in ops  # tracemalloc makes a session ~4 times slower
            if traced:
                tracemalloc.start()
            try:
                out = await run_session(root, stream, perms=perms, timeout=SESSION_TIMEOUT, hello=False)
                peak = tracemalloc.get_traced_memory()[1] if traced else 0
            finally:
                if traced:
                    tracemalloc.stop()
            assert not out.timed_out, f"hang ({where})"
            got = [type(m).__name__ for m in out.messages]
            code = out.messages[-1].code if got and got[-1] == "Error" else None
            assert code != P.E_INTERNAL, f"internal error {out.messages[-1]} ({where})"
            assert (got, code) == (expect.answers, expect.error), \
                f"answers {got} {code} {out.messages[-1:]}, model {expect.answers} {expect.error} ({where})"
            assert out.writer.closed and out.writer.writes_after_close == 0, f"channel not closed ({where})"
            assert not records.bad, f"{records.bad} ({where})"
            assert not loop_errors, f"{loop_errors} ({where})"
            assert writer_lock_free(root, full=i % 100 == 0), f"lock still held after the session ({where})"
            new = set(os.listdir(os.path.join(root, "snapshots"))) - initial
            assert new == {n.split("/")[1] for n in expect.commits}, \
                f"committed {sorted(new)}, model {expect.commits} ({where})"
            disk, modelled = _on_disk(root), {n for n in expect.objects if n.startswith((L.PACKS, L.IDS, L.SNAPSHOTS))}
            assert disk == modelled, f"on disk beyond the model {sorted(disk - modelled)}, " \
                                     f"missing {sorted(modelled - disk)} ({where})"
            assert peak < PEAK_BYTES, f"peak {peak} bytes ({where})"
            _cleanup(root, {f"snapshots/{n}" for n in new}, corpus, initial_heads)
            report.sessions += 1
            report.commits += len(expect.commits)
            report.forgotten += len(expect.forgotten)
            report.pruned += expect.pruned
            report.clean += expect.error is None
            report.errors[expect.error] = report.errors.get(expect.error, 0) + 1
            report.peak = max(report.peak, peak)
            report.traced += traced
    finally:
        serve_log.removeHandler(records)
        serve_log.setLevel(saved[0])
        serve_log.propagate = saved[1]
    report.seconds = time.monotonic() - start
    assert lock_is_free(root)
    return report


@pytest.fixture
def fast_dir(tmp_path):
    """A directory on tmpfs when there is one: the fuzz tests session logic, not fsync (ext4 here: ~12 ms a pack)."""
    import pathlib
    import shutil
    import tempfile

    shm = pathlib.Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = pathlib.Path(tempfile.mkdtemp(prefix="replicator-fuzz-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _run(directory, seed: int, sessions: int) -> Report:
    root = str(directory / "secondary")
    make_repository(root)
    report = asyncio.run(fuzz(root, seed, sessions))
    print(f"\nfuzz seed {seed}: {report.sessions} sessions in {report.seconds:.1f} s, {report.commits} commits, "
          f"{report.forgotten} snapshots forgotten, {report.pruned} packs pruned, "
          f"{report.clean} clean ends, ERROR codes {dict(sorted((k or 0, v) for k, v in report.errors.items()))}, "
          f"peak {report.peak / 2**20:.2f} MiB over {report.traced} traced sessions")
    # The fuzz is only worth something if it reaches every outcome: commits, clean ends, each kind of refusal.
    assert report.commits > sessions // 50 and report.clean > sessions // 20, report
    assert report.forgotten > sessions // 200 and report.pruned > sessions // 200, report
    assert {P.E_PROTOCOL, P.E_VERSION, P.E_NOT_ALLOWED, P.E_INTEGRITY, P.E_MISSING_REFS, P.E_NOT_FOUND} \
        <= set(report.errors), report.errors
    return report


def test_fuzz_sessions(fast_dir):
    _run(fast_dir, SEED, QUICK_SESSIONS)


@pytest.mark.soak
@pytest.mark.parametrize("seed", [SEED + 1, SEED + 2])
def test_fuzz_sessions_long(fast_dir, seed):
    """2 x SLOW_SESSIONS: run with ``pytest -m soak`` (deselected by default: it takes minutes)."""
    _run(fast_dir, seed, SLOW_SESSIONS)


def test_model_sees_what_a_broken_receiver_would_do(tmp_path):
    """The model is not the server: a receiver that ran a request behind a refusal would disagree with it."""
    root = str(tmp_path / "r")
    make_repository(root)
    sname, sdata = fake_snapshot(b"behind")
    _pname, pdata = fake_pack(b"x")
    stream = P.Hello().encode() + P.Open(REPO, P.MODE_WRITE).encode() \
        + put(root, "data/00/" + "00" * 32, (b"\x01" * 32,), pdata).encode() + commit(root, sname, sdata).encode()
    expect = model(stream, Repo(root), "rw")
    assert expect.answers == ["Hello", "OpenOk", "Error"] and expect.error == P.E_INTEGRITY and expect.commits == []
    ok = model(P.Hello().encode() + P.Open(REPO, P.MODE_WRITE).encode() + commit(root, sname, sdata).encode(),
               Repo(root), "rw")
    assert ok.answers == ["Hello", "OpenOk", "CommitOk"] and ok.commits == [sname]

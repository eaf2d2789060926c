"""Receiver sessions keep their promises (PROTOCOL.md 5 and 6).

* A session that fails ends: it answers one ERROR, closes its channel and
  releases the repository's writer lock promptly, however many requests the
  peer pipelined behind the refused one and whether or not the peer closes.
* Nothing queued behind a refused request runs or becomes visible.
* A session opened for reading never writes.
* Every list the receiver accumulates has a cap; before OPEN succeeded, frames
  are limited to SMALL_FRAME.

Most cases drive ``ServerSession`` in-process (tests/transport/inproc.py); the
wedge and the peer dying are also shown over a real ``replicator serve``.
"""
from __future__ import annotations

import asyncio
import os
import struct

import pytest

from replicator.transport import protocol as P
from replicator.transport import server as S
from tests.transport.inproc import (
    REPO,
    commit,
    fake_pack,
    fake_snapshot,
    lock_is_free,
    make_repository,
    put,
    run_session,
    snapshots,
)

OPEN_W = P.Open(REPO, P.MODE_WRITE).encode()
OPEN_R = P.Open(REPO, P.MODE_READ).encode()
MISSING_IDS = "ids/" + "00" * 32


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "secondary"
    make_repository(path)
    return path


def kinds(outcome) -> list[str]:
    return [type(m).__name__ for m in outcome.messages]


def error_code(outcome) -> int | None:
    last = outcome.messages[-1] if outcome.messages else None
    return last.code if isinstance(last, P.Error) else None


def run(coro):
    return asyncio.run(coro)


# --- a failed session ends and releases the lock -------------------------------------------------------
@pytest.mark.parametrize("behind", [1, S.MAX_QUEUED - 1, S.MAX_QUEUED, S.MAX_QUEUED + 1, 40, 200])
@pytest.mark.parametrize("eof", [True, False], ids=["peer-closes", "peer-stays"])
def test_refused_request_with_requests_behind_it_ends_the_session(repo, behind, eof):
    """GET of a missing object with ``behind`` more requests pipelined: ERROR 10, then the session is over."""
    frames = OPEN_W + P.Get(MISSING_IDS).encode() + P.List("ids/").encode() * behind
    out = run(run_session(repo, frames, eof=eof, timeout=5))
    assert not out.timed_out, f"session wedged ({kinds(out)})"
    assert kinds(out) == ["Hello", "OpenOk", "Error"] and error_code(out) == P.E_NOT_FOUND
    assert out.writer.closed and out.writer.writes_after_close == 0
    assert lock_is_free(repo)


@pytest.mark.parametrize("eof", [True, False], ids=["peer-closes", "peer-stays"])
def test_violation_ends_the_session(repo, eof):
    out = run(run_session(repo, OPEN_W + P.F.frame(200, b"") + P.List("ids/").encode() * 50, eof=eof, timeout=5))
    assert not out.timed_out
    assert kinds(out) == ["Hello", "OpenOk", "Error"] and error_code(out) == P.E_PROTOCOL
    assert out.writer.closed and lock_is_free(repo)


def test_lock_is_released_before_the_error_is_written(repo):
    """A sender that retries as soon as it reads ERROR must not find its own old session holding the lock."""
    from tests.transport.inproc import Collector

    seen = []

    class Watching(Collector):
        def write(self, data) -> None:
            if bytes(data[4:5]) == bytes([P.ERROR]):
                seen.append(lock_is_free(repo))
            super().write(data)

    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(P.Hello().encode() + OPEN_W + P.Get(MISSING_IDS).encode())  # no end of stream
        session = S.ServerSession(reader, Watching(), {REPO: str(repo)}, S.Peer("p", {REPO: "rw"}))
        await asyncio.wait_for(session.run(), 5)

    run(go())
    assert seen == [True]


# --- nothing behind a refusal runs ---------------------------------------------------------------------
def test_commit_behind_a_refused_pack_is_not_committed(repo):
    """A PUT_PACK refused (bad name) with a COMMIT that needs nothing behind it: the COMMIT must never run.

    The worker used to check a flag that the event loop set later, so the COMMIT
    usually ran (18 times out of 20 here): repeated to make the race show.
    """
    _pname, pdata = fake_pack(b"x" * 100)
    for i in range(30):
        sname, sdata = fake_snapshot(b"race %d" % i)
        frames = OPEN_W + put(repo, "data/00/" + "00" * 32, (b"\x01" * 32,), pdata).encode() \
            + commit(repo, sname, sdata, ()).encode()
        out = run(run_session(repo, frames))
        assert error_code(out) == P.E_INTEGRITY
        assert snapshots(repo) == [], f"committed behind a refused request (try {i})"


def test_requests_before_a_refusal_run_and_are_answered_in_order(repo):
    """In order: what the peer sent before the refused request is executed and answered, nothing after it."""
    pname, pdata = fake_pack(b"ok" * 50)
    s1, d1 = fake_snapshot(b"before")
    s2, d2 = fake_snapshot(b"after")
    frames = OPEN_W + put(repo, pname, (b"\x05" * 32,), pdata).encode() + commit(repo, s1, d1, (b"\x05" * 32,)).encode() \
        + P.Get(MISSING_IDS).encode() + commit(repo, s2, d2, ()).encode()
    out = run(run_session(repo, frames))
    assert kinds(out) == ["Hello", "OpenOk", "PackOk", "CommitOk", "Error"] and error_code(out) == P.E_NOT_FOUND
    assert snapshots(repo) == [s1.split("/")[1]]


def test_violation_after_a_commit_does_not_undo_it_and_stops_what_follows(repo):
    s1, d1 = fake_snapshot(b"one")
    s2, d2 = fake_snapshot(b"two")
    frames = OPEN_W + commit(repo, s1, d1, ()).encode() + P.F.frame(P.LIST, b"\xff") + commit(repo, s2, d2, ()).encode()
    out = run(run_session(repo, frames))
    assert kinds(out) == ["Hello", "OpenOk", "CommitOk", "Error"] and error_code(out) == P.E_PROTOCOL
    assert snapshots(repo) == [s1.split("/")[1]]


# --- a session opened for reading never writes ---------------------------------------------------------
def _read_session_writes(repo, *frames: bytes):
    out = run(run_session(repo, OPEN_R + b"".join(frames), perms="rw"))
    return out


def test_read_session_cannot_put_pack(repo):
    pname, pdata = fake_pack(b"r" * 100)
    out = _read_session_writes(repo, put(repo, pname, (b"\x01" * 32,), pdata).encode())
    assert kinds(out) == ["Hello", "OpenOk", "Error"] and error_code(out) == P.E_NOT_ALLOWED
    assert not os.path.exists(repo / "data") and not os.path.exists(repo / "ids")


def test_read_session_cannot_commit(repo):
    sname, sdata = fake_snapshot(b"read")
    out = _read_session_writes(repo, commit(repo, sname, sdata, ()).encode())
    assert error_code(out) == P.E_NOT_ALLOWED and snapshots(repo) == []


def test_read_session_cannot_send_refs(repo):
    """REFS used to be accepted in a read session (only the key's w was checked)."""
    out = _read_session_writes(repo, P.Refs((b"\x01" * 32,)).encode(), P.List("snapshots/").encode())
    assert kinds(out) == ["Hello", "OpenOk", "Error"] and error_code(out) == P.E_NOT_ALLOWED
    assert "write" in out.messages[-1].message


def test_read_session_still_reads(repo):
    out = _read_session_writes(repo, P.List("snapshots/").encode(), P.List("ids/").encode(), P.Bye().encode())
    assert kinds(out) == ["Hello", "OpenOk", "Names", "Names"] and out.writer.closed


# --- caps ----------------------------------------------------------------------------------------------
def test_refs_accumulated_before_commit_are_capped(repo, monkeypatch):
    """REFS batches add up to at most MAX_SNAPSHOT_REFS refs (checked on a small cap: 2^25 refs is 1 GiB)."""
    monkeypatch.setattr(P, "MAX_SNAPSHOT_REFS", 100)
    ids = [i.to_bytes(32, "big") for i in range(1, 102)]
    sname, sdata = fake_snapshot(b"many")
    ok = OPEN_W + P.Refs(tuple(ids[:60])).encode() + commit(repo, sname, sdata, tuple(ids[60:100])).encode()
    out = run(run_session(repo, ok))
    assert error_code(out) == P.E_MISSING_REFS  # 100 refs: under the cap, refused only because they are missing
    over = OPEN_W + P.Refs(tuple(ids[:60])).encode() + P.Refs(tuple(ids[60:])).encode() \
        + commit(repo, sname, sdata, ()).encode()
    out = run(run_session(repo, over))
    assert error_code(out) == P.E_PROTOCOL and "MAX_SNAPSHOT_REFS" in out.messages[-1].message, out.messages
    over = OPEN_W + P.Refs(tuple(ids[:60])).encode() + commit(repo, sname, sdata, tuple(ids[60:])).encode()
    out = run(run_session(repo, over))
    assert error_code(out) == P.E_PROTOCOL and "MAX_SNAPSHOT_REFS" in out.messages[-1].message, out.messages


def test_protocol_md_documents_the_caps():
    """Each cap is a row of PROTOCOL.md's limits table with its value (test_protocol_vectors checks the rows
    it finds against the code; this checks these rows are there)."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md").read_text()
    for name, value in [("MAX_SNAPSHOT_REFS", 1 << 25), ("MAX_LISTED_NAMES", 1 << 20),
                        ("MAX_ID_LIST_OBJECT", 32 << 20), ("MAX_REMOTE_ID_BYTES", 1 << 30)]:
        assert getattr(P, name) == value
        row = re.search(rf"^\| `{name}` \| ([0-9,]+) \|", doc, re.M)
        assert row and int(row.group(1).replace(",", "")) == value, f"PROTOCOL.md has no limits row for {name}"


@pytest.mark.parametrize("perms", ["", "r"], ids=["no-permission", "read-only-key"])
def test_big_frame_after_a_refused_open_is_not_read(repo, perms):
    """The 64 MiB limit applies only once OPEN succeeded: a refused OPEN's next frame is never buffered."""
    big = struct.pack(">IB", S.SMALL_FRAME + 100, P.PUT_PACK)  # header only: the body never comes
    out = run(run_session(repo, OPEN_W + big, perms=perms, eof=False, timeout=5))
    assert not out.timed_out, "the receiver waited for a big frame after a refused OPEN"
    assert kinds(out) == ["Hello", "Error"] and error_code(out) == P.E_NOT_ALLOWED


def test_big_frame_pipelined_behind_open_waits_for_the_open(repo):
    """Frames behind an OPEN are read with the small limit until the OPEN has succeeded, then the big one."""
    pname, pdata = fake_pack(b"p" * (S.SMALL_FRAME + 10))
    out = run(run_session(repo, OPEN_W + put(repo, pname, (b"\x07" * 32,), pdata).encode()))
    assert kinds(out) == ["Hello", "OpenOk", "PackOk"]


# --- over a real `replicator serve` --------------------------------------------------------------------
async def _raw(site, *rounds: list[bytes], key: str = "writer") -> list:
    """Send HELLO, then each round of frames once the answers to the previous round came; read until the
    server closes (or, after the last round, until it answered everything).  :returns: the messages."""
    from replicator.transport.ssh import connect

    conn = await connect("127.0.0.1", site.port, "x", str(site.keys[key]), str(site.known_hosts))
    got: list = []
    try:
        conn.writer.write(P.Hello().encode())
        got.append(await asyncio.wait_for(P.read_message(conn.reader), 10))
        for frames in rounds:
            conn.writer.write(b"".join(frames))
            await conn.writer.drain()
            for _ in range(len(frames)):
                msg = await asyncio.wait_for(P.read_message(conn.reader), 10)
                if msg is None:
                    return got
                got.append(msg)
                if isinstance(msg, P.Error):
                    assert await asyncio.wait_for(P.read_frame(conn.reader), 10) is None  # then it closes
                    return got
    finally:
        conn.close()
    return got


def test_served_session_refused_with_requests_behind_does_not_keep_the_lock(site):
    """The wedge: what an honest sender does at OPEN (LIST ids/, then GET the lists, pipelined), with one list
    unreadable, used to leave the session stuck holding the writer lock: every later sync got ERROR 8 "locked"
    until serve restarted."""
    site.pin()
    gets = [P.Get(MISSING_IDS).encode(), *[P.Get("snapshots/" + "ab" * 32).encode()] * 63]
    first = asyncio.run(_raw(site, [OPEN_W], [P.List("ids/").encode()], gets))
    assert [type(m) for m in first] == [P.Hello, P.OpenOk, P.Names, P.Error] and first[-1].code == P.E_NOT_FOUND
    second = asyncio.run(_raw(site, [OPEN_W]))
    assert [type(m) for m in second] == [P.Hello, P.OpenOk], f"second session: {second[-1]}"


# --- a peer dying mid-transfer: one line each side -------------------------------------------------------
NOISE = ("Traceback", "Future exception was never retrieved", "Task exception was never retrieved",
         "Exception in callback")


def _wait_for(predicate, timeout: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _packs(repo) -> list:
    d = repo / "data"
    return [p for p in d.rglob("*") if p.is_file() and not p.name.startswith(".")] if d.exists() else []


def test_server_killed_while_a_sync_uploads(site, tmp_path):
    """SIGKILL of `serve` in the middle of an upload: the sender ends with one line on stderr and exit 7."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.transport.conftest import PASSPHRASE, make_tree

    src = tmp_path / "src"
    make_tree(src, 6, 8 << 20, seed=11)  # 48 MiB of noise: three packs at 16 MiB, sent at 16 MiB/s
    site.pin()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}
    env["REPLICATOR_PASSPHRASE"] = PASSPHRASE
    env["REPLICATOR_CACHE_DIR"] = str(tmp_path / "cache")
    proc = subprocess.Popen([sys.executable, "-m", "replicator", *site.sync_args(src, extra=["--bwlimit", "16M"]),
                             "-q"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _packs(site.repo) or proc.poll() is not None, 60, "the first pack to land")
        assert proc.poll() is None, proc.communicate()
        site.proc.kill()
        site.proc.wait()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 7, err
    assert len(lines) == 1 and lines[0].startswith("replicator: error: "), err
    assert not any(n in err for n in NOISE), err


@pytest.mark.parametrize("when", ["mid-pack", "while-answered"])
def test_client_gone_mid_transfer(site, when):
    """The sender's connection goes (no EOF, no BYE) half-way through a PUT_PACK frame, or while the receiver is
    writing answers to pipelined GETs: `serve` logs one line about it, no traceback, and releases the lock (a
    new write session opens).  The second case used to keep the lock until serve restarted, silently."""
    from replicator.transport.ssh import connect

    pname, pdata = fake_pack(os.urandom(4 << 20))
    frame = P.PutPack(pname, (b"\x09" * 32,), site.pack_proof(pname, (b"\x09" * 32,)), pdata).encode()
    site.pin()
    if when == "while-answered":
        assert isinstance(asyncio.run(_raw(site, [OPEN_W], [frame]))[-1], P.PackOk)

    async def cut() -> None:
        conn = await connect("127.0.0.1", site.port, "x", str(site.keys["writer"]), str(site.known_hosts))
        conn.writer.write(P.Hello().encode() + OPEN_W)
        assert isinstance(await P.read_message(conn.reader), P.Hello)
        assert isinstance(await P.read_message(conn.reader), P.OpenOk)
        conn.writer.write(frame[: len(frame) // 2] if when == "mid-pack" else P.Get(pname).encode() * 30)
        await conn.writer.drain()
        await asyncio.sleep(0.3)
        conn.conn.abort()  # the TCP connection just goes

    before = len(site.server_log().splitlines())
    asyncio.run(cut())
    _wait_for(lambda: len(site.server_log().splitlines()) > before + 1, 10, "serve to log the lost peer")
    second = asyncio.run(_raw(site, [OPEN_W]))
    assert [type(m) for m in second] == [P.Hello, P.OpenOk], second
    new = site.server_log().splitlines()[before:]
    assert not any(n in line for line in new for n in NOISE), "\n".join(new)
    about_the_cut = [line for line in new if "opened amiens" not in line]
    assert len(about_the_cut) == 1, "\n".join(new)
    assert about_the_cut[0].split(" ")[1] == "warning" and "SHA256:" in about_the_cut[0], about_the_cut
    if when == "mid-pack":
        assert not _packs(site.repo)

"""A commit's refs as a difference from its parent's (protocol version 4: REFS_BASE, DROP; PROTOCOL.md 4).

The receiver rebuilds the whole refs from the parent's stored refs and the difference, and commits only
when the result has the count and SHA-256 the sender declared: a stale or forged sender cache, a base
that is not the parent, or a difference that does not apply is refused and nothing is committed.  The
sender keeps the refs it last committed per source (transport/refs_cache.py) and falls back to whole
refs whenever it has no usable copy."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest

from replicator.format import idlist as I
from replicator.format import layout as L
from replicator.transport import protocol as P
from replicator.transport.refs_cache import RefsCache
from tests.conftest import run_cli
from tests.transport.conftest import make_tree
from tests.transport.inproc import REPO, fake_pack, fake_snapshot, keyring, make_repository, put, run_session, snapshots

OPEN_W = P.Open(REPO, P.MODE_WRITE).encode()
TAG = b"\x07" * 16
IDS = sorted(bytes([i]) * 32 for i in range(1, 9))


def _commit(repo, name, data, parent, refs):
    proof = keyring(str(repo)).declarer.snapshot(L.digest_of(name))
    return P.Commit(name, data, proof, TAG, parent, tuple(refs))


@pytest.fixture
def based(tmp_path):
    """A repository holding the eight IDS in one pack and snapshot ``s1`` of source TAG whose refs are IDS[:6]."""
    repo = tmp_path / "secondary"
    make_repository(repo)
    pname, pdata = fake_pack(b"eight ids")
    s1, d1 = fake_snapshot(b"first")
    out = asyncio.run(run_session(repo, OPEN_W + put(repo, pname, IDS, pdata).encode()
                                  + _commit(repo, s1, d1, None, IDS[:6]).encode()))
    assert [type(m).__name__ for m in out.messages] == ["Hello", "OpenOk", "PackOk", "CommitOk"], out.messages
    return repo, L.digest_of(s1)


def _diff_session(repo, base, dropped, added, full, *, declared=None, parent=None, salt=b"second"):
    s2, d2 = fake_snapshot(salt)
    count, digest = declared if declared is not None else (len(full), P.refs_digest(full))
    frames = (OPEN_W + P.RefsBase(base, count, digest).encode()
              + (P.Drop(tuple(dropped)).encode() if dropped else b"")
              + _commit(repo, s2, d2, parent or base, added).encode())
    return s2, asyncio.run(run_session(repo, frames))


def _refs(repo, snapshot_name):
    name = L.refs_name(L.digest_of(snapshot_name))
    return list(I.decode_ids((repo / name).read_bytes(), name))


def test_difference_and_apply_are_inverse():
    J = b"".join  # refs are one buffer of 32-byte ids (issue 11), lists of ids are still accepted
    old, new = IDS[:6], IDS[2:8]
    dropped, added = I.difference(J(old), J(new))
    assert dropped == J(IDS[:2]) and added == J(IDS[6:8])
    assert I.difference(old, new) == (dropped, added)
    assert I.apply_difference(J(old), dropped, added) == J(new)
    assert I.apply_difference(b"", b"", J(IDS)) == J(IDS) and I.apply_difference(J(IDS), J(IDS), b"") == b""
    with pytest.raises(ValueError, match="not in the base"):
        I.apply_difference(J(IDS[:3]), IDS[5], b"")
    with pytest.raises(ValueError, match="already"):
        I.apply_difference(IDS[:3], [], [IDS[1]])


def test_a_difference_commits_the_whole_refs(based):
    repo, base = based
    full = IDS[1:8]
    s2, out = _diff_session(repo, base, IDS[:1], IDS[6:8], full)
    assert [type(m).__name__ for m in out.messages][-1] == "CommitOk", out.messages
    assert _refs(repo, s2) == full


@pytest.mark.parametrize("case", ["declared digest", "declared count", "drop not in base", "add already in base",
                                  "base is not the parent"])
def test_a_difference_that_does_not_give_the_declared_refs_commits_nothing(based, case):
    repo, base = based
    full = IDS[1:8]
    kw: dict = {}
    dropped, added = IDS[:1], IDS[6:8]
    if case == "declared digest":
        kw["declared"] = (len(full), P.refs_digest(IDS[:7]))
    elif case == "declared count":
        kw["declared"] = (len(full) + 1, P.refs_digest(full))
    elif case == "drop not in base":
        dropped = [IDS[7]]
    elif case == "add already in base":
        added = [IDS[2], *IDS[6:8]]
    else:
        kw["parent"] = "ab" * 32
    before = snapshots(repo)
    _s2, out = _diff_session(repo, base, dropped, added, full, **kw)
    err = out.messages[-1]
    assert isinstance(err, P.Error), out.messages
    assert err.code in (P.E_INTEGRITY, P.E_PROTOCOL, P.E_DIVERGED), err
    assert snapshots(repo) == before  # nothing committed


def test_drop_without_base_is_a_protocol_violation(based):
    repo, _base = based
    s2, d2 = fake_snapshot(b"x")
    out = asyncio.run(run_session(repo, OPEN_W + P.Drop((IDS[0],)).encode() + _commit(repo, s2, d2, None, ()).encode()))
    assert isinstance(out.messages[-1], P.Error) and out.messages[-1].code == P.E_PROTOCOL
    assert s2.split("/")[-1] not in snapshots(repo)


def test_refs_cache_is_only_used_for_its_own_snapshot_and_when_whole(tmp_path):
    cache = RefsCache(str(tmp_path))
    cache.save(TAG, "cd" * 32, b"".join(IDS))
    assert cache.load(TAG, "cd" * 32) == b"".join(IDS)  # the body as one buffer (issue 11)
    assert cache.load(TAG, "ef" * 32) is None
    path = tmp_path / f"refs-{TAG.hex()}.ids"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert cache.load(TAG, "cd" * 32) is None


def test_refs_cache_refuses_ids_out_of_order(tmp_path):
    cache = RefsCache(str(tmp_path))
    cache.save(TAG, "cd" * 32, b"".join(reversed(IDS)))  # whole and hashed, but not sorted
    assert cache.load(TAG, "cd" * 32) is None
    cache.save(TAG, "cd" * 32, bytearray(b"".join(IDS)))
    assert cache.load(TAG, "cd" * 32) == b"".join(IDS)


def _cache_file(cache_dir):
    found = [p for p in cache_dir.rglob("refs-*.ids")]
    assert len(found) == 1, found
    return found[0]


def test_a_small_change_sends_a_small_difference_over_ssh(site, tmp_path):
    src = tmp_path / "src"
    make_tree(src, 120, 2000, seed=3)
    site.pin()
    first = json.loads(run_cli(*site.sync_args(src), "--json").stdout)
    assert first["refs_sent"] >= 120
    (src / "scan-007.dcm").write_bytes(b"amended" * 100)
    r = run_cli(*site.sync_args(src), "--json")
    assert r.returncode == 0, r.stderr
    second = json.loads(r.stdout)
    assert second["committed"] and second["refs_sent"] <= 3, second  # the new chunk and the new root tree
    restored = tmp_path / "restored"
    assert run_cli("restore", str(site.repo), str(restored), "-q").returncode == 0
    assert (restored / "scan-007.dcm").read_bytes() == b"amended" * 100
    v = run_cli("verify", str(site.repo), "--data", "--json")
    assert v.returncode == 0, v.stdout + v.stderr


def test_a_forged_sender_cache_is_refused_and_the_next_sync_sends_whole_refs(site, tmp_path):
    src = tmp_path / "src"
    make_tree(src, 40, 2000, seed=4)
    site.pin()
    assert run_cli(*site.sync_args(src)).returncode == 0
    cache_file = _cache_file(Path(os.environ["REPLICATOR_CACHE_DIR"]))
    data = cache_file.read_bytes()
    head, body = data[:40], data[72:]
    # The copy claims one ref fewer than the snapshot has: the difference would leave a live chunk unreferenced
    # (and prune would delete it) were the receiver to trust it.
    body = body[32:]
    cache_file.write_bytes(head + hashlib.sha256(body).digest() + body)
    (src / "scan-001.dcm").write_bytes(b"changed")
    before = site.snapshots()
    r = run_cli(*site.sync_args(src))
    assert r.returncode != 0 and "refs" in r.stderr and "whole" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert site.snapshots() == before
    r = run_cli(*site.sync_args(src), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["refs_sent"] >= 40
    assert run_cli("verify", str(site.repo), "--data").returncode == 0


def test_id_frames_from_a_buffer_are_the_frames_from_the_ids():
    """A sender gives REFS, DROP and COMMIT a view of its refs buffer (issue 11): the same bytes on the wire,
    and the receiver decodes the ids as before."""
    J = b"".join
    assert P.Refs(J(IDS)).encode() == P.Refs(tuple(IDS)).encode()
    assert P.Drop(memoryview(bytearray(J(IDS)))[32:96]).encode() == P.Drop(tuple(IDS[1:3])).encode()
    assert P.Refs(b"").encode() == P.Refs(()).encode()
    name, data = fake_snapshot(b"frames")
    proof = bytes(64)
    wire = P.Commit(name, data, proof, TAG, None, memoryview(J(IDS))[64:]).encode()
    assert wire == P.Commit(name, data, proof, TAG, None, tuple(IDS[2:])).encode()
    assert P.decode_message(P.COMMIT, wire[5:]) == P.Commit(name, data, proof, TAG, None, tuple(IDS[2:]))
    with pytest.raises(ValueError, match="not a whole number"):
        P.Refs(bytes(33)).encode()

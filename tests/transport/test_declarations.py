"""The receiver accepts only what a key holder made (issue 9, item 2; PROTOCOL.md version 2).

Someone holding a sender's SSH key but not the passphrase used to be able to
upload a tiny junk pack declaring existing chunk ids (after forget + prune,
content coming back at the primary was never stored again) and to commit a
junk "snapshot" that blocked every restore.  Every write now carries a proof
signed by the repository's key, checked by the receiver with the public key
in ``keys/default``; the sender deduplicates only against lists whose proof
verifies with its own public key, and signs the old ones.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3

from replicator.format import layout as L
from replicator.format.idlist import HEADER_SIZE, IDS_MAGIC, REFS_MAGIC
from replicator.transport import protocol as P
from tests.conformance.test_sink import stranger
from tests.conftest import run_cli
from tests.transport.inproc import fake_pack, fake_snapshot
from tests.transport.test_hostile_peer import OPEN_W, _error, run


def _first_sync(site, tmp_path, content: bytes):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "scan.dcm").write_bytes(content)
    site.pin()
    r = run_cli(*site.sync_args(src))
    assert r.returncode == 0, r.stderr
    return src


def _held_ids(site) -> list[bytes]:
    ids = []
    for path in sorted((site.repo / "ids").iterdir()):
        data = path.read_bytes()
        ids += [data[i : i + 32] for i in range(HEADER_SIZE, len(data), 32)]
    return ids


def _packs(site) -> set[str]:
    return {p.name for p in (site.repo / "data").rglob("*") if p.is_file()}


def test_a_junk_pack_cannot_declare_chunks_it_does_not_hold(site, tmp_path):
    _first_sync(site, tmp_path, random.Random(1).randbytes(300_000))
    before, victims = _packs(site), tuple(sorted(_held_ids(site)))
    pname, pdata = fake_pack(b"junk" * 10)
    digest = L.digest_of(pname)
    own_proof = stranger().declarer.pack(digest, b"".join(victims))
    got = run(site, [OPEN_W, P.PutPack(pname, victims, own_proof, pdata).encode()])
    _error(got, P.E_INTEGRITY, "not signed by this repository's key")
    # Nor can a genuine proof be replayed for another pack: it names the pack it declares.
    genuine = (site.repo / "ids" / sorted(before)[0]).read_bytes()[8:HEADER_SIZE]
    got = run(site, [OPEN_W, P.PutPack(pname, victims, genuine, pdata).encode()])
    _error(got, P.E_INTEGRITY, "not signed by this repository's key")
    got = run(site, [OPEN_W, P.Declare(L.pack_name(sorted(before)[0]), victims + (b"\xff" * 32,), own_proof).encode()])
    _error(got, P.E_INTEGRITY, "not signed by this repository's key")
    assert _packs(site) == before and not (site.repo / "ids" / digest).exists()


def test_a_junk_snapshot_cannot_be_committed_and_restore_still_works(site, tmp_path):
    content = random.Random(2).randbytes(200_000)
    _first_sync(site, tmp_path, content)
    before = site.snapshots()
    sname, sdata = fake_snapshot(b"junk")
    held = tuple(sorted(_held_ids(site))[:1])
    forged = P.Commit(sname, sdata, stranger().declarer.snapshot(L.digest_of(sname)), os.urandom(16), None, held)
    got = run(site, [OPEN_W, forged.encode()])
    _error(got, P.E_INTEGRITY, "not made by a key holder")
    assert site.snapshots() == before
    out = tmp_path / "out"
    r = run_cli("restore", str(site.repo), str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "scan.dcm").read_bytes() == content


def test_the_sender_does_not_deduplicate_against_a_forged_list(site, tmp_path):
    """A list at the secondary without a valid proof (kept from before 0.3, or written there by an attacker)
    claims the source's chunks for a junk pack: the sender sends them anyway, says so, and restore is whole."""
    content = random.Random(3).randbytes(100_000)  # below the minimum chunk size: one chunk, id = keyed hash
    kr = site.keyring()
    pname, pdata = fake_pack(b"junk" * 10)
    (site.repo / "data" / pname.split("/")[1]).mkdir(parents=True)
    (site.repo / pname).write_bytes(pdata)
    (site.repo / "ids").mkdir(exist_ok=True)
    (site.repo / "ids" / L.digest_of(pname)).write_bytes(kr.chunk_hasher(content))  # a list without proof
    src = tmp_path / "src"
    src.mkdir()
    (src / "scan.dcm").write_bytes(content)
    site.pin()
    r = run_cli(*site.sync_args(src))
    said = r.stdout + r.stderr
    assert "carry no valid proof" in said and "impossible table length" in said, said
    assert r.returncode == 1, said  # committed, with warnings
    out = tmp_path / "out"
    r = run_cli("restore", str(site.repo), str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "scan.dcm").read_bytes() == content


def _downgrade_to_0_2(repo) -> int:
    """Strip the proofs, as release 0.2 wrote the lists; :returns: how many lists."""
    n = 0
    for kind, magic in (("ids", IDS_MAGIC), ("refs", REFS_MAGIC)):
        for path in (repo / kind).iterdir():
            data = path.read_bytes()
            assert data.startswith(magic)
            path.write_bytes(data[HEADER_SIZE:])
            n += 1
    return n


def _proofs(repo) -> tuple[int, int]:
    """(lists with a proof, lists without)."""
    lists = [p.read_bytes() for kind in ("ids", "refs") for p in (repo / kind).iterdir()]
    signed = sum(1 for d in lists if d[:6] in (IDS_MAGIC, REFS_MAGIC))
    return signed, len(lists) - signed


def test_a_secondary_written_by_0_2_is_signed_by_the_next_sync_and_upgrade(site, tmp_path):
    src = _first_sync(site, tmp_path, random.Random(4).randbytes(600_000))
    assert _downgrade_to_0_2(site.repo) == 2
    r = run_cli("serve", "--verify-only", "--repo", f"amiens={site.repo}", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert any("carry no proof yet" in n for n in json.loads(r.stdout)["amiens"]["notes"])
    packs = _packs(site)
    (src / "new.txt").write_text("one more result\n")
    r = run_cli(*site.sync_args(src, extra=["--json"]))
    assert r.returncode == 1 and "signed 1 id list(s) written before 0.3" in r.stdout + r.stderr, r.stderr
    assert len(_packs(site) - packs) == 1  # only the new file's pack: nothing already there was sent again
    assert json.loads(r.stdout)["bytes_sent"] < 100_000
    assert _proofs(site.repo) == (3, 1)  # the old snapshot's refs are still without proof
    r = run_cli("upgrade", site.url(), "--identity", str(site.keys["writer"]), "--known-hosts",
                str(site.known_hosts))
    assert r.returncode == 0, r.stdout + r.stderr
    assert _proofs(site.repo) == (4, 0)
    r = run_cli("serve", "--verify-only", "--repo", f"amiens={site.repo}", "--json")
    assert r.returncode == 0 and not json.loads(r.stdout)["amiens"]["notes"], r.stdout


def test_a_local_repository_written_by_0_2_is_signed_at_its_next_locked_open(tmp_path):
    repo = tmp_path / "repo"
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    src = tmp_path / "src"
    src.mkdir()
    (src / "lab.csv").write_bytes(random.Random(5).randbytes(50_000))
    assert run_cli("sync", str(src), str(repo), "--name", "lab").returncode == 0
    _downgrade_to_0_2(repo)
    with sqlite3.connect(repo / "index.sqlite") as db:  # a 0.2 index has no note of the upgrade
        db.execute("DELETE FROM meta WHERE key='declarations'")
    assert _proofs(repo) == (0, 2)
    r = run_cli("upgrade", str(repo))
    assert r.returncode == 0 and "signed 1 id lists and 1 snapshots" in r.stdout, r.stdout + r.stderr
    assert _proofs(repo) == (2, 0)
    r = run_cli("upgrade", str(repo))
    assert "up to date" in r.stdout, r.stdout


def test_proofs_are_bound_to_the_repository_and_the_object(tmp_path):
    """The same signing key over another repository id, or another pack, gives another statement."""
    from replicator.format.idlist import Verifier

    kr = stranger()
    ids = b"\x01" * 32
    proof = kr.declarer.pack("ab" * 32, ids)
    assert kr.verifier.pack("ab" * 32, ids, proof)
    assert not kr.verifier.pack("cd" * 32, ids, proof)
    assert not kr.verifier.pack("ab" * 32, b"\x02" * 32, proof)
    assert not Verifier(hashlib.sha256(b"other").hexdigest(), kr.public_key).pack("ab" * 32, ids, proof)
    assert not kr.verifier.snapshot("ab" * 32, proof)  # a pack's proof is no snapshot's


def test_a_senders_cache_from_0_2_does_not_pass_for_verified(site, tmp_path):
    """The sender cached the secondary's lists before proofs existed: those entries are fetched again and
    checked, so the lists at the secondary are signed (not trusted from the cache and left unsigned)."""
    cache = tmp_path / "cache"
    env = {"REPLICATOR_CACHE_DIR": str(cache)}
    src = tmp_path / "src"
    src.mkdir()
    (src / "scan.dcm").write_bytes(random.Random(6).randbytes(300_000))
    site.pin()
    for _ in range(2):  # the second sync fetches the secondary's list and caches it
        assert run_cli(*site.sync_args(src), env=env).returncode == 0
    _downgrade_to_0_2(site.repo)
    cached = list(cache.glob("*/remote-ids/*"))
    assert cached
    for path in cached:  # what a 0.2 sender had cached: the lists as they were, without proof
        path.write_bytes(path.read_bytes()[HEADER_SIZE:])
    (src / "new.txt").write_text("x\n")
    r = run_cli(*site.sync_args(src), env=env)
    assert "signed 1 id list(s) written before 0.3" in r.stdout + r.stderr, r.stdout + r.stderr
    assert _proofs(site.repo)[0] >= 2  # the old list signed, and the new pack's

"""forget and prune of ``ssh://``: the primary applies the retention policy with the passphrase, the
secondary deletes under its own lock and never needs the passphrase (docs/PROTOCOL.md, FORGET and PRUNE).

Before this, both commands refused an ssh:// URL, so retention at the secondary meant keeping the
passphrase there.  What must hold now: a kept snapshot still restores byte for byte and verify --data
passes; a FORGET without the key holder's proof (a stolen SSH key, no passphrase) deletes nothing; the
latest snapshot of a source is never forgotten; a read-only key can do neither; prune never deletes a
pack that a remaining snapshot references, and refuses when a snapshot's refs are unknown.
"""
from __future__ import annotations

import json
import random

import pytest

from replicator import constants as C
from replicator.transport import protocol as P
from tests.conftest import run_cli


def _three_days(site, tmp_path):
    """Three snapshots; each day replaces every file, so forgetting day 1 leaves its packs unreferenced."""
    src = tmp_path / "src"
    src.mkdir()
    rnd = random.Random(11)
    (src / "lab").mkdir()
    site.pin()
    contents = []
    for day in range(3):
        (src / "scan.dcm").write_bytes(rnd.randbytes(600_000))
        (src / "lab" / "results.csv").write_text(f"patient;glucose\n{day};5.4\n")
        r = run_cli(*site.sync_args(src), "--json")
        assert r.returncode == 0, r.stderr
        contents.append({p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*") if p.is_file()})
    return src, contents


def _sink(site, key="writer", mode=P.MODE_WRITE):
    from replicator.app.destinations import open_remote_sink

    return open_remote_sink(site.url(), identity=str(site.keys[key]), known_hosts=str(site.known_hosts), mode=mode)


def test_forget_and_prune_over_ssh_keep_what_restores(site, tmp_path):
    src, contents = _three_days(site, tmp_path)
    packs_before = {p.name for p in (site.repo / "data").rglob("*") if p.is_file()}
    r = run_cli(*site.remote("forget", site.url(), "--keep-last", "2", "--json"))
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["removed"] == 1 and out["kept"] == 2
    assert len(site.snapshots()) == 2  # deleted at the secondary, by the secondary
    gone = next(s["id"] for s in out["snapshots"] if not s["keep"])
    assert not (site.repo / "refs" / gone).exists()

    # prune needs no passphrase at all: it is key-less at the other site
    dry = run_cli(*site.remote("prune", site.url(), "--dry-run", "--json"), passphrase=None)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert json.loads(dry.stdout)["packs_deleted"] >= 1
    assert {p.name for p in (site.repo / "data").rglob("*") if p.is_file()} == packs_before  # a dry run
    r = run_cli(*site.remote("prune", site.url(), "--json"), passphrase=None)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["packs_deleted"] >= 1 and report["bytes_deleted"] >= 600_000, report
    assert report["snapshots"] == 2 and report["packs_kept_unlisted"] == 0
    left = {p.name for p in (site.repo / "data").rglob("*") if p.is_file()}
    assert left < packs_before
    assert {p.name for p in (site.repo / "ids").iterdir()} == left  # every list went with its pack

    # Everything kept still restores exactly, and verify --data (with the key, at the secondary) agrees.
    snaps = json.loads(run_cli(*site.remote("snapshots", site.url(), "--json")).stdout)["snapshots"]
    assert [s["generation"] for s in snaps] == [2, 3]
    for snap, expected in zip(snaps, contents[1:]):
        target = tmp_path / f"restored-{snap['generation']}"
        r = run_cli(*site.remote("restore", site.url(), str(target), "--snapshot", snap["id"]), "-q")
        assert r.returncode == 0, r.stderr
        assert {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()} \
            == expected
    v = run_cli("verify", str(site.repo), "--data", "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    k = run_cli("serve", "--verify-only", "--repo", f"amiens={site.repo}", "--json", passphrase=None)
    assert k.returncode == 0, k.stdout + k.stderr
    # and the next sync of a changed tree still deduplicates against what is left, and commits on top
    (src / "day-4.txt").write_text("admissions of day 4\n")
    r = run_cli(*site.sync_args(src), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["generation"] == 4, r.stderr


def test_a_forget_without_the_key_holders_proof_deletes_nothing(site, tmp_path):
    """A stolen rw SSH key, no passphrase: the receiver checks every FORGET's proof."""
    _three_days(site, tmp_path)
    before = site.snapshots()
    victim = f"snapshots/{before[0]}"
    keys = site.keyring()
    forged = (keys.declarer.snapshot(before[0]),  # a real proof, of another statement: not an order to forget
              bytes(64))
    for proof in forged:
        with _sink(site) as sink, pytest.raises(P.RemoteError) as refused:
            sink.forget([(victim, proof)])
        assert refused.value.code == P.E_INTEGRITY and "not signed by this repository's key" in str(refused.value)
    assert site.snapshots() == before


def test_the_latest_snapshot_of_a_source_is_never_forgotten(site, tmp_path):
    _three_days(site, tmp_path)
    heads = [json.loads(p.read_text())["snapshot"] for p in (site.repo / "heads").iterdir()]
    assert len(heads) == 1
    with _sink(site) as sink, pytest.raises(P.RemoteError) as refused:
        sink.forget([(f"snapshots/{heads[0]}", site.keyring().declarer.forget(heads[0]))])
    assert refused.value.code == P.E_NOT_ALLOWED and "latest of its source" in str(refused.value)
    assert heads[0] in site.snapshots()


def test_a_read_only_key_can_neither_forget_nor_prune(site, tmp_path):
    _three_days(site, tmp_path)
    before = site.snapshots()
    for args in (("forget", site.url(), "--keep-last", "1"), ("prune", site.url())):
        r = run_cli(*site.remote(*args, key="reader"))
        assert r.returncode == C.EXIT_REPOSITORY and "not allowed" in r.stderr, r.stdout + r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    with _sink(site, key="reader", mode=P.MODE_READ) as sink, pytest.raises(P.RemoteError) as refused:
        sink.prune()
    assert refused.value.code == P.E_NOT_ALLOWED
    assert site.snapshots() == before


def test_prune_refuses_when_what_a_snapshot_references_is_unknown(site, tmp_path):
    _three_days(site, tmp_path)
    packs = sorted(p.name for p in (site.repo / "data").rglob("*") if p.is_file())
    (site.repo / "refs" / site.snapshots()[0]).unlink()
    r = run_cli(*site.remote("prune", site.url()), passphrase=None)
    assert r.returncode == C.EXIT_INTEGRITY and "what it references is unknown" in r.stderr, r.stdout + r.stderr
    assert sorted(p.name for p in (site.repo / "data").rglob("*") if p.is_file()) == packs


def test_prune_keeps_a_pack_without_an_id_list_and_drops_orphans(site, tmp_path):
    """What a pack holds is known key-less only from its signed id list: without one the pack stays."""
    _three_days(site, tmp_path)
    assert run_cli(*site.remote("forget", site.url(), "--keep-last", "1")).returncode == 0
    lists = sorted((site.repo / "ids").iterdir())
    unlisted = lists[0]
    unlisted.unlink()
    orphan_refs = site.repo / "refs" / ("ab" * 32)
    orphan_refs.write_bytes(b"")
    r = run_cli(*site.remote("prune", site.url(), "--json"), passphrase=None)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["packs_kept_unlisted"] == 1 and report["refs_deleted"] >= 1, report
    assert next((site.repo / "data").rglob(unlisted.name), None) is not None
    assert not orphan_refs.exists()

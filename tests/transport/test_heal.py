"""Damage heals: a pack found damaged at the secondary is quarantined, its chunks leave the set the sender
deduplicates against, the next sync sends them again, and every snapshot is whole again.

On release 0.1.0 the next sync stored nothing ("0 new"), exited 0 and committed on top of the damage."""
from __future__ import annotations

import json
import random

from tests.conftest import run_cli


def _flip_a_byte_in_a_pack(repo) -> str:
    packs = sorted(p for p in (repo / "data").rglob("*") if p.is_file())
    victim = max(packs, key=lambda p: p.stat().st_size)  # the one with the image's chunks
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.write_bytes(bytes(data))
    return victim.name


def test_flipped_byte_at_the_secondary_heals_at_the_next_sync(site, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "scan.dcm").write_bytes(random.Random(3).randbytes(3 << 20))
    (src / "note.txt").write_text("stable\n")
    site.pin()
    r = run_cli(*site.sync_args(src, extra=["--json"]))
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert len(list((site.repo / "data").rglob("*/*"))) == 1  # one pack holds every chunk and tree
    victim = _flip_a_byte_in_a_pack(site.repo)

    r = run_cli("serve", "--verify-only", "--repo", f"amiens={site.repo}", "--json")
    assert r.returncode == 5, r.stdout + r.stderr
    report = json.loads(r.stdout)["amiens"]
    assert report["quarantined"] == [victim]
    assert (site.repo / "quarantine" / victim).exists()

    r = run_cli(*site.sync_args(src, extra=["--json"]))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["chunks_new"] == first["chunks_new"]  # every chunk the damaged pack held is sent again

    r = run_cli("serve", "--verify-only", "--repo", f"amiens={site.repo}", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)["amiens"]
    assert report["quarantined"] == [] and any("healed" in n for n in report["notes"]), report
    r = run_cli("verify", str(site.repo), "--data")  # with the key, at the secondary: clean
    assert r.returncode == 0, r.stdout + r.stderr
    # Both snapshots restore whole from the secondary (the older one through the re-sent chunks).
    for snap in json.loads(run_cli("snapshots", str(site.repo), "--json").stdout)["snapshots"]:
        out = tmp_path / f"restore-{snap['id'][:8]}"
        r = run_cli("restore", str(site.repo), str(out), "--snapshot", snap["id"])
        assert r.returncode == 0, r.stderr
        assert (out / "scan.dcm").read_bytes() == (src / "scan.dcm").read_bytes()


def test_quarantine_waits_for_a_running_sync(site, tmp_path):
    """The writer lock is held by a write session: the damage is reported, quarantined at the next run."""
    from replicator.repo.local_sink import LocalSink

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(random.Random(4).randbytes(1 << 20))
    site.pin()
    assert run_cli(*site.sync_args(src)).returncode == 0
    _flip_a_byte_in_a_pack(site.repo)
    with LocalSink.open(str(site.repo), writable=True, untrusted=True):
        r = run_cli("serve", "--verify-only", "--repo", f"amiens={site.repo}", "--json")
    assert r.returncode == 5
    report = json.loads(r.stdout)["amiens"]
    assert report["quarantined"] == [] and any("not quarantined now" in n for n in report["notes"])
    r = run_cli("serve", "--verify-only", "--repo", f"amiens={site.repo}", "--json")
    assert len(json.loads(r.stdout)["amiens"]["quarantined"]) == 1


def test_verify_data_then_sync_heals_a_local_repository(tmp_path):
    """The same at the primary, found with the key: verify --data quarantines, the sync heals, verify is clean."""
    repo = tmp_path / "repo"
    src = tmp_path / "src"
    src.mkdir()
    (src / "lab.csv").write_bytes(random.Random(5).randbytes(2 << 20))
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    assert run_cli("sync", str(src), str(repo), "--name", "lab").returncode == 0
    victim = _flip_a_byte_in_a_pack(repo)
    r = run_cli("verify", str(repo), "--data", "--json")
    assert r.returncode == 5 and json.loads(r.stdout)["quarantined"] == [victim], r.stdout
    r = run_cli("sync", str(src), str(repo), "--name", "lab", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["chunks_new"] >= 1, r.stderr
    r = run_cli("verify", str(repo), "--data")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "quarantined" in r.stdout  # named as a note, not a problem
    out = tmp_path / "out"
    assert run_cli("restore", str(repo), str(out)).returncode == 0
    assert (out / "lab.csv").read_bytes() == (src / "lab.csv").read_bytes()


def test_primary_spot_checks_the_secondary_over_ssh(site, tmp_path):
    """verify ssh://... --read-data-subset reads a sample back with the key (read permission is enough)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "scan.dcm").write_bytes(random.Random(6).randbytes(1 << 20))
    site.pin()
    assert run_cli(*site.sync_args(src)).returncode == 0
    args = ["verify", site.url(), "--read-data-subset", "100%", "--identity", str(site.keys["reader"]),
            "--known-hosts", str(site.known_hosts), "--json"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["packs_checked"] == 1
    _flip_a_byte_in_a_pack(site.repo)  # the secondary rotted, or lies about what it stores
    r = run_cli(*args)
    assert r.returncode == 5 and "does not match its name" in r.stdout, r.stdout + r.stderr
    remote = ["--identity", str(site.keys["reader"]), "--known-hosts", str(site.known_hosts)]
    r = run_cli("verify", site.url(), *remote)  # the structure is intact: the damage is in a pack's bytes
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli("verify", site.url(), "--data", *remote)
    assert r.returncode == 5 and "quarantined there by 'replicator serve --verify-only'" in r.stdout, r.stdout


def test_prune_removes_a_quarantined_pack_once_healed(tmp_path):
    repo = tmp_path / "repo"
    src = tmp_path / "src"
    src.mkdir()
    (src / "img.dcm").write_bytes(random.Random(7).randbytes(1 << 20))
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    assert run_cli("sync", str(src), str(repo), "--name", "s").returncode == 0
    victim = _flip_a_byte_in_a_pack(repo)
    assert run_cli("verify", str(repo), "--data", "-q").returncode == 5
    r = run_cli("prune", str(repo), "--json")  # not healed yet: the damaged pack is the last home of its chunks
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["quarantined_kept"] == [f"data/{victim[:2]}/{victim}"]
    assert (repo / "data" / victim[:2] / victim).exists()
    assert run_cli("sync", str(src), str(repo), "--name", "s").returncode == 0
    r = run_cli("prune", str(repo), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["quarantined_deleted"] == 1, r.stdout + r.stderr
    assert not (repo / "quarantine").exists() or not any((repo / "quarantine").iterdir())
    r = run_cli("verify", str(repo), "--data")
    assert r.returncode == 0 and "quarantined" not in r.stdout, r.stdout

"""A repository written by release 0.1.0 (tests/fixtures/repo-0.1.0.tar.gz: local syncs, no ids/ and no
refs/) is brought up to date in place, by ``replicator upgrade`` or at the first locked open, and then
passes the key-less check a receiver makes; nothing that was there is changed."""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

FIXTURE = ROOT / "tests" / "fixtures" / "repo-0.1.0.tar.gz"
FIXTURE_PASSPHRASE = "fixture-passphrase"


def extract_fixture(tmp_path: Path) -> tuple[Path, Path]:
    """:returns: (repository, the source tree it was synced from)."""
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="tar")
    return tmp_path / "fixture-repo", tmp_path / "src"


def objects(repo: Path) -> dict[str, str]:
    """Every object (no index, no id-set cache, no lock) -> SHA-256 of its bytes."""
    out = {}
    for dirpath, _dirs, files in os.walk(repo):
        for fn in files:
            rel = os.path.relpath(os.path.join(dirpath, fn), repo)
            if rel.startswith(("index.sqlite", "idset-cache/")) or rel == "lock":  # caches and the lock
                continue
            out[rel] = hashlib.sha256(Path(dirpath, fn).read_bytes()).hexdigest()
    return out


def kinds(repo: Path) -> set[str]:
    return {name.split("/")[0] for name in objects(repo)}


def test_fixture_is_what_release_0_1_0_wrote(tmp_path):
    """Guards the fixture itself: the upgrade tests below mean nothing if it already had ids/ or refs/."""
    repo, _src = extract_fixture(tmp_path)
    assert kinds(repo) == {"config", "keys", "data", "snapshots"}
    r = run_cli("serve", "--verify-only", "--repo", f"old={repo}")
    assert r.returncode == 5 and "no refs/ object" in r.stdout + r.stderr, r.stdout + r.stderr


def test_upgrade_command_adds_ids_and_refs_and_changes_nothing(tmp_path):
    repo, _src = extract_fixture(tmp_path)
    before = objects(repo)
    r = run_cli("upgrade", str(repo), "--json", passphrase=FIXTURE_PASSPHRASE)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"id_lists_written": 2, "refs_written": 2, "id_lists_signed": 0,
                                    "snapshots_signed": 0, "problems": []}
    after = objects(repo)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing rewritten or removed
    assert kinds(repo) == {"config", "keys", "data", "ids", "snapshots", "refs"}
    r = run_cli("serve", "--verify-only", "--repo", f"old={repo}")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli("upgrade", str(repo), passphrase=FIXTURE_PASSPHRASE)
    assert r.returncode == 0 and "up to date" in r.stdout
    assert objects(repo) == after


def test_first_locked_open_upgrades(tmp_path):
    """A local sync (a locked open) of the old repository brings the old objects up to date too."""
    repo, src = extract_fixture(tmp_path)
    (src / "ward" / "new-admission.hl7").write_text("MSH|new\n")
    r = run_cli("sync", str(src), str(repo), "--name", "fixture", "--json", passphrase=FIXTURE_PASSPHRASE)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["generation"] == 3
    r = run_cli("serve", "--verify-only", "--repo", f"old={repo}", "--json")
    assert r.returncode == 0, r.stdout
    report = json.loads(r.stdout)["old"]
    assert report["snapshots"] == 3 and report["ids_objects"] == report["packs"] == 3


def test_upgrade_reports_a_damaged_snapshot_and_does_the_rest(tmp_path):
    repo, _src = extract_fixture(tmp_path)
    victim = sorted((repo / "snapshots").iterdir())[0]
    data = bytearray(victim.read_bytes())
    data[70] ^= 1
    victim.write_bytes(bytes(data))
    r = run_cli("upgrade", str(repo), "--json", passphrase=FIXTURE_PASSPHRASE)
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    assert report["id_lists_written"] == 2 and report["refs_written"] == 1
    assert len(report["problems"]) == 1 and victim.name[:16] in report["problems"][0]


@pytest.mark.parametrize("passphrase", ["wrong"])
def test_upgrade_needs_the_passphrase(tmp_path, passphrase):
    repo, _src = extract_fixture(tmp_path)
    before = objects(repo)
    r = run_cli("upgrade", str(repo), passphrase=passphrase)
    assert r.returncode == 4 and r.stderr.count("\n") == 1, r.stderr
    assert objects(repo) == before

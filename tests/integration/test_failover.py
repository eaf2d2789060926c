"""Failover and failback between the two sites (docs/OPERATIONS.md "Failover and failback").

Before: when Toulouse came back after a failover, its daemon committed its stale tree on top of what
Amiens had written meanwhile (exit 0), and the live copy lost the admissions written during the outage.
Now the writer of a source is whoever committed it last with this site's knowledge: `promote` makes the
secondary the writer, the old primary is refused (exit 8, naming the host that took over) until it has
failed back and takes the role back explicitly, and then the secondary is refused in turn.
"""
from __future__ import annotations

import filecmp
import random

from tests.conftest import run_cli

NAME = "hospitals"


def _ssh(secondary, *args: str) -> list[str]:
    return [*args, "--identity", str(secondary.keys["writer"]), "--known-hosts", str(secondary.known_hosts)]


def _same_tree(a, b) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _match, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def test_failover_fences_the_old_primary_and_failback_hands_the_role_back(site, tmp_path):
    toulouse = tmp_path / "toulouse-data"
    (toulouse / "lab").mkdir(parents=True)
    (toulouse / "lab" / "results.csv").write_text("patient;glucose\n1;5.4\n")
    (toulouse / "scan.dcm").write_bytes(random.Random(9).randbytes(400_000))
    site.pin()
    for _ in range(2):
        r = run_cli(*_ssh(site, "sync", str(toulouse), site.url(), "--name", NAME))
        assert r.returncode == 0, r.stdout + r.stderr
        (toulouse / "lab" / "results.csv").write_text("patient;glucose\n1;5.4\n2;6.0\n")

    # Toulouse goes dark.  Amiens serves its copy and applications write there.
    amiens = tmp_path / "amiens-live"
    assert run_cli("restore", str(site.repo), str(amiens), "-q").returncode == 0
    (amiens / "admission-during-outage.hl7").write_text("MSH|^~\\&|ADT|AMIENS\n")
    r = run_cli("promote", str(amiens), str(site.repo), "--name", NAME)
    assert r.returncode == 0 and "now written from this site" in r.stdout, r.stdout + r.stderr

    # Toulouse comes back; its daemon syncs its stale tree at boot: refused, nothing committed.
    before = site.snapshots()
    r = run_cli(*_ssh(site, "sync", str(toulouse), site.url(), "--name", NAME))
    assert r.returncode == 8, r.stdout + r.stderr
    assert "another site writes hospitals now" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert site.snapshots() == before

    # Its cache is lost too (a reinstall): the receiver itself refuses, naming the host that took over.
    lost = tmp_path / "toulouse-new-cache"
    r = run_cli(*_ssh(site, "sync", str(toulouse), site.url(), "--name", NAME, "--cache-dir", str(lost)))
    assert r.returncode == 8, r.stdout + r.stderr
    assert "took over writing this source ('replicator promote'" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and site.snapshots() == before, r.stderr

    # Failback: Toulouse fetches what Amiens holds.  Taking the role back before Amiens hands it back: refused.
    back = tmp_path / "toulouse-failback"
    r = run_cli(*_ssh(site, "restore", site.url(), str(back), "-q"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (back / "admission-during-outage.hl7").exists()
    r = run_cli(*_ssh(site, "sync", str(back), site.url(), "--name", NAME, "--reset-lineage"))
    assert r.returncode == 8 and "replicator handback" in r.stderr, r.stdout + r.stderr
    assert site.snapshots() == before

    # Amiens hands the role back; Toulouse takes it explicitly.
    r = run_cli("handback", str(site.repo), "--name", NAME)
    assert r.returncode == 0 and "handed back" in r.stdout, r.stdout + r.stderr
    r = run_cli(*_ssh(site, "sync", str(back), site.url(), "--name", NAME, "--reset-lineage"))
    assert r.returncode == 0, r.stdout + r.stderr

    # Amiens is now the one that must not write.
    r = run_cli("sync", str(amiens), str(site.repo), "--name", NAME)
    assert r.returncode == 8 and "another site writes hospitals now" in r.stderr, r.stdout + r.stderr

    # Both sites hold the same tree, with every write of every period.
    final = tmp_path / "final-at-amiens"
    assert run_cli("restore", str(site.repo), str(final), "-q").returncode == 0
    assert _same_tree(final, back) and _same_tree(final, amiens)


def test_promote_needs_an_existing_source(tmp_path):
    repo = tmp_path / "repo"
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("x")
    r = run_cli("promote", str(data), str(repo), "--name", NAME)
    assert r.returncode == 2 and "nothing to take over" in r.stderr, r.stdout + r.stderr

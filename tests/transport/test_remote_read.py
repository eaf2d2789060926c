"""Reading commands work against the other site: snapshots, restore, verify and diff of ssh://.

Before this, each of them took only a local path ("repository not found" for an ssh:// URL): after a
failover the old primary could not even list what the secondary held, and failback meant re-sending
everything.  Now they open an ordinary Repository over the protocol (GET and ranged GET_RANGE reads),
with the index cached in the cache directory.
"""
from __future__ import annotations

import json
import random

from tests.conftest import run_cli


def _two_snapshots(site, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rnd = random.Random(8)
    (src / "scan.dcm").write_bytes(rnd.randbytes(700_000))
    (src / "lab").mkdir()
    (src / "lab" / "results.csv").write_text("patient;glucose\n1;5.4\n")
    site.pin()
    assert run_cli(*site.sync_args(src)).returncode == 0
    (src / "lab" / "results.csv").write_text("patient;glucose\n1;5.4\n2;6.1\n")
    (src / "admission.hl7").write_text("MSH|^~\\&|ADT\n")
    assert run_cli(*site.sync_args(src)).returncode == 0
    return src


def test_snapshots_restore_verify_and_diff_over_ssh(site, tmp_path):
    src = _two_snapshots(site, tmp_path)
    r = run_cli(*site.remote("snapshots", site.url(), "--json"))
    assert r.returncode == 0, r.stdout + r.stderr
    snaps = json.loads(r.stdout)["snapshots"]
    assert [s["generation"] for s in snaps] == [1, 2]

    out = tmp_path / "out"
    r = run_cli(*site.remote("restore", site.url(), str(out), "--json"), "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    for rel in ("scan.dcm", "lab/results.csv", "admission.hl7"):
        assert (out / rel).read_bytes() == (src / rel).read_bytes()

    r = run_cli(*site.remote("diff", site.url(), snaps[0]["id"][:12], snaps[1]["id"][:12], "--json"))
    assert r.returncode == 0, r.stdout + r.stderr
    changed = json.dumps(json.loads(r.stdout))
    assert "admission.hl7" in changed and "results.csv" in changed and "scan.dcm" not in changed

    for extra in ((), ("--data",)):
        r = run_cli(*site.remote("verify", site.url(), *extra))
        assert r.returncode == 0 and "no problems found" in r.stdout, r.stdout + r.stderr


def test_a_read_only_key_restores_and_the_index_is_cached(site, tmp_path):
    """The restore-side key (r) suffices; the index of the other site is cached in the cache directory."""
    src = _two_snapshots(site, tmp_path)
    cache = tmp_path / "cache"
    env = {"REPLICATOR_CACHE_DIR": str(cache)}
    for attempt in ("first", "second"):
        out = tmp_path / attempt
        r = run_cli(*site.remote("restore", site.url(), str(out), key="reader"), env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert (out / "scan.dcm").read_bytes() == (src / "scan.dcm").read_bytes()
    assert list(cache.glob("*/remote-index.sqlite"))

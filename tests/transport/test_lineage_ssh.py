"""The primary checks its secondary over SSH: the newest snapshot deleted or hidden at the secondary makes
the next sync refuse with exit 8 and one line (0.1.0 reused the generation and exited 0), until the
operator accepts the secondary's history with --reset-lineage."""
from __future__ import annotations

import json
import os

from tests.conftest import run_cli


def test_snapshot_hidden_at_the_secondary_is_refused_until_reset(site, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.hl7").write_text("MSH|1\n")
    site.pin()
    for text in ("MSH|1\n", "MSH|2\n"):
        (src / "a.hl7").write_text(text)
        r = run_cli(*site.sync_args(src, extra=["--json"]))
        assert r.returncode == 0, r.stderr
    newest = json.loads(r.stdout)["snapshot"]
    os.rename(site.repo / "snapshots" / newest, tmp_path / "hidden")  # a secondary that hides its newest
    (src / "a.hl7").write_text("MSH|3\n")
    r = run_cli(*site.sync_args(src))
    assert r.returncode == 8, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "older than generation 2" in r.stderr and newest[:16] in r.stderr
    assert len(site.snapshots()) == 1  # nothing committed on top of the rolled-back history
    r = run_cli(*site.sync_args(src, extra=["--reset-lineage", "--json"]))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["generation"] == 2

"""`make drill` in the suite: the failover runbook end to end (scripts/drill.py --quick)."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_the_drill_passes_and_reports_rpo_and_rto():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "drill.py"), "--quick", "--json"], capture_output=True,
                       text=True, cwd=ROOT, timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout)
    assert result["old_primary_fenced"] and result["secondary_fenced_after_failback"]
    assert result["sites_identical"] and result["every_write_kept"]
    assert result["network"] in ("netns", "loopback")  # netns where the machine allows it (root, ip netns)
    assert result["rto_seconds"] > 0 and result["rpo_seconds"] >= 0 and result["rpo_writes_lost"] >= 0
    # failback in place: Toulouse's own files are kept or seed the new ones; only the difference is fetched
    assert result["failback_kept_files"] > 0

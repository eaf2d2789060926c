"""The README's Quick start runs as written on a machine where nothing exists yet.

It used to write the passphrase into /etc/replicator, which nothing created.  Here its block is run
by bash with its paths moved under a temporary directory (/etc/replicator, /srv/replica, /data,
/mnt/restore) and `replicator` as this checkout's; the optional brackets are dropped and the diff
line, which needs two snapshot ids, is left out.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ROOT


def _quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", text, re.S)
    assert block, "README.md has no Quick start block"
    return block.group(1).splitlines()


def test_the_quick_start_runs_as_written(tmp_path):
    moved = {"/etc/replicator": tmp_path / "etc" / "replicator", "/srv/replica": tmp_path / "srv" / "replica",
             "/mnt/restore": tmp_path / "mnt" / "restore", "/data": tmp_path / "data"}
    data = moved["/data"]
    (data / "ward-3").mkdir(parents=True)
    (data / "ward-3" / "admission.hl7").write_text("MSH|^~\\&|ADT\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "mnt").mkdir()
    (tmp_path / "srv").mkdir()
    lines = []
    for line in _quick_start():
        line = line.split("  #")[0].rstrip()  # comments
        if not line or line.startswith(". ") or " diff " in f" {line} ":
            continue
        line = re.sub(r"\s*\[[^]]*\]", "", line)  # [--snapshot ID] [--path SUBPATH]: optional
        for old, new in moved.items():
            line = re.sub(re.escape(old) + r"(?=[/ ]|$)", str(new), line)
        line = re.sub(r"^replicator ", f"{sys.executable} -m replicator ", line)
        if " -m replicator init " in line:
            line += " --kdf-work 14"  # the cheapest scrypt: the suite's speed, not the README's default
        lines.append(line)
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
    env = {k: v for k, v in os.environ.items() if k != "REPLICATOR_PASSPHRASE"}
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT, env=env,
                       stdin=subprocess.DEVNULL, timeout=300)
    assert r.returncode == 0, f"{script}\n{r.stdout}\n{r.stderr}"
    assert (moved["/mnt/restore"] / "ward-3" / "admission.hl7").read_text() == "MSH|^~\\&|ADT\n"
    assert oct((moved["/etc/replicator"] / "passphrase").stat().st_mode & 0o777) == "0o600"

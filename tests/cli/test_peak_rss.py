"""REPLICATOR_RESET_HWM_AFTER_UNLOCK=1: `sync --json` reports the unlock's peak RSS apart from the rest of the run."""
from __future__ import annotations

import json
import os

import pytest

from tests.conftest import run_cli


def _can_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _can_reset(), reason="/proc/self/clear_refs is not writable here (no Linux procfs)")
def test_sync_json_reports_the_unlock_peak_apart(tmp_path):
    repo, src = tmp_path / "repo", tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"x" * 100_000)
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    r = run_cli("sync", str(src), str(repo), "--name", "t", "--json", "--no-cache",
                env={"REPLICATOR_RESET_HWM_AFTER_UNLOCK": "1"})
    assert r.returncode == 0, r.stderr
    peak = json.loads(r.stdout)["peak_rss_mib"]
    assert peak["unlock"] > 0 and peak["after_unlock"] > 0


def test_no_peak_rss_without_the_variable(tmp_path):
    repo, src = tmp_path / "repo", tmp_path / "src"
    src.mkdir()
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    env = {k: "" for k in ("REPLICATOR_RESET_HWM_AFTER_UNLOCK",) if k in os.environ}
    r = run_cli("sync", str(src), str(repo), "--name", "t", "--json", "--no-cache", env=env)
    assert r.returncode == 0, r.stderr
    assert "peak_rss_mib" not in json.loads(r.stdout)


def _glibc() -> bool:
    import platform

    return platform.libc_ver()[0] == "glibc"


def test_malloc_is_tuned_on_glibc(monkeypatch):
    """A fixed mmap threshold and two arenas (cli/common.py tune_malloc): the heap no longer keeps what 16 MiB
    packs fragmented; a MALLOC_* variable the user set is left alone."""
    import pytest

    from replicator.cli.common import tune_malloc

    if not _glibc():
        pytest.skip("not glibc: mallopt's M_MMAP_THRESHOLD and M_ARENA_MAX are glibc's")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert tune_malloc() == {"mmap_threshold": True, "arena_max": False}

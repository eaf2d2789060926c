"""The daemon spot-checks its destination after a sync (job key spot_check): a sample of packs is read back
and checked with the key; damage found is logged, shown in the status and exported as a metric."""
from __future__ import annotations

from tests.daemon.conftest import init_repo, job_toml, snapshots, status, wait_for, write_config


def test_spot_check_reports_a_damaged_destination(tmp_path, daemons):
    src = tmp_path / "src"
    src.mkdir()
    (src / "scan.dcm").write_bytes(b"\x17" * 400_000 + bytes(range(256)) * 400)
    repo = init_repo(tmp_path / "repo")
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "r.toml", state, job_toml("j", src, repo, spot_check="100%"))
    d = daemons(cfg, tmp_path / "daemon.log").start()
    st = wait_for(lambda: (s := status(state)) and s["jobs"].get("j", {}).get("spot_check") and s, what="spot check")
    assert st["jobs"]["j"]["spot_check"] == "ok", st
    assert d.stop() == 0
    assert len(snapshots(repo)) == 1
    pack = next(p for p in (repo / "data").rglob("*") if p.is_file())
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 1
    pack.write_bytes(bytes(data))
    (src / "new.txt").write_text("admission\n")  # a reason to sync: the check follows the next commit
    d = daemons(cfg, tmp_path / "daemon2.log").start()
    st = wait_for(lambda: (s := status(state)) and s["jobs"].get("j", {}).get("spot_check", "ok") != "ok" and s,
                  what="spot check failure")
    assert "does not match its name" in st["jobs"]["j"]["spot_check"], st
    assert d.stop() == 0
    assert "spot check: pack" in (tmp_path / "daemon2.log").read_text()


def test_bad_spot_check_value_is_a_config_error(tmp_path):
    from tests.conftest import run_cli

    cfg = write_config(tmp_path / "r.toml", tmp_path / "state",
                       job_toml("j", tmp_path, tmp_path / "repo", spot_check="0%"))
    r = run_cli("daemon", "--config", str(cfg), "--check")
    assert r.returncode == 2 and "spot_check" in r.stderr and r.stderr.count("\n") == 1, r.stderr

"""``serve --repo NAME=s3://BUCKET/PREFIX``: a sync over SSH lands in the bucket and restores from it."""
from __future__ import annotations

import json

from tests.conftest import run_cli
from tests.seaweed import cli_env as s3_env
from tests.transport.conftest import SshSite, free_port, make_tree, start_server, stop_server
from tests.treecompare import diff, manifest


def test_serve_an_s3_repository_over_ssh(seaweed, s3_settings, tmp_path, monkeypatch):
    from pathlib import Path

    from replicator.transport.ssh import generate_key

    env = s3_env(seaweed)
    for k, v in env.items():
        monkeypatch.setenv(k, v)  # the serve process reads the S3 settings from its environment
    url = f"s3://{s3_settings.bucket}/{s3_settings.prefix}"
    assert run_cli("init", url, "--kdf-work", "14", "-q").returncode == 0
    keys = {}
    for name in ("host", "writer"):
        keys[name] = tmp_path / f"{name}_key"
        generate_key(str(keys[name]), name)
    pub = Path(str(keys["writer"]) + ".pub").read_text().strip()
    (tmp_path / "authorized_keys").write_text(f'replicator-repos="amiens:rw,tenant:rw" {pub}\n')
    local = tmp_path / "local"
    assert run_cli("init", str(local), "--kdf-work", "14", "-q").returncode == 0
    site = SshSite(tmp=tmp_path, repo=local, port=free_port(), host_key=keys.pop("host"), host_fp="", keys=keys,
                   known_hosts=tmp_path / "known_hosts")
    src = tmp_path / "src"
    make_tree(src, 6, 50_000, seed=3)
    start_server(site, extra_repos=[f"tenant={url}"])
    try:
        site.pin()
        r = run_cli(*site.sync_args(src, name="tenant"))
        assert r.returncode == 0, r.stderr + r.stdout + site.server_log()
    finally:
        stop_server(site)
    snaps = json.loads(run_cli("snapshots", url, "--json").stdout)["snapshots"]
    assert len(snaps) == 1 and snaps[0]["files"] == 6
    assert run_cli("verify", url, "--data").returncode == 0
    out = tmp_path / "out"
    assert run_cli("restore", url, str(out)).returncode == 0
    assert diff(manifest(str(src), owner=False), manifest(str(out), owner=False)) == []

"""A repository in s3://BUCKET/PREFIX on a real SeaweedFS server: the CLI end to end."""
from __future__ import annotations

import json
import os

from tests.seaweed import cli_env as s3_env
from tests.treecompare import diff, manifest


def make_tree(root) -> None:
    (root / "dir" / "deep").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"hello s3\n")
    (root / "dir" / "b.bin").write_bytes(os.urandom(300_000))
    (root / "dir" / "deep" / "c.hl7").write_bytes(b"MSH|^~\\&|" * 5000)


def test_init_sync_restore_verify_on_s3(cli, seaweed, s3_settings, tmp_path):
    url = f"s3://{s3_settings.bucket}/{s3_settings.prefix}"
    env = s3_env(seaweed)
    src = tmp_path / "src"
    make_tree(src)
    r = cli("init", url, env=env)
    assert r.returncode == 0, r.stderr
    r = cli("init", url, env=env)
    assert r.returncode != 0 and "exist" in (r.stderr + r.stdout)  # never over an existing repository
    r = cli("sync", str(src), url, "--name", "amiens", env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    snaps = json.loads(cli("snapshots", url, "--json", env=env).stdout)["snapshots"]
    assert len(snaps) == 1 and snaps[0]["files"] == 3
    r = cli("verify", url, "--data", env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    out = tmp_path / "out"
    r = cli("restore", url, str(out), env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    assert diff(manifest(str(src), owner=False), manifest(str(out), owner=False)) == []
    # The index and lock live in the local cache, not in the bucket.
    from replicator.store.s3 import S3Storage

    names = set(S3Storage(s3_settings).list(""))
    assert "config" in names and any(n.startswith("data/") for n in names)
    assert any(n.startswith("snapshots/") for n in names)
    assert not any("index" in n or "lock" in n for n in names)


def test_bad_s3_url_is_one_line(cli):
    r = cli("snapshots", "s3://X/..")
    assert r.returncode != 0
    msg = (r.stderr + r.stdout).strip()
    assert "bad storage URL" in msg and len(msg.splitlines()) == 1


def test_s3_url_is_storage_not_a_remote():
    from replicator.store.location import parse_s3_url
    from replicator.transport.url import is_remote

    assert not is_remote("s3://bucket/prefix") and is_remote("ssh://u@h/x")
    assert parse_s3_url("s3://bkt/a/b/") == ("bkt", "a/b")
    assert parse_s3_url("s3://bkt") == ("bkt", "")

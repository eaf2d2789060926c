"""Failback: the old primary catches up from the secondary with `restore --delta --delete` over ssh://.

The sites, on loopback: the primary syncs the corpus to the secondary (`replicator serve`); the secondary
restores it as its live tree and is promoted (`replicator promote`); a day of changes is made there
(benchmarks.corpus.mutate, the suite's "next day": edits, appends, SQL rows changed and inserted, new
studies, deletes, a renamed directory) and synced into its own repository, as the promoted writer does.
Then the failback, measured: the old primary's stale tree restored from ssh:// with --delta --delete.

Recorded in extra_info, all from the same run: the failback's bytes on the wire (the protocol
session's, from `restore --json`: the index catch-up of a first contact, trees and chunks; and again
with that index cached, onto another copy of the stale tree), its chunk bytes fetched and taken from
seeds; the day's delta as new or changed file content (by content, so a moved file does not
count), as the sync's new chunk bytes, and as the bytes that sync added to the repository (what a
sync over the WAN would send); and `rsync -a --delete` and `-az --delete` of the secondary's tree back
onto copies of the stale tree, over a private OpenSSH server when there is one, else in rsync's local
mode with --no-whole-file (bytes from --stats).  The ratios are replicator / the others.  rsync that
is not installed is named in extra_info and left out.  Nothing here asserts on timings.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from benchmarks import corpus
from benchmarks.conftest import dir_bytes, fresh_copy, served_site
from tests.conftest import run_cli
from tests.transport.conftest import stop_server


def _contents(root: Path) -> dict[str, bytes]:
    """Relative path -> SHA-256 of every regular file under ``root``."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                out[os.path.relpath(p, root)] = h.digest()
    return out


def _cli(*args: str, env: dict) -> dict:
    r = run_cli(*args, "--json", env=env)
    assert r.returncode == 0, r.stdout[-500:] + r.stderr[-500:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def failback(tmp_path_factory, corpus_day1):
    """The two sites after a day at the secondary: everything but the failback itself."""
    tmp = tmp_path_factory.mktemp("failback")
    site = served_site(tmp, "secondary-repo")
    repo = site.repo
    try:
        primary_env = {"REPLICATOR_CACHE_DIR": str(tmp / "cache-primary")}
        secondary_env = {"REPLICATOR_CACHE_DIR": str(tmp / "cache-secondary")}
        stale = fresh_copy(corpus_day1[0], tmp / "primary")  # the old primary's tree, as it was when it died
        _cli(*site.sync_args(stale), env=primary_env)
        live = tmp / "secondary-live"
        _cli("restore", str(repo), str(live), env=secondary_env)
        _cli("promote", str(live), str(repo), "--name", "s", env=secondary_env)
        before = _contents(live)
        stats = corpus.mutate(live, rate=0.05, seed=2)
        repo_before = dir_bytes(repo)
        day = _cli("sync", str(live), str(repo), "--name", "s", env=secondary_env)
        old = set(before.values())
        after = _contents(live)
        changed = sum((live / rel).stat().st_size for rel, digest in after.items() if digest not in old)
        yield {"site": site, "stale": stale, "live": live, "primary_env": primary_env, "mutation": stats.summary(),
               "day_changed_content_bytes": changed, "day_sync_bytes_new": day["bytes_new"],
               "day_sync_repo_bytes_added": dir_bytes(repo) - repo_before, "after": after}
    finally:
        stop_server(site)


def _stat_bytes(out: str, what: str) -> int:
    m = re.search(rf"Total bytes {what}: ([\d,.]+)", out)
    return int(m.group(1).replace(",", "").replace(".", "")) if m else -1


def _rsync_back(ssh: str | None, live: Path, dest: Path, compress: bool) -> dict:
    """rsync of the secondary's tree onto ``dest`` (a copy of the stale tree), pulled as the old primary would."""
    flags = ["-az" if compress else "-a", "--delete", "--stats"]
    if ssh is None:  # local mode: rsync copies whole files unless told otherwise
        cmd = ["rsync", *flags, "--no-whole-file", f"{live}/", f"{dest}/"]
    else:
        cmd = ["rsync", *flags, "-e", ssh, f"{os.environ.get('USER', 'root')}@127.0.0.1:{live}/", f"{dest}/"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-500:]
    return {"received": _stat_bytes(r.stdout, "received"), "sent": _stat_bytes(r.stdout, "sent"),
            "wall_s": round(wall, 3)}


def _peers(request, live: Path, stale: Path, scratch: Path) -> dict:
    if not shutil.which("rsync"):
        return {"rsync_skipped": "rsync is not installed (apt-get install rsync)"}
    try:
        ssh, _tmp = request.getfixturevalue("sshd")
        mode = "ssh"
    except pytest.skip.Exception as exc:
        ssh, mode = None, f"local (no OpenSSH server: {exc})"
    out: dict = {"rsync_mode": mode}
    for name, compress in (("rsync_a", False), ("rsync_az", True)):
        dest = fresh_copy(stale, scratch / name)
        got = _rsync_back(ssh, live, dest, compress)
        out.update({f"{name}_bytes_received": got["received"], f"{name}_bytes_sent": got["sent"],
                    f"{name}_wall_s": got["wall_s"]})
        shutil.rmtree(dest)
    return out


@pytest.mark.benchmark(group="failback")
def test_failback_delta_over_ssh(benchmark, failback, request, tmp_path):
    site, env = failback["site"], failback["primary_env"]
    peers = _peers(request, failback["live"], failback["stale"], tmp_path)
    target = fresh_copy(failback["stale"], tmp_path / "old-primary")
    remote = [site.url(), "--identity", str(site.keys["writer"]), "--known-hosts", str(site.known_hosts)]
    out: dict = {}

    def run() -> None:
        t0 = time.perf_counter()
        out.update(_cli("restore", remote[0], str(target), *remote[1:], "--delta", "--delete", env=env))
        out["wall"] = time.perf_counter() - t0

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert not out["errors"] and not out["refused"], (out["errors"][:3], out["refused"][:3])
    assert _contents(target) == failback["after"]  # the failback is exact, or its bytes mean nothing
    wire = out["wire_bytes_received"]
    info = {k: failback[k] for k in ("day_changed_content_bytes", "day_sync_bytes_new", "day_sync_repo_bytes_added",
                                     "mutation")}
    info.update(wall_s=round(out["wall"], 3), wire_bytes_received=wire, wire_bytes_sent=out["wire_bytes_sent"],
                fetched_bytes=out["fetched_bytes"], seeded_bytes=out["seeded_bytes"], kept_files=out["kept_files"],
                deleted=out["deleted"], scanned_bytes=out["scanned_bytes"], **peers)

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 3) if b > 0 else None

    info.update(ratio_fetched_to_changed_content=ratio(out["fetched_bytes"], failback["day_changed_content_bytes"]),
                ratio_fetched_to_day_new_chunks=ratio(out["fetched_bytes"], failback["day_sync_bytes_new"]),
                ratio_wire_to_changed_content=ratio(wire, failback["day_changed_content_bytes"]),
                ratio_wire_to_day_sync_stored=ratio(wire, failback["day_sync_repo_bytes_added"]))
    for name in ("rsync_a", "rsync_az"):
        if f"{name}_bytes_received" in peers:
            info[f"ratio_wire_to_{name}"] = ratio(wire, peers[f"{name}_bytes_received"])
    # The same failback again onto another stale copy, the index of the secondary's repository now cached
    # here: what is left is trees, snapshots and chunks, without the pack tables of the first contact.
    again = fresh_copy(failback["stale"], tmp_path / "old-primary-again")
    warm = _cli("restore", remote[0], str(again), *remote[1:], "--delta", "--delete", env=env)
    info.update(warm_index_wire_bytes_received=warm["wire_bytes_received"],
                ratio_warm_wire_to_day_sync_stored=ratio(warm["wire_bytes_received"],
                                                         failback["day_sync_repo_bytes_added"]))
    benchmark.extra_info.update(info)

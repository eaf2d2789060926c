"""The receiver's metrics endpoint (``serve`` with ``metrics_listen``): per-repository series scraped over HTTP.

A real ``replicator serve --config`` process (tests/transport/test_tenants.py's Receiver) and real
``replicator sync`` senders; the values are checked against the repositories on disk.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import run_cli
from tests.transport.test_tenants import MiB, Receiver, _keys_file, _src


@pytest.fixture
def receiver(tmp_path):
    r = Receiver(tmp_path)
    yield r
    r.stop()


def _samples(text: str) -> dict[tuple, float]:
    """``{(name, ((label, value), ...)): value}`` of every sample in the exposition ``text``."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _get(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _packs_on_disk(repo) -> list:
    return [p for p in (repo / "data").rglob("*") if p.is_file()] if (repo / "data").exists() else []


def _scrape_until(receiver: Receiver, done, deadline: float = 30) -> dict:
    """Scrape until ``done(samples)`` (a session's end is counted just after the sender exits)."""
    end = time.monotonic() + deadline
    while True:
        samples = _samples(receiver.scrape())
        if done(samples) or time.monotonic() > end:
            return samples
        time.sleep(0.05)


def test_scrape_shows_each_repositorys_usage_commits_sessions_and_refusals(receiver, tmp_path):
    a, b = receiver.repo("chu-a"), receiver.repo("chu-b")  # each its own (a copy would share chu-a's state cache)
    c = receiver.repo("chu-c", template=receiver.tmp / "repos" / "chu-a")
    receiver.write_config([
        {"name": "chu-a", "url": a, "authorized_keys": _keys_file(receiver, "chu-a", "a"), "quota": "100MiB"},
        {"name": "chu-b", "url": b, "authorized_keys": _keys_file(receiver, "chu-b", "b"), "quota": 1000},
        {"name": "chu-c", "url": c}])
    receiver.start()
    log = receiver.wait_log("listening on")
    assert f"metrics 127.0.0.1:{receiver.metrics_port}" in log
    before = time.time()
    r = run_cli(*receiver.sync_args(_src(tmp_path, "a", n=3), "chu-a", "a"))
    assert r.returncode == 0, r.stderr
    after = time.time()
    r = run_cli(*receiver.sync_args(_src(tmp_path, "b", n=1, size=MiB, seed=3), "chu-b", "b"))
    assert r.returncode == 3 and "quota exceeded" in r.stderr, r.stderr
    r = run_cli(*receiver.sync_args(_src(tmp_path, "a"), "nowhere", "a"))  # names no served repository
    assert r.returncode == 3, r.stderr

    s = _scrape_until(receiver, lambda s: all(_get(s, "replicator_repository_sessions_open", repository=n) == 0
                                              for n in ("chu-a", "chu-b", "chu-c")))
    packs = _packs_on_disk(a)
    assert packs
    assert _get(s, "replicator_repository_bytes", repository="chu-a") == sum(p.stat().st_size for p in packs) > 0
    assert _get(s, "replicator_repository_packs", repository="chu-a") == len(packs)
    assert _get(s, "replicator_repository_bytes", repository="chu-b") == 0
    assert _get(s, "replicator_repository_bytes", repository="chu-c") == 0
    assert _get(s, "replicator_repository_quota_bytes", repository="chu-b") == 1000
    assert _get(s, "replicator_repository_quota_bytes", repository="chu-a") == 100 * MiB
    (tag,) = os.listdir(a / "heads")  # the source's tag, the only head of chu-a
    last = _get(s, "replicator_repository_last_commit_timestamp_seconds", repository="chu-a", source=tag)
    assert last is not None and before <= last <= after
    commits = [k for k in s if k[0] == "replicator_repository_last_commit_timestamp_seconds"]
    assert len(commits) == 1  # chu-b and chu-c committed nothing
    assert _get(s, "replicator_repository_refused_total", repository="chu-b", reason="quota_exceeded") == 1
    assert _get(s, "replicator_repository_refused_total", repository="", reason="not_allowed") == 1
    refused = {k: v for k, v in s.items() if k[0] == "replicator_repository_refused_total"}
    assert len(refused) == 2, refused
    for name in ("chu-a", "chu-b", "chu-c"):
        assert _get(s, "replicator_repository_sessions_open", repository=name) == 0
    assert _get(s, "replicator_repository_sessions_opened_total", repository="chu-a") >= 1
    assert _get(s, "replicator_repository_sessions_opened_total", repository="chu-c") == 0
    assert _get(s, "replicator_serve_repositories") == 3
    assert any(k[0] == "replicator_build_info" for k in s)


def test_metrics_listen_that_cannot_be_bound_is_one_line(receiver):
    a = receiver.repo("chu-a")
    receiver.write_config([{"name": "chu-a", "url": a, "authorized_keys": _keys_file(receiver, "chu-a", "a")}])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", receiver.metrics_port))
        taken.listen()
        r = run_cli("serve", "--config", str(receiver.config), passphrase=None, timeout=60)
    assert r.returncode != 0
    line = r.stderr.strip()
    assert "\n" not in line, line
    assert f"127.0.0.1:{receiver.metrics_port} (metrics_listen)" in line and "address already in use" in line, line


def test_metrics_listen_flag_wins_and_off_serves_none(receiver):
    a = receiver.repo("chu-a")
    receiver.write_config([{"name": "chu-a", "url": a, "authorized_keys": _keys_file(receiver, "chu-a", "a")}])
    r = run_cli("serve", "--config", str(receiver.config), "--metrics-listen", "nowhere", passphrase=None, timeout=60)
    assert r.returncode == 2 and "--metrics-listen" in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    r = run_cli("serve", "--stdio", "--repo", f"chu-a={a}", "--metrics-listen", f"127.0.0.1:{receiver.metrics_port}",
                passphrase=None, timeout=60)  # one process per session: nothing to scrape between sessions
    assert r.returncode == 2 and "--metrics-listen needs --listen" in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0
    receiver.start("--metrics-listen", "off")
    assert "metrics off" in receiver.wait_log("listening on")
    with pytest.raises(OSError):
        receiver.scrape()


def test_five_hundred_tenants_one_scrape_after_a_reload(receiver, tmp_path):
    """500 repositories (copies of one: ``init`` 500 times would take minutes), a SIGHUP reload adding
    some, syncs into a few, then one scrape with every repository's series."""
    template = receiver.repo("template")
    names = [f"t{i:03d}" for i in range(500)]
    for name in names:
        shutil.copytree(template, receiver.tmp / "repos" / name)
    keys = receiver.tmp / "authorized_keys"
    keys.write_text(f'replicator-repos="t000:rw,t250:rw,t499:rw" {receiver.pub("a")}')
    repos = [{"name": n, "url": receiver.tmp / "repos" / n} for n in names]
    receiver.write_config(repos[:490], extra=f'authorized_keys = "{keys}"')
    receiver.start()
    receiver.write_config(repos, extra=f'authorized_keys = "{keys}"')
    receiver.proc.send_signal(signal.SIGHUP)
    assert "serving 500 repositories (10 added, 0 removed)" in receiver.wait_log("reloaded")
    for i, name in enumerate(("t000", "t250", "t499")):
        # The copies share one repository id, so each source has its own name (and state cache).
        r = run_cli(*receiver.sync_args(_src(tmp_path, name, n=1, seed=10 + i), name, "a", "--name", name))
        assert r.returncode == 0, r.stderr
    start = time.perf_counter()
    text = receiver.scrape()
    took = time.perf_counter() - start
    s = _samples(text)
    by_repo = {dict(k[1])["repository"] for k in s if k[0] == "replicator_repository_bytes"}
    assert by_repo == set(names)
    for name in ("t000", "t250", "t499"):
        packs = _packs_on_disk(receiver.tmp / "repos" / name)
        assert _get(s, "replicator_repository_bytes", repository=name) == sum(p.stat().st_size for p in packs) > 0
    assert _get(s, "replicator_repository_bytes", repository="t001") == 0
    assert _get(s, "replicator_serve_repositories") == 500
    print(f"\n500-tenant scrape: {took * 1000:.1f} ms, {len(text)} bytes, {len(s)} samples")

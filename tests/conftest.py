"""Shared fixtures: a hermetic environment for every test.

No test sees the developer's REPLICATOR_* variables or cache; each gets its
own cache directory.  The repository root is importable so tests can use
benchmarks.corpus (the deterministic sample generator).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PASSPHRASE = "correct horse battery staple"


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch, tmp_path_factory):
    for name in list(os.environ):
        # A systemd credential or notify socket of the machine running the suite must not leak in either.
        if name.startswith("REPLICATOR_") or name in ("CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("REPLICATOR_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def run_cli(*args: str, passphrase: str | None = PASSPHRASE, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m replicator`` as a real process, as an operator would."""
    full_env = dict(os.environ)
    if passphrase is not None:
        full_env["REPLICATOR_PASSPHRASE"] = passphrase
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "replicator", *args], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def cli():
    return run_cli


def sync_repo(src: str, repo, source: str, *, state=None, **options):
    """Sync ``src`` into an open, locked Repository through its one writer, as ``replicator sync`` does locally.

    ``state``: an open state cache (else none); other keywords are SyncOptions fields.
    """
    from replicator.sync.engine import SyncRun
    from replicator.sync.options import SyncOptions

    with repo.writer() as writer:
        return SyncRun(src, writer, SyncOptions(source, use_state=state is not None, **options), state=state).run()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """One SeaweedFS server (`weed server -s3` on loopback) and one bucket for the session; tests take a prefix each."""
    from tests.seaweed import running

    with running(str(tmp_path_factory.mktemp("seaweed"))) as server:
        yield server


@pytest.fixture
def s3_settings(seaweed):
    """Settings for a fresh prefix in the session's bucket on SeaweedFS.

    A prefix, not a bucket, per test: SeaweedFS gives every bucket its own collection of volumes, which
    takes a second to allocate and soon exhausts the volume limit of a small test server."""
    from tests.seaweed import fresh_prefix, settings

    return settings(seaweed, seaweed.bucket, fresh_prefix())

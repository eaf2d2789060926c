"""Fixtures of the sync tests: a fresh repository with small chunks, and an empty source directory."""
from __future__ import annotations

import pytest

from replicator.core.params import ChunkerParams
from replicator.repo.repository import Repository
from tests.conftest import run_cli

SMALL = ChunkerParams(min_size=4096, avg_size=16384, max_size=65536)


@pytest.fixture
def repo(tmp_path):
    r = Repository.init(str(tmp_path / "repo"), b"pw", log2n=14, params=SMALL)
    yield r
    r.close()


@pytest.fixture
def src(tmp_path):
    s = tmp_path / "src"
    s.mkdir()
    return s


@pytest.fixture
def cli_repo(tmp_path):
    """An empty repository made by the CLI (the cheapest scrypt)."""
    path = tmp_path / "clirepo"
    r = run_cli("init", str(path), "--kdf-work", "14", "-q")
    assert r.returncode == 0, r.stderr
    return path

"""Fixtures shared by the repository tests."""
from __future__ import annotations

import pytest

from replicator import constants as C
from replicator.repo.repository import Repository
from tests.conformance.test_sink import PW


@pytest.fixture
def path(tmp_path):
    """A new, empty repository directory (passphrase ``tests.conformance.test_sink.PW``, the cheapest KDF)."""
    p = tmp_path / "repo"
    Repository.init(str(p), PW, log2n=C.SCRYPT_LOG2N_MIN).close()
    return p

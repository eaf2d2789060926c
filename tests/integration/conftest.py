"""Fixtures of the end-to-end tests: the secondary site is the transport tests' real `replicator serve` on loopback."""
from tests.transport.conftest import site  # noqa: F401 - re-exported as a fixture

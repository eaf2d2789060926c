"""Open what a sync writes to: a local repository path or ssh://USER@HOST:PORT/NAME.

The one place where ``replicator sync`` and the daemon turn a destination
string into a sync.Destination, so both behave the same.
"""
from __future__ import annotations

from replicator.errors import UsageError
from replicator.repo.repository import Repository


def is_remote(target: str) -> bool:
    return target.startswith("ssh://")


def open_destination(target: str, passphrase: bytes, *, cache_dir: str, identity: str | None = None,
                     known_hosts: str | None = None, accept_host_key: str | None = None,
                     streams: int | None = None, bwlimit: int | None = None):
    """:returns: a Repository opened with its exclusive lock, or a connected RemoteDestination.

    :raises UsageError: an ssh:// target without identity or known_hosts.
    """
    if not is_remote(target):
        return Repository.open(target, passphrase, exclusive=True)
    from replicator.transport.client import RemoteDestination, parse_url

    url = parse_url(target)
    if not identity or not known_hosts:
        raise UsageError("an ssh:// repository needs an identity (--identity FILE) and known hosts (--known-hosts FILE)")
    return RemoteDestination(url, passphrase, identity=identity, known_hosts=known_hosts,
                             accept_host_key=accept_host_key, cache_dir=cache_dir, window=streams, bwlimit=bwlimit)

"""Open what a sync writes to: the one key-holding Writer, over a local or a remote sink.

The one place where ``replicator sync`` and the daemon turn a destination
string (a repository path or ``ssh://USER@HOST:PORT/NAME``) into a Writer,
so both write the same objects the same way.
"""
from __future__ import annotations

from replicator.errors import UsageError
from replicator.repo.keyring import Keyring
from replicator.repo.repository import Repository
from replicator.repo.writer import Writer
from replicator.transport.url import is_remote, parse_url


def open_destination(target: str, passphrase: bytes, *, cache_dir: str, identity: str | None = None,
                     known_hosts: str | None = None, accept_host_key: str | None = None,
                     streams: int | None = None, bwlimit: int | None = None) -> Writer:
    """:returns: a Writer over a locked local repository, or over a connected RemoteSink.

    :raises UsageError: an ssh:// target without identity or known_hosts.
    """
    if not is_remote(target):
        return Repository.open(target, passphrase, exclusive=True).writer(owned=True)
    from replicator.transport.client import RemoteSink  # asyncssh only when a remote is asked for

    url = parse_url(target)
    if not identity or not known_hosts:
        raise UsageError("an ssh:// repository needs an identity (--identity FILE) and known hosts (--known-hosts FILE)")
    sink = RemoteSink(url, identity=identity, known_hosts=known_hosts, accept_host_key=accept_host_key,
                      cache_dir=cache_dir, window=streams, bwlimit=bwlimit)
    try:
        return Writer(Keyring.unlock(*sink.describe(), passphrase, sink.location), sink)
    except BaseException:
        sink.close()
        raise

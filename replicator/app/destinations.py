"""Open what a sync writes to: the one key-holding Writer, over a local or a remote sink.

The one place where ``replicator sync`` and the daemon turn a destination
string (a repository path or ``ssh://USER@HOST:PORT/NAME``) into a Writer,
so both write the same objects the same way.
"""
from __future__ import annotations

from replicator.errors import UsageError
from replicator.repo.keyring import Keyring
from replicator.repo.lineage import LineageMemory, lineage_path
from replicator.repo.repository import Repository
from replicator.repo.upgrade import UpgradeReport, sign_declarations
from replicator.repo.writer import Writer
from replicator.transport.url import is_remote, parse_url


def open_destination(target: str, passphrase: bytes, *, cache_dir: str, identity: str | None = None,
                     known_hosts: str | None = None, accept_host_key: str | None = None,
                     streams: int | None = None, bwlimit: int | None = None) -> Writer:
    """:returns: a Writer over a locked local repository, or over a connected RemoteSink, that
    remembers in ``cache_dir`` what it committed there (repo/lineage.py).

    :raises UsageError: an ssh:// target without identity or known_hosts.
    """
    if not is_remote(target):
        repo = Repository.open(target, passphrase, exclusive=True)
        try:
            return repo.writer(owned=True, lineage=LineageMemory(lineage_path(cache_dir, repo.id, repo.location),
                                                                 repo.location))
        except BaseException:
            repo.close()
            raise
    from replicator.transport.client import RemoteSink  # asyncssh only when a remote is asked for

    url = parse_url(target)
    if not identity or not known_hosts:
        raise UsageError("an ssh:// repository needs an identity (--identity FILE) and known hosts (--known-hosts FILE)")
    sink = RemoteSink(url, identity=identity, known_hosts=known_hosts, accept_host_key=accept_host_key,
                      cache_dir=cache_dir, window=streams, bwlimit=bwlimit)
    try:
        keyring = Keyring.unlock(*sink.describe(), passphrase, sink.location)
        writer = Writer(keyring, sink, lineage=LineageMemory(lineage_path(cache_dir, keyring.id, sink.location),
                                                                sink.location))
        if sink.legacy_packs:
            # Lists the other site kept from before proofs existed (or forged): sign the true ones, read
            # from each pack's own table by ranges, so their chunks are not sent again.
            report = writer.upgraded = sign_declarations(keyring, sink, [], UpgradeReport())
            sink.warnings.append(f"{sink.location}: signed {report.id_lists_signed} id list(s) written before 0.3")
            sink.warnings.extend(f"{sink.location}: {p}" for p in report.problems)
        return writer
    except BaseException:
        sink.close()
        raise


def open_remote_repository(target: str, passphrase: bytes, *, cache_dir: str, identity: str | None,
                           known_hosts: str | None, accept_host_key: str | None = None) -> Repository:
    """A read-only Repository of the other site over one protocol session (transport/remote_storage.py),
    with its index cached in ``cache_dir``: restore, verify, diff and snapshots read it as a local one.

    :raises UsageError: no identity or known_hosts.
    """
    import os

    from replicator.transport import protocol as P
    from replicator.transport.client import RemoteSink
    from replicator.transport.remote_storage import RemoteStorage

    if not identity or not known_hosts:
        raise UsageError("an ssh:// repository needs an identity (--identity FILE) and known hosts (--known-hosts FILE)")
    sink = RemoteSink(parse_url(target), identity=identity, known_hosts=known_hosts, accept_host_key=accept_host_key,
                      mode=P.MODE_READ)
    storage = RemoteStorage(sink)
    try:
        keyring = Keyring.unlock(*sink.describe(), passphrase, sink.location)
        index_dir = os.path.join(cache_dir, keyring.id)
        os.makedirs(index_dir, exist_ok=True)
        return Repository(storage, keyring, exclusive=False, index_path=os.path.join(index_dir, "remote-index.sqlite"))
    except BaseException:
        storage.close()
        raise

"""Open what a sync writes to: the one key-holding Writer, over a local or a remote sink.

The one place where ``replicator sync`` and the daemon turn a destination
string (a repository path or ``ssh://USER@HOST:PORT/NAME``) into a Writer,
so both write the same objects the same way.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from replicator.errors import UsageError
from replicator.repo.keyring import Keyring
from replicator.repo.lineage import LineageMemory, lineage_path
from replicator.repo.local_sink import LocalSink
from replicator.repo.repository import Repository
from replicator.repo.upgrade import UpgradeReport, sign_declarations
from replicator.repo.writer import Writer
from replicator.transport.url import is_remote, parse_url

if TYPE_CHECKING:
    from replicator.transport.client import RemoteSink


def open_destination(target: str, passphrase: bytes, *, cache_dir: str, identity: str | None = None,
                     known_hosts: str | None = None, accept_host_key: str | None = None,
                     streams: int | None = None, bwlimit: int | None = None) -> Writer:
    """:returns: a Writer over a locked local repository, or over a connected RemoteSink, that
    remembers in ``cache_dir`` what it committed there (repo/lineage.py).

    :raises UsageError: an ssh:// target without identity or known_hosts.
    """
    if not is_remote(target):
        repo = Repository.open(target, passphrase, exclusive=True, shared=True, role="sync")  # writers share
        try:
            return repo.writer(owned=True, lineage=LineageMemory(lineage_path(cache_dir, repo.id, repo.location),
                                                                 repo.location))
        except BaseException:
            repo.close()
            raise
    sink = open_remote_sink(target, identity=identity, known_hosts=known_hosts, accept_host_key=accept_host_key,
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


def open_remote_sink(target: str, *, identity: str | None, known_hosts: str | None, **options) -> RemoteSink:
    """A connected ``RemoteSink`` of ``ssh://USER@HOST:PORT/NAME`` (``options``: its keyword arguments:
    ``mode``, ``cache_dir``, ``accept_host_key``, ...).  It needs no passphrase: what it carries is sealed.

    :raises UsageError: no identity or known_hosts, or a bad URL.
    """
    from replicator.transport.client import RemoteSink  # asyncssh only when a remote is asked for

    url = parse_url(target)
    if not identity or not known_hosts:
        raise UsageError("an ssh:// repository needs an identity (--identity FILE) and known hosts (--known-hosts FILE)")
    return RemoteSink(url, identity=identity, known_hosts=known_hosts, **options)


class _Scratch:
    """A private directory removed when the dry run's writer is closed."""

    def __init__(self) -> None:
        import tempfile

        self.path = tempfile.mkdtemp(prefix="replicator-dry-run-")

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)


def _copy_id_lists(cache_dir: str, scratch: str, repo_id: str) -> None:
    """Give ``scratch`` the id lists cached for ``repo_id`` (hard links where possible): the remote
    sink reads, drops and adds lists there, never in the real cache."""
    import shutil

    real = os.path.join(cache_dir, repo_id, "remote-ids")
    if not os.path.isdir(real):
        return
    copy = os.path.join(scratch, repo_id, "remote-ids")
    os.makedirs(copy)
    for name in os.listdir(real):
        src, dst = os.path.join(real, name), os.path.join(copy, name)
        try:
            os.link(src, dst)  # a replace or unlink in the copy never touches the cached file
        except OSError:
            try:
                shutil.copyfile(src, dst)
            except OSError:
                continue  # fetched again, as an uncached list is


def open_dry_run(target: str, passphrase: bytes, *, cache_dir: str, identity: str | None = None,
                 known_hosts: str | None = None) -> Writer:
    """A Writer over a read-only sink for ``sync --dry-run``: it answers which chunk ids the destination
    holds and lists its snapshots; nothing can be stored or committed through it, and nothing is
    written anywhere.

    Local: the repository's id lists are read without its lock; its index is not opened, its
    temporaries are not cleaned, nothing is upgraded.  ssh://: a session opened for read (it takes
    no lock at the other site; the key needs ``r``), over a private copy of the cached id lists.
    The host key must be pinned already.  No lineage is checked (nothing is committed).

    :raises UsageError: an ssh:// target without identity or known_hosts.
    """
    if not is_remote(target):
        sink = LocalSink.open(target, writable=False, untrusted=False)
        try:
            keyring = Keyring.unlock(*sink.describe(), passphrase, sink.location)
            return Writer(keyring, sink, owned=[sink.storage])
        except BaseException:
            sink.storage.close()
            raise
    from replicator.transport import protocol as P

    if not identity or not known_hosts:  # before the scratch directory exists
        raise UsageError("an ssh:// repository needs an identity (--identity FILE) and known hosts (--known-hosts FILE)")
    scratch = _Scratch()
    try:
        remote = open_remote_sink(target, identity=identity, known_hosts=known_hosts, cache_dir=scratch.path,
                                  mode=P.MODE_READ)
    except BaseException:
        scratch.close()
        raise
    try:
        keyring = Keyring.unlock(*remote.describe(), passphrase, remote.location)
        _copy_id_lists(cache_dir, scratch.path, keyring.id)
        return Writer(keyring, remote, owned=[scratch])  # trust() loads the lists here
    except BaseException:
        remote.close()
        scratch.close()
        raise


def open_remote_repository(target: str, passphrase: bytes, *, cache_dir: str, identity: str | None,
                           known_hosts: str | None, accept_host_key: str | None = None,
                           write: bool = False) -> Repository:
    """A Repository of the other site over one protocol session (transport/remote_storage.py), with its
    index cached in ``cache_dir``: restore, verify, diff and snapshots read it as a local one.
    ``write``: a write session (the key needs ``w``; the other site holds its lock until it ends), through
    which ``forget`` deletes snapshots on the key holder's proofs; nothing else is written through it.

    :raises UsageError: no identity or known_hosts.
    """
    from replicator.transport import protocol as P
    from replicator.transport.remote_storage import RemoteStorage

    sink = open_remote_sink(target, identity=identity, known_hosts=known_hosts, accept_host_key=accept_host_key,
                            mode=P.MODE_WRITE if write else P.MODE_READ)
    storage = RemoteStorage(sink)
    try:
        keyring = Keyring.unlock(*sink.describe(), passphrase, sink.location)
        index_dir = os.path.join(cache_dir, keyring.id)
        os.makedirs(index_dir, exist_ok=True)
        return Repository(storage, keyring, exclusive=False, index_path=os.path.join(index_dir, "remote-index.sqlite"))
    except BaseException:
        storage.close()
        raise

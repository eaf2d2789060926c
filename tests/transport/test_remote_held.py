"""The sender's copy of the receiver's held ids (RemoteSink): an IdSet whose runs live in the sender's cache
dir, private to the process, removed at close; a crashed sender's leftovers are swept by the next one."""
from __future__ import annotations

import os

from replicator.store.idset import IdSet
from replicator.transport import client as CL
from replicator.transport import ssh
from replicator.transport.url import parse_url
from tests.transport.test_lying_receiver import VERIFIER, honest, lying_receiver

DEAD_PID = 2**22 + 1  # above Linux's largest pid_max: no such process


def test_held_ids_live_in_the_cache_dir_and_go_at_close(monkeypatch, tmp_path):
    answer, lists = honest(20, 40)
    monkeypatch.setattr(ssh, "connect", lying_receiver(answer))
    leftover = tmp_path / ("42" * 32) / "remote-idset" / f"idset-{DEAD_PID}-abc"
    leftover.mkdir(parents=True)
    (leftover / "run-1-1.ids").write_bytes(b"junk")
    sink = CL.RemoteSink(parse_url("ssh://rep@liar:22/amiens"), identity="-", known_hosts="-",
                         cache_dir=str(tmp_path))
    try:
        sink.trust(VERIFIER)
        held = sink._held
        assert isinstance(held, IdSet) and len(held) == 20 * 40
        assert os.path.dirname(held.directory) == str(tmp_path / ("42" * 32) / "remote-idset")
        assert not leftover.exists()  # its process is gone
        assert all(sink.has(data[72:104]) for data in lists.values())
        where = held.directory
    finally:
        sink.close()
    assert not os.path.exists(where)


def test_senders_sharing_a_cache_leave_each_other_s_lists_alone(monkeypatch, tmp_path):
    """Senders of one host share the cache dir (parallel syncs of many sources): a list another one is
    writing (its temporary) is left to it, a crashed sender's temporary is removed, and a list another
    sender removed between the listing and the read is fetched, not an error."""
    answer, lists = honest(3, 10)
    monkeypatch.setattr(ssh, "connect", lying_receiver(answer))
    cache = tmp_path / ("42" * 32) / "remote-ids"
    cache.mkdir(parents=True)
    writing = cache / f".tmp-{os.getpid()}-aaaa"  # a live process writing a list
    writing.write_bytes(b"half a list")
    crashed = cache / f".tmp-{DEAD_PID}-bbbb"
    crashed.write_bytes(b"half a list")
    gone = sorted(lists)[0][len("ids/"):]  # listed by the directory read, removed before it is opened
    real_listdir = os.listdir
    monkeypatch.setattr(CL.os, "listdir", lambda p: real_listdir(p) + ([gone] if str(p) == str(cache) else []))
    sink = CL.RemoteSink(parse_url("ssh://rep@liar:22/amiens"), identity="-", known_hosts="-",
                         cache_dir=str(tmp_path))
    try:
        sink.trust(VERIFIER)
        assert all(sink.has(data[72:104]) for data in lists.values())
        assert sink.stats["id_lists_fetched"] == 3
    finally:
        sink.close()
    assert writing.exists() and not crashed.exists()

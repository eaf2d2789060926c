"""The primary checks its secondary: a destination whose latest snapshot of a source is older than, missing,
or not a descendant of what this site committed there last is refused (exit 8) until the operator resets the
memory; a commit the destination acknowledges but does not hold is caught by the read-back.

Each case here ended in exit 0 on release 0.1.0 (the next sync reused the generation, or built on the fork)."""
from __future__ import annotations

import os
import socket

import pytest

from replicator import constants as C
from replicator.core.compress import compress
from replicator.errors import HistoryDiverged
from replicator.format.entry import KIND_FILE, Entry
from replicator.format.tree import TreeItem
from replicator.repo.lineage import LineageMemory, lineage_path
from replicator.repo.local_sink import LocalSink
from replicator.repo.repository import Repository
from replicator.repo.writer import Writer

PW = b"pw"


@pytest.fixture
def repo_path(tmp_path):
    path = tmp_path / "secondary"
    Repository.init(str(path), PW, log2n=C.SCRYPT_LOG2N_MIN).close()
    return path


def commit(repo_path, memory_dir, content: bytes, source: str = "ward", *, lineage: bool = True, sink_cls=None):
    """One sync's worth: a chunk, a tree, a commit, through the real writer over a local sink."""
    with Repository.open(str(repo_path), PW, exclusive=True) as repo:
        memory = LineageMemory(lineage_path(str(memory_dir), repo.id, repo.location), repo.location) if lineage else None
        sink = (sink_cls or LocalSink)(repo.storage)
        with Writer(repo.keyring, sink, lineage=memory) as w:
            cid = w.chunk_hasher(content)
            w.store_blob(C.BLOB_DATA, cid, *compress(content), len(content))
            root = w.store_tree([TreeItem(Entry("f", KIND_FILE, 0o644, 0, 0, 1, len(content), chunks=(cid,)))])
            return w.commit_snapshot(source, root, {"files": 1})


def _delete_snapshot(repo_path, snap_id: str) -> None:
    os.unlink(repo_path / "snapshots" / snap_id)
    os.unlink(repo_path / "refs" / snap_id)


def test_newest_snapshot_deleted_at_the_secondary_is_refused(repo_path, tmp_path):
    commit(repo_path, tmp_path, b"one")
    second = commit(repo_path, tmp_path, b"two")
    _delete_snapshot(repo_path, second.id)  # lost, hidden or rolled back at the secondary
    before = sorted(os.listdir(repo_path / "snapshots"))
    with pytest.raises(HistoryDiverged) as info:
        commit(repo_path, tmp_path, b"three")
    assert info.value.exit_code == C.EXIT_DIVERGED == 8
    msg = str(info.value)
    assert "generation 1" in msg and "older than generation 2" in msg and second.id[:16] in msg
    assert "\n" not in msg and "--reset-lineage" in msg
    assert sorted(os.listdir(repo_path / "snapshots")) == before  # nothing committed


def test_all_snapshots_of_the_source_gone_is_refused(repo_path, tmp_path):
    first = commit(repo_path, tmp_path, b"one")
    _delete_snapshot(repo_path, first.id)
    with pytest.raises(HistoryDiverged, match="no snapshot of ward"):
        commit(repo_path, tmp_path, b"two")


def test_a_descendant_committed_by_another_site_fences_this_one(repo_path, tmp_path):
    """After a failover the other site continues the lineage properly; this site, back up with its stale
    tree (its daemon restarts at boot), must not commit on top until the operator says so."""
    commit(repo_path, tmp_path, b"one")
    second = commit(repo_path, tmp_path, b"two")
    third = commit(repo_path, tmp_path / "other-site", b"three")  # the promoted site: generation 3, parent = ours
    assert third.parent == second.id
    before = sorted(os.listdir(repo_path / "snapshots"))
    with pytest.raises(HistoryDiverged) as info:
        commit(repo_path, tmp_path, b"stale")
    msg = str(info.value)
    assert "another site writes ward now" in msg and f"generation 3 ({third.short_id})" in msg
    assert socket.gethostname() in msg and "Failover and failback" in msg and "\n" not in msg
    assert sorted(os.listdir(repo_path / "snapshots")) == before
    with Repository.open(str(repo_path), PW) as repo:  # the explicit take-over (sync --reset-lineage)
        LineageMemory(lineage_path(str(tmp_path), repo.id, repo.location), repo.location).forget("ward")
    assert commit(repo_path, tmp_path, b"four").generation == 4
    with pytest.raises(HistoryDiverged, match="another site writes ward now"):  # now the other site is fenced
        commit(repo_path, tmp_path / "other-site", b"late")


def test_our_commit_not_recorded_before_a_crash_is_still_ours(repo_path, tmp_path, monkeypatch):
    commit(repo_path, tmp_path, b"one")
    monkeypatch.setattr(LineageMemory, "record", lambda self, snap: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        commit(repo_path, tmp_path, b"two")  # committed at the destination, not recorded here
    monkeypatch.undo()
    assert commit(repo_path, tmp_path, b"three").generation == 3


def test_a_fork_is_refused(repo_path, tmp_path):
    commit(repo_path, tmp_path, b"one")
    second = commit(repo_path, tmp_path, b"two")
    # The destination's history is replaced: our gen 2 gone, another chain grown from gen 1.
    _delete_snapshot(repo_path, second.id)
    other = tmp_path / "impostor"
    commit(repo_path, other, b"x")  # generation 2 on top of generation 1
    commit(repo_path, other, b"y")  # generation 3
    with pytest.raises(HistoryDiverged, match="does not descend from generation 2"):
        commit(repo_path, tmp_path, b"five")


def test_reset_accepts_the_destination_history(repo_path, tmp_path):
    commit(repo_path, tmp_path, b"one")
    second = commit(repo_path, tmp_path, b"two")
    _delete_snapshot(repo_path, second.id)
    with Repository.open(str(repo_path), PW) as repo:
        memory = LineageMemory(lineage_path(str(tmp_path), repo.id, repo.location), repo.location)
    memory.forget("ward")
    again = commit(repo_path, tmp_path, b"three")
    assert again.generation == 2  # continues from what the destination holds
    assert commit(repo_path, tmp_path, b"four").generation == 3


class DroppingSink(LocalSink):
    """A secondary that acknowledges a commit and does not keep it."""

    def commit(self, name, data, refs, proof, claim):
        super().commit(name, data, refs, proof, claim)
        self.storage.delete(name)


def test_a_commit_acknowledged_but_not_held_is_caught(repo_path, tmp_path):
    commit(repo_path, tmp_path, b"one")
    with pytest.raises(HistoryDiverged, match="does not hold it"):
        commit(repo_path, tmp_path, b"two", sink_cls=DroppingSink)


def test_unreadable_memory_refuses_instead_of_forgetting(repo_path, tmp_path):
    commit(repo_path, tmp_path, b"one")
    with Repository.open(str(repo_path), PW) as repo:
        path = lineage_path(str(tmp_path), repo.id, repo.location)
    with open(path, "w") as f:
        f.write("{not json")
    with pytest.raises(HistoryDiverged, match="unreadable"):
        commit(repo_path, tmp_path, b"two")


def test_a_second_name_for_the_same_host_is_warned_about(repo_path, tmp_path):
    """The daemon's default source name differs from the one a one-shot sync was given: say so at the first
    snapshot under the new name (the mirror would silently stop following)."""
    with Repository.open(str(repo_path), PW, exclusive=True) as repo:
        memory = LineageMemory(lineage_path(str(tmp_path), repo.id, repo.location), repo.location)
        for source, expect in (("hospitals", False), ("hospitals", False), ("tls01:/data", True)):
            with Writer(repo.keyring, LocalSink(repo.storage), lineage=memory) as w:
                root = w.store_tree([])
                w.commit_snapshot(source, root, {"files": 0})
                assert any("starts a new lineage" in m and "'hospitals'" in m for m in w.warnings) == expect


def test_senders_sharing_the_memory_keep_each_other_s_heads(repo_path, tmp_path):
    """Two syncs of two sources from one host at once (parallel jobs, the daemon's threads) each open the
    memory before the other commits: neither may write back a memory without the other's head, or the
    next sync of that source would no longer know what this site committed there."""
    with Repository.open(str(repo_path), PW, exclusive=True) as repo:
        path = lineage_path(str(tmp_path), repo.id, repo.location)
        first, second = LineageMemory(path, repo.location), LineageMemory(path, repo.location)
    a = commit(repo_path, tmp_path, b"ward a", "ward-a", lineage=False)
    b = commit(repo_path, tmp_path, b"ward b", "ward-b", lineage=False)
    first.record(a)
    second.record(b)
    again = LineageMemory(path, repo.location)
    assert again.head("ward-a") is not None and again.head("ward-a").id == a.id
    assert again.head("ward-b") is not None and again.head("ward-b").id == b.id

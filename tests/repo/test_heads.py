"""The receiver's heads (format/head.py): compare-and-swap on the parent, and the fence of promote/handback.

Before 0.4 a receiver took any signed commit: a stale primary whose lineage memory was lost (a reinstall,
a wiped cache) committed its old tree on top of what the promoted secondary wrote, and two writers racing
with the same parent both committed.  The receiver now holds, per source tag, the head it last committed.
"""
from __future__ import annotations

import os

import pytest

from replicator import constants as C
from replicator.errors import Fenced, IntegrityError, LineageConflict
from replicator.format import head as H
from replicator.format import layout as L
from replicator.repo.local_sink import LocalSink, set_fence
from tests.conformance.test_sink import keyring_of, make_snapshot

TAG = b"\x42" * H.TAG_SIZE


def _snap(kr, n: int):
    return make_snapshot(kr, tree=n.to_bytes(32, "big"))


def _commit(sink, kr, n: int, parent: str | None) -> str:
    name, data, proof = _snap(kr, n)
    sink.commit(name, data, [], proof, H.Claim(TAG, parent))
    return L.digest_of(name)


def test_commits_chain_and_the_head_follows(path):
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:
        kr = keyring_of(sink)
        first = _commit(sink, kr, 1, None)
        second = _commit(sink, kr, 2, first)
        assert sink.head(TAG) == H.Head(second, first, None)


def test_a_commit_whose_parent_is_not_the_head_is_refused(path):
    """Two writers started from the same head: the second one to commit is refused, naming both."""
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:
        kr = keyring_of(sink)
        first = _commit(sink, kr, 1, None)
        winner = _commit(sink, kr, 2, first)
        name, data, proof = _snap(kr, 3)
        with pytest.raises(LineageConflict) as info:
            sink.commit(name, data, [], proof, H.Claim(TAG, first))
        assert winner[:16] in str(info.value) and first[:16] in str(info.value)
        assert info.value.exit_code == C.EXIT_DIVERGED
        with pytest.raises(LineageConflict, match="a new lineage"):
            sink.commit(name, data, [], proof, H.Claim(TAG, None))
        assert L.snapshot_name(L.digest_of(name)) not in sink.list(L.SNAPSHOTS)
        assert sink.head(TAG).snapshot == winner


def test_the_same_commit_again_is_accepted_once(path):
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:
        kr = keyring_of(sink)
        name, data, proof = _snap(kr, 1)
        sink.commit(name, data, [], proof, H.Claim(TAG, None))
        sink.commit(name, data, [], proof, H.Claim(TAG, None))  # a retry after a lost COMMIT_OK
        assert sink.head(TAG) == H.Head(L.digest_of(name), None, None)


def test_a_head_naming_a_snapshot_that_never_landed_accepts_any_parent(path):
    """A crash between the head and the snapshot (the head is written first): the next commit goes on."""
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:
        kr = keyring_of(sink)
        first = _commit(sink, kr, 1, None)
        lost = _commit(sink, kr, 2, first)
        sink.storage.delete(L.snapshot_name(lost))
        third = _commit(sink, kr, 3, first)
        assert sink.head(TAG) == H.Head(third, lost, None)


def test_a_rotted_head_snapshot_does_not_block_the_next_commit(path):
    """The writer cannot read a damaged newest snapshot and continues from the one before (repo/writer.py)."""
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:
        kr = keyring_of(sink)
        first = _commit(sink, kr, 1, None)
        rotted = _commit(sink, kr, 2, first)
        file = os.path.join(str(path), "snapshots", rotted)
        os.chmod(file, 0o600)
        data = open(file, "rb").read()
        open(file, "wb").write(data[:-1] + bytes([data[-1] ^ 1]))
        _commit(sink, kr, 3, first)


def test_a_damaged_head_refuses_until_the_operator_rewrites_it(path):
    with LocalSink.open(str(path), writable=True, untrusted=True) as sink:
        kr = keyring_of(sink)
        first = _commit(sink, kr, 1, None)
        sink.storage.put(L.head_name(TAG), b"{not json", overwrite=True)
        name, data, proof = _snap(kr, 2)
        with pytest.raises(IntegrityError, match="not a head object"):
            sink.commit(name, data, [], proof, H.Claim(TAG, first))
        set_fence(sink.storage, TAG, None)  # what promote/handback do: the operator's explicit act
        _commit(sink, kr, 2, None)


def test_promote_fences_the_other_side_and_handback_reverses_it(path):
    with LocalSink.open(str(path), writable=True, untrusted=True) as remote:
        kr = keyring_of(remote)
        first = _commit(remote, kr, 1, None)
    with LocalSink.open(str(path), writable=True, untrusted=False) as local:  # the secondary's own host
        set_fence(local.storage, TAG, H.Fence(H.SIDE_LOCAL, "amiens-1", "2026-12-02T07:00:00Z", "promote"))
        second = _commit(local, kr, 2, first)
    with LocalSink.open(str(path), writable=True, untrusted=True) as remote:
        name, data, proof = _snap(kr, 3)
        with pytest.raises(Fenced, match="amiens-1 took over writing this source") as info:
            remote.commit(name, data, [], proof, H.Claim(TAG, second))  # even with the right parent
        assert info.value.exit_code == C.EXIT_DIVERGED and not info.value.retryable
        set_fence(remote.storage, TAG, H.Fence(H.SIDE_REMOTE, "amiens-1", "2026-12-02T09:00:00Z", "handback"))
        third = _commit(remote, kr, 3, second)
    with LocalSink.open(str(path), writable=True, untrusted=False) as local:
        name, data, proof = _snap(kr, 4)
        with pytest.raises(Fenced, match="handed the role of writing this source back"):
            local.commit(name, data, [], proof, H.Claim(TAG, third))
    other = b"\x43" * H.TAG_SIZE  # other sources are not fenced
    with LocalSink.open(str(path), writable=True, untrusted=False) as local:
        name, data, proof = _snap(kr, 5)
        local.commit(name, data, [], proof, H.Claim(other, None))


@pytest.mark.parametrize("text", [
    b"", b"[]", b'{"version": 2, "snapshot": null, "previous": null}',
    b'{"version": 1, "snapshot": "zz", "previous": null}',
    b'{"version": 1, "snapshot": null}',
    b'{"version": 1, "snapshot": null, "previous": null, "fence": {"side": "both", "host": "h", "time": "t", '
    b'"reason": "promote"}}',
])
def test_hostile_head_objects_are_refused(text):
    with pytest.raises(ValueError, match="heads/x: not a head object"):
        H.decode_head(text, "heads/x")


def test_head_encoding_round_trips():
    head = H.Head("ab" * 32, None, H.Fence(H.SIDE_LOCAL, "h", "2026-12-02T07:00:00Z", "promote"))
    assert H.decode_head(head.encode(), "heads/x") == head


def test_source_tag_follows_format_md():
    """FORMAT.md 2.3, computed here from the keys vector with blake3 itself (not through replicator's code)."""
    import json
    from pathlib import Path

    import blake3

    from replicator.repo.lineage import source_tag

    key = bytes.fromhex(json.loads((Path(__file__).parents[1] / "vectors" / "keys.json").read_text())
                        ["subkeys"]["source-tag"]["key"])
    expected = blake3.blake3(b"source\x00hospitals", key=key).digest()[:16]
    assert source_tag(key, "hospitals") == expected
    assert L.head_name(expected) == "heads/" + expected.hex() and L.HEAD_RE.match(L.head_name(expected))

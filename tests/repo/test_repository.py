"""Repository facade: init/open/lock, write order, crash resume, snapshot integrity."""
from __future__ import annotations

import glob
import hashlib
import json
import os

import pytest

from replicator import constants as C
from replicator.core.compress import compress
from replicator.errors import (
    IntegrityError,
    RepositoryError,
    RepositoryExists,
    RepositoryLocked,
    RepositoryNotFound,
    UnsupportedVersion,
    WrongPassphrase,
)
from replicator.format.entry import KIND_DIR, KIND_FILE, KIND_SYMLINK, Entry
from replicator.format.layout import CONFIG as CONFIG_NAME
from replicator.format.layout import KEY as KEY_NAME
from replicator.format.snapshot import Snapshot, seal_snapshot
from replicator.format.tree import TreeItem
from replicator.repo.repository import INDEX_FILE, Repository

PW = b"pw"


def init(path, **kw) -> Repository:
    return Repository.init(str(path), PW, log2n=C.SCRYPT_LOG2N_MIN, **kw)


@pytest.fixture
def repo_path(tmp_path):
    path = tmp_path / "repo"
    init(path).close()
    return path


def writable(r: Repository) -> Repository:
    """Attach the repository's writer as ``r.w``: writes go through it, reads stay on the repository."""
    r.w = r.writer()
    return r


@pytest.fixture
def repo(repo_path):
    r = writable(Repository.open(str(repo_path), PW, exclusive=True))
    yield r
    r.w.close()
    r.close()


def put(repo: Repository, data: bytes) -> bytes:
    blob_id = repo.chunk_hasher(data)
    method, payload = compress(data)
    repo.w.store_blob(C.BLOB_DATA, blob_id, method, payload, len(data))
    return blob_id


def kill(repo: Repository) -> None:
    """What SIGKILL leaves: nothing flushed or closed by the program, the kernel drops lock and files."""
    if repo._lock is not None:
        repo._lock.release()
        repo._lock = None
    repo.index.close()


def packs_on_disk(path) -> list[str]:
    return sorted(glob.glob(os.path.join(str(path), "data", "*", "*")))


def commit_small_tree(repo: Repository, source: str = "src", content: bytes = b"hello") -> Snapshot:
    cid = put(repo, content)
    sub = repo.w.store_tree([TreeItem(Entry("d/f", KIND_FILE, 0o644, 0, 0, 1, len(content), chunks=(cid,)))])
    root = repo.w.store_tree([TreeItem(Entry("d", KIND_DIR, 0o755, 0, 0, 1), subtree=sub)])
    return repo.w.commit_snapshot(source, root, {"files": 1})


# --- init / open ------------------------------------------------------------

def test_init_creates_config_and_key(tmp_path):
    with init(tmp_path / "repo") as r:
        assert r.storage.exists(CONFIG_NAME) and r.storage.exists(KEY_NAME)
        cfg = json.loads(r.storage.get(CONFIG_NAME))
        assert cfg["magic"] == C.REPO_MAGIC and cfg["version"] == C.FORMAT_VERSION_CURRENT
        assert cfg["id"] == r.id and len(bytes.fromhex(r.id)) == 32
        assert r.snapshots() == []


def test_init_into_existing_empty_dir(tmp_path):
    (tmp_path / "repo").mkdir()
    init(tmp_path / "repo").close()


def test_init_refuses_non_empty_dir(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "precious.txt").write_text("do not touch")
    with pytest.raises(RepositoryExists):
        init(tmp_path / "repo")
    assert os.listdir(tmp_path / "repo") == ["precious.txt"]


def test_init_refuses_existing_repository(repo_path):
    with pytest.raises(RepositoryExists):
        init(repo_path)


def test_init_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RepositoryExists):
        init(tmp_path / "f")


def test_two_repositories_have_different_ids_and_keys(tmp_path):
    with init(tmp_path / "a") as a, init(tmp_path / "b") as b:
        assert a.id != b.id
        assert a.keys.encrypt != b.keys.encrypt
        assert a.chunk_hasher(b"x") != b.chunk_hasher(b"x")


def test_open_missing(tmp_path):
    with pytest.raises(RepositoryNotFound):
        Repository.open(str(tmp_path / "nope"), PW)


def test_open_dir_without_config(tmp_path, repo_path):
    with pytest.raises(RepositoryNotFound):
        Repository.open(str(tmp_path), PW)
    os.unlink(repo_path / CONFIG_NAME)
    with pytest.raises(RepositoryNotFound):
        Repository.open(str(repo_path), PW)


def test_open_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RepositoryNotFound):
        Repository.open(str(tmp_path / "f"), PW)


def test_wrong_passphrase(repo_path):
    with pytest.raises(WrongPassphrase):
        Repository.open(str(repo_path), b"not it")


def _write_config(path, cfg) -> None:
    (path / CONFIG_NAME).write_bytes(cfg if isinstance(cfg, bytes) else json.dumps(cfg).encode())


@pytest.mark.parametrize("cfg", [{"magic": "other"}, {}, [], "text", b"\xff not json", b""])
def test_foreign_config(repo_path, cfg):
    _write_config(repo_path, cfg)
    with pytest.raises(RepositoryError) as info:
        Repository.open(str(repo_path), PW)
    assert not isinstance(info.value, (RepositoryNotFound, UnsupportedVersion))


@pytest.mark.parametrize("version", [99, 0, "1", None])
def test_unsupported_version(repo_path, version):
    cfg = json.loads((repo_path / CONFIG_NAME).read_bytes())
    cfg["version"] = version
    _write_config(repo_path, cfg)
    with pytest.raises(UnsupportedVersion):
        Repository.open(str(repo_path), PW)


@pytest.mark.parametrize("damage", ["no-id", "short-id", "no-chunker", "bad-chunker"])
def test_damaged_config(repo_path, damage):
    cfg = json.loads((repo_path / CONFIG_NAME).read_bytes())
    if damage == "no-id":
        del cfg["id"]
    elif damage == "short-id":
        cfg["id"] = "00" * 16
    elif damage == "no-chunker":
        del cfg["chunker"]
    else:
        cfg["chunker"] = {"min": 10, "avg": 3, "max": 1}
    _write_config(repo_path, cfg)
    with pytest.raises(RepositoryError):
        Repository.open(str(repo_path), PW)


def test_exclusive_lock(repo_path):
    first = Repository.open(str(repo_path), PW, exclusive=True)
    with pytest.raises(RepositoryLocked) as info:
        Repository.open(str(repo_path), PW, exclusive=True)
    assert f"pid {os.getpid()}" in str(info.value)
    assert info.value.retryable
    first.close()
    Repository.open(str(repo_path), PW, exclusive=True).close()


def test_open_cleans_temporaries(repo_path):
    (repo_path / "data").mkdir(exist_ok=True)
    tmp = repo_path / "data" / ".tmp-1-abc"
    tmp.write_bytes(b"half a pack")
    Repository.open(str(repo_path), PW, exclusive=True).close()
    assert not tmp.exists()


# --- write and read ------------------------------------------------------------

def test_store_flush_commit_round_trip(repo_path, repo):
    a, b = os.urandom(5000), b"text " * 2000
    ida, idb = put(repo, a), put(repo, b)
    assert repo.w.has_blob(ida)  # pending blobs count as present
    assert not repo.w.store_blob(C.BLOB_DATA, ida, *compress(a), len(a))  # dedup
    sub = repo.w.store_tree([
        TreeItem(Entry("docs/b.txt", KIND_FILE, 0o644, 1, 2, 3, len(b), chunks=(idb,))),
        TreeItem(Entry("docs/link", KIND_SYMLINK, 0o777, 1, 2, 3, target="b.txt")),
    ])
    root = repo.w.store_tree([
        TreeItem(Entry("a.bin", KIND_FILE, 0o600, 1, 2, 3, len(a), chunks=(ida, ida))),
        TreeItem(Entry("docs", KIND_DIR, 0o755, 1, 2, 3), subtree=sub),
    ])
    snap = repo.w.commit_snapshot("ward7", root, {"files": 2})
    assert snap.generation == 1 and snap.parent is None and snap.tree == root
    assert snap.stats == {"files": 2} and snap.repository == repo.id
    repo.close()

    with Repository.open(str(repo_path), PW) as r:
        (loaded,) = r.snapshots()
        assert loaded == snap
        entries = list(r.walk_tree(loaded.tree))
        assert [(e.path, e.kind) for e in entries] == [
            ("a.bin", KIND_FILE), ("docs", KIND_DIR), ("docs/b.txt", KIND_FILE), ("docs/link", KIND_SYMLINK)]
        assert b"".join(r.read_blob(c) for c in entries[0].chunks) == a + a
        assert r.read_blob(entries[2].chunks[0]) == b
        assert entries[3].target == "b.txt"
        assert r.find_snapshot(loaded.id[:10]) == loaded
        assert r.find_snapshot(source="ward7") == loaded


def test_pack_holds_no_plaintext(repo_path, repo):
    put(repo, b"PATIENT-NAME-" * 1000)
    repo.w.flush()
    (pack,) = packs_on_disk(repo_path)
    assert b"PATIENT-NAME" not in open(pack, "rb").read()


def test_read_blob_missing(repo):
    with pytest.raises(IntegrityError):
        repo.read_blob(bytes(32))


def test_flush_without_blobs_writes_nothing(repo_path, repo):
    repo.w.flush()
    assert packs_on_disk(repo_path) == []


def test_generation_per_source(repo):
    s1 = commit_small_tree(repo, "a", b"1")
    s2 = commit_small_tree(repo, "a", b"2")
    t1 = commit_small_tree(repo, "b", b"3")
    s3 = commit_small_tree(repo, "a", b"4")
    t2 = commit_small_tree(repo, "b", b"5")
    assert [s1.generation, s2.generation, s3.generation] == [1, 2, 3]
    assert [t1.generation, t2.generation] == [1, 2]
    assert s2.parent == s1.id and s3.parent == s2.id and t2.parent == t1.id and t1.parent is None
    assert len(repo.snapshots()) == 5
    assert repo.find_snapshot(source="a") == s3


def test_find_snapshot_unknown(repo):
    with pytest.raises(RepositoryError):
        repo.find_snapshot()
    commit_small_tree(repo)
    with pytest.raises(RepositoryError):
        repo.find_snapshot("ffffffffffff")


# --- crash resume -----------------------------------------------------------

@pytest.mark.parametrize("lose_index", [False, True])
def test_crash_after_flush_before_commit(repo_path, lose_index):
    with writable(Repository.open(str(repo_path), PW, exclusive=True)) as r:
        before = commit_small_tree(r)
        r.w.close()
    r = writable(Repository.open(str(repo_path), PW, exclusive=True))
    flushed = [put(r, os.urandom(3000)) for _ in range(5)]
    r.w.flush()
    unflushed = put(r, os.urandom(3000))
    kill(r)
    del r
    if lose_index:
        for f in glob.glob(str(repo_path / INDEX_FILE) + "*"):
            os.unlink(f)
    with writable(Repository.open(str(repo_path), PW, exclusive=True)) as r2:
        assert all(r2.has_blob(i) for i in flushed)
        assert not r2.has_blob(unflushed)
        assert [s.id for s in r2.snapshots()] == [before.id]
        assert len(r2.read_blob(flushed[0])) == 3000
        # the stored chunks are not stored again
        assert not r2.w.store_blob(C.BLOB_DATA, flushed[1], C.COMPRESSION_NONE, b"x", 1)


def test_pack_written_but_not_indexed_is_caught_up(repo_path, repo, monkeypatch):
    """Crash between storage.put of the pack and the index rows."""
    blob = put(repo, b"late " * 100)
    monkeypatch.setattr(repo.w, "_on_pack", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        repo.w.flush()
    monkeypatch.undo()
    kill(repo)
    with Repository.open(str(repo_path), PW) as r:
        assert r.has_blob(blob)
        assert r.read_blob(blob) == b"late " * 100


def test_deleted_pack_dropped_at_open(repo_path, repo):
    first = put(repo, b"first" * 100)
    repo.w.flush()
    (pack1,) = packs_on_disk(repo_path)
    second = put(repo, b"second" * 100)
    repo.w.flush()
    assert len(repo.index.packs()) == 2
    repo.close()
    os.unlink(pack1)
    with Repository.open(str(repo_path), PW) as r:
        assert not r.has_blob(first)
        assert r.has_blob(second)
        assert len(r.index.packs()) == 1
        with pytest.raises(IntegrityError):
            r.read_blob(first)


def test_pack_deleted_while_open(repo_path, repo):
    blob = put(repo, b"x" * 100)
    repo.w.flush()
    os.unlink(packs_on_disk(repo_path)[0])
    with pytest.raises(IntegrityError):
        repo.read_blob(blob)


def test_rebuild_index(repo):
    for _pack in range(3):
        for _ in range(4):
            put(repo, os.urandom(500))
        repo.w.flush()
    commit_small_tree(repo)
    count = repo.index.count()
    assert count == 12 + 3  # 12 chunks; one chunk and two trees of the small tree
    assert repo.rebuild_index() == count
    assert len(repo.index.packs()) == 4


# --- snapshot integrity ----------------------------------------------------------

def _snapshot_file(repo_path) -> str:
    (name,) = glob.glob(str(repo_path / "snapshots" / "*"))
    return name


@pytest.mark.parametrize("where", ["header", "middle", "tag"])
@pytest.mark.parametrize("rename", [False, True])
def test_flipped_snapshot_byte(repo_path, repo, where, rename):
    commit_small_tree(repo)
    path = _snapshot_file(repo_path)
    data = bytearray(open(path, "rb").read())
    i = {"header": 20, "middle": len(data) // 2, "tag": len(data) - 1}[where]
    data[i] ^= 0x01
    os.unlink(path)
    new = os.path.join(os.path.dirname(path), hashlib.sha256(data).hexdigest()) if rename else path
    open(new, "wb").write(data)
    with pytest.raises(IntegrityError):
        repo.snapshots()


def test_snapshot_signed_by_another_repository(tmp_path, repo):
    commit_small_tree(repo)
    with init(tmp_path / "other") as other:
        forged = Snapshot(id="", repository=repo.id, source="src", generation=99, time_ns=1,
                          tree=bytes(32), hostname="evil")
        # encrypted with this repository's key (an attacker who has it), signed with another's
        name, data = seal_snapshot(forged, repo.keys.encrypt, other.keyring.signer)
        repo.storage.put(name, data)
        with pytest.raises(IntegrityError, match="signature"):
            repo.load_snapshot(name)
        with pytest.raises(IntegrityError):
            repo.snapshots()


def test_snapshot_of_another_repository(tmp_path, repo):
    with writable(init(tmp_path / "other")) as other:
        snap = commit_small_tree(other)
        name = "snapshots/" + snap.id
        repo.storage.put(name, other.storage.get(name))
    with pytest.raises(IntegrityError):
        repo.snapshots()


def test_snapshot_for_another_repository_id_refused(repo):
    """Correct keys and signature, but the body names another repository."""
    forged = Snapshot(id="", repository="00" * 32, source="src", generation=1, time_ns=1,
                      tree=bytes(32), hostname="h")
    name, data = seal_snapshot(forged, repo.keys.encrypt, repo.keyring.signer)
    repo.storage.put(name, data)
    with pytest.raises(IntegrityError, match="another repository"):
        repo.snapshots()


# --- bugs -----------------------------------------------------------------------

def _damage_pack_table(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    data[-C.PACK_FOOTER_SIZE - 1] ^= 0x01  # last byte of the table's tag
    open(path, "wb").write(data)


def test_failed_open_releases_the_lock(repo_path, repo, monkeypatch):
    repo.close()

    def broken(self):
        raise IntegrityError("simulated failure while opening")

    monkeypatch.setattr(Repository, "catch_up", broken)
    with pytest.raises(IntegrityError):
        Repository.open(str(repo_path), PW, exclusive=True)
    monkeypatch.undo()
    Repository.open(str(repo_path), PW, exclusive=True).close()


def test_damaged_unindexed_pack_does_not_prevent_open(repo_path, repo):
    keep = put(repo, b"intact" * 100)
    repo.w.flush()
    (intact,) = packs_on_disk(repo_path)
    put(repo, b"doomed" * 100)
    repo.w.flush()
    repo.close()
    (doomed,) = set(packs_on_disk(repo_path)) - {intact}
    for f in glob.glob(str(repo_path / INDEX_FILE) + "*"):
        os.unlink(f)
    _damage_pack_table(doomed)
    with Repository.open(str(repo_path), PW) as r:
        assert r.read_blob(keep) == b"intact" * 100
        assert list(r.damaged_packs) == [os.path.relpath(doomed, repo_path).replace(os.sep, "/")]


def test_damaged_snapshot_does_not_stop_the_next_commit(repo_path, repo):
    first = commit_small_tree(repo)
    name = f"snapshots/{first.id}"
    path = repo_path / "snapshots" / first.id
    data = bytearray(path.read_bytes())
    data[60] ^= 1
    path.write_bytes(bytes(data))
    second = commit_small_tree(repo, content=b"new")
    assert second.generation == 2  # stays above the damaged snapshot's (unknown) generation
    assert any(first.id[:16] in w for w in repo.w.warnings)
    damaged = []
    assert [s.id for s in repo.snapshots(damaged=damaged)] == [second.id]
    assert len(damaged) == 1 and name.rsplit("/", 1)[-1][:16] in damaged[0]

"""One bad snapshot object never blocks the rest.

Three snapshots of one source; one byte of one of them flips on disk (bit rot).  Every command
skips it, names it in one warning line on stderr and in ``--json`` (``damaged_snapshots``), and
exits 1 where it otherwise succeeds; asking for the damaged one itself is an integrity error (5).
prune keeps what the damaged snapshot's key-less ``refs/`` object lists, and refuses (as before)
only when that object is missing too.
"""
from __future__ import annotations

import json
import os
import random

import pytest

from replicator import constants as C
from replicator.core.params import ChunkerParams
from replicator.format.idlist import decode_ids
from replicator.repo.repository import Repository
from tests.conftest import PASSPHRASE, run_cli, sync_repo
from tests.treecompare import diff, manifest

PW = PASSPHRASE.encode()
PARAMS = ChunkerParams(min_size=4096, avg_size=16384, max_size=65536)


def warnings(result) -> list[str]:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in result.stderr
    assert all(ln.startswith("replicator: warning: ") for ln in lines), result.stderr
    return lines


def one_line_error(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("replicator: error: "), result.stderr
    return lines[0]


def packs(path) -> set[str]:
    return {os.path.join(d, f) for d, _s, fs in os.walk(os.path.join(path, "data")) for f in fs}


@pytest.fixture
def three(tmp_path, monkeypatch):
    """Generations 1-3 of source "ward": a shared file plus one file of each generation's own."""
    monkeypatch.setattr(C, "PACK_TARGET_SIZE", 64 * 1024)  # small packs: a generation's own file has its own
    src = tmp_path / "src"
    src.mkdir()
    (src / "shared.txt").write_bytes(b"ward 7\n" * 3000)
    path = str(tmp_path / "repo")
    snaps, manifests = [], []
    with Repository.init(path, PW, log2n=C.SCRYPT_LOG2N_MIN, params=PARAMS) as repo:
        for gen in (1, 2, 3):
            for old in src.glob("only-*"):
                old.unlink()
            (src / f"only-{gen}.bin").write_bytes(random.Random(gen).randbytes(120_000))
            snaps.append(sync_repo(str(src), repo, "ward").snapshot)
            manifests.append(manifest(str(src)))
    return path, snaps, manifests


@pytest.fixture(params=["middle", "newest"])
def damaged(request, three):
    """:returns: (path, snapshots, manifests, index of the damaged one, its original bytes)."""
    path, snaps, manifests = three
    bad = 1 if request.param == "middle" else 2
    file = os.path.join(path, "snapshots", snaps[bad].id)
    original = open(file, "rb").read()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    os.chmod(file, 0o600)
    open(file, "wb").write(bytes(data))
    return path, snaps, manifests, bad, original


def names_it(result, snap) -> None:
    (line,) = warnings(result)
    assert snap.id[:16] in line and "skipped" in line, line


def test_snapshots_lists_the_others_and_names_it(damaged):
    path, snaps, _m, bad, _o = damaged
    r = run_cli("snapshots", path, "--json")
    assert r.returncode == 1, r.stderr
    names_it(r, snaps[bad])
    out = json.loads(r.stdout)
    assert [row["id"] for row in out["snapshots"]] == [s.id for i, s in enumerate(snaps) if i != bad]
    assert [d["id"] for d in out["damaged_snapshots"]] == [snaps[bad].id]
    r = run_cli("snapshots", path)
    assert r.returncode == 1 and all(s.id[:16] in r.stdout for i, s in enumerate(snaps) if i != bad)
    names_it(r, snaps[bad])


def test_restore_latest_is_the_highest_intact_generation(damaged, tmp_path):
    path, snaps, manifests, bad, _o = damaged
    want = 2 if bad != 2 else 1
    r = run_cli("restore", path, str(tmp_path / "out"), "--json")
    assert r.returncode == 1, r.stderr
    names_it(r, snaps[bad])
    out = json.loads(r.stdout)
    assert out["snapshot"] == snaps[want].id and [d["id"] for d in out["damaged_snapshots"]] == [snaps[bad].id]
    assert diff(manifests[want], manifest(str(tmp_path / "out"))) == []


def test_restore_every_other_snapshot_by_id(damaged, tmp_path):
    path, snaps, manifests, bad, _o = damaged
    for i, snap in enumerate(snaps):
        if i == bad:
            continue
        out = tmp_path / f"out{i}"
        r = run_cli("restore", path, str(out), "--snapshot", snap.id[:12])
        assert r.returncode == 1, r.stderr
        names_it(r, snaps[bad])
        assert diff(manifests[i], manifest(str(out))) == []


def test_restore_of_the_damaged_one_is_an_integrity_error(damaged, tmp_path):
    path, snaps, _m, bad, _o = damaged
    r = run_cli("restore", path, str(tmp_path / "out"), "--snapshot", snaps[bad].id[:12])
    assert r.returncode == 5
    assert snaps[bad].id[:16] in one_line_error(r)
    assert not (tmp_path / "out").exists()


def test_diff_between_the_others_and_with_it(damaged):
    path, snaps, _m, bad, _o = damaged
    a, b = [s for i, s in enumerate(snaps) if i != bad]
    r = run_cli("diff", path, a.id[:12], b.id[:12], "--json")
    assert r.returncode == 1, r.stderr
    names_it(r, snaps[bad])
    out = json.loads(r.stdout)
    assert {c["path"] for c in out["changes"]} >= {f"only-{snaps.index(a) + 1}.bin", f"only-{snaps.index(b) + 1}.bin"}
    assert [d["id"] for d in out["damaged_snapshots"]] == [snaps[bad].id]
    r = run_cli("diff", path, a.id[:12], snaps[bad].id[:12])
    assert r.returncode == 5 and snaps[bad].id[:16] in one_line_error(r)


def test_forget_skips_it_and_never_deletes_it(damaged):
    path, snaps, _m, bad, _o = damaged
    intact = [s for i, s in enumerate(snaps) if i != bad]
    r = run_cli("forget", path, "--keep-last", "1", "--json")
    assert r.returncode == 1, r.stderr
    names_it(r, snaps[bad])
    out = json.loads(r.stdout)
    assert [row["id"] for row in out["snapshots"] if row["keep"]] == [intact[-1].id]
    assert [d["id"] for d in out["damaged_snapshots"]] == [snaps[bad].id]
    assert sorted(os.listdir(os.path.join(path, "snapshots"))) == sorted([intact[-1].id, snaps[bad].id])


def test_prune_keeps_what_its_refs_object_lists(damaged, tmp_path):
    path, snaps, manifests, bad, original = damaged
    assert run_cli("forget", path, "--keep-last", "1", "-q").returncode == 1
    before = packs(path)
    r = run_cli("prune", path, "--json")
    assert r.returncode == 1, r.stderr
    names_it(r, snaps[bad])
    out = json.loads(r.stdout)
    assert out["packs_deleted"] >= 1 and packs(path) < before  # the forgotten generation's data went
    (row,) = out["damaged_snapshots"]
    assert row["id"] == snaps[bad].id and row["kept_by_refs"] > 0
    with Repository.open(path, PW) as repo:
        listed = list(decode_ids(repo.storage.get(f"refs/{snaps[bad].id}"), "refs"))
        assert row["kept_by_refs"] == len(listed)
        for blob_id in listed:
            repo.read_blob(blob_id)  # every blob it references is still there, intact
    # the proof: put the snapshot's bytes back (a good copy from elsewhere) and restore it whole
    open(os.path.join(path, "snapshots", snaps[bad].id), "wb").write(original)
    out_dir = tmp_path / "repaired"
    r = run_cli("restore", path, str(out_dir), "--snapshot", snaps[bad].id, "-q")
    assert r.returncode == 0, r.stderr
    assert diff(manifests[bad], manifest(str(out_dir))) == []


@pytest.mark.parametrize("refs", ["missing", "not-ids", "empty"])
def test_prune_refuses_when_its_refs_object_cannot_say(damaged, refs):
    path, snaps, _m, bad, _o = damaged
    refs_file = os.path.join(path, "refs", snaps[bad].id)
    os.chmod(refs_file, 0o600)
    if refs == "missing":
        os.unlink(refs_file)
    else:
        open(refs_file, "wb").write(b"\x01" * 33 if refs == "not-ids" else b"")
    assert run_cli("forget", path, "--keep-last", "1", "-q").returncode == 1
    before = packs(path)
    r = run_cli("prune", path)
    assert r.returncode == 5
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("replicator: error: ") and "nothing deleted" in lines[-1]
    assert snaps[bad].id[:16] in lines[-1]
    assert packs(path) == before


def test_verify_checks_the_others(damaged):
    path, snaps, _m, bad, _o = damaged
    r = run_cli("verify", path, "--json")
    assert r.returncode == 5
    out = json.loads(r.stdout)
    assert out["snapshots"] == 2
    assert len(out["problems"]) == 1 and snaps[bad].id[:16] in out["problems"][0]


def test_junk_in_snapshots_is_named_and_skipped(three, tmp_path):
    path, snaps, manifests, = three
    junk = os.path.join(path, "snapshots", "README")
    open(junk, "wb").write(b"not a snapshot\n")
    r = run_cli("snapshots", path, "--json")
    assert r.returncode == 1
    (line,) = warnings(r)
    assert "snapshots/README" in line
    assert len(json.loads(r.stdout)["snapshots"]) == 3
    r = run_cli("restore", path, str(tmp_path / "out"), "-q")
    assert r.returncode == 1 and diff(manifests[-1], manifest(str(tmp_path / "out"))) == []
    r = run_cli("prune", path, "--json")  # a name this program never writes references nothing
    assert r.returncode == 1, r.stderr
    assert os.path.exists(junk)
    r = run_cli("verify", path, "--json")  # a stray file is worth a note, it damages nothing
    assert r.returncode == 0, r.stdout
    assert any("snapshots/README" in n for n in json.loads(r.stdout)["notes"])

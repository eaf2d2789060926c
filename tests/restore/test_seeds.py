"""Failback seeds across the tree, and --delete.

Before, ``restore --delta`` seeded a file only from the file at the same path: a file moved or copied
at the other site crossed the WAN again, whole.  Now every file in the target that fails the quick
check is chunked (with the repository's chunker and keyed ids) before the restore, files that pass
it lend their chunks by their snapshot entry, and only the chunks found nowhere are fetched; a seed
is hashed again when used.  ``--delete`` (with --delta only) removes what the snapshot does not have,
inside the target, never through a symlink.
"""
from __future__ import annotations

import filecmp
import hashlib
import json
import os
import random
import shutil

import pytest

from replicator import constants as C
from tests.conftest import PASSPHRASE, run_cli

pytestmark = pytest.mark.usefixtures("restore_writers")

MiB = 1 << 20


def _init(tmp_path):
    repo = tmp_path / "repo"
    r = run_cli("init", str(repo), "--kdf-work", "14", "-q")
    assert r.returncode == 0, r.stderr
    return repo


def _sync(src, repo) -> dict:
    r = run_cli("sync", str(src), str(repo), "--name", "h", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _restore(repo, target, *extra: str, ok: bool = True):
    r = run_cli("restore", str(repo), str(target), "--json", *extra)
    if ok:
        assert r.returncode == 0, r.stdout + r.stderr
        return r, json.loads(r.stdout)
    return r, None


def _same_tree(a, b) -> None:
    """``a`` and ``b`` hold the same names, and the same bytes in every regular file."""
    for dirpath, dirnames, filenames in os.walk(a):
        rel = os.path.relpath(dirpath, a)
        other = os.path.join(b, rel)
        assert sorted(os.listdir(other)) == sorted(dirnames + filenames), rel
        for name in filenames:
            pa, pb = os.path.join(dirpath, name), os.path.join(other, name)
            if not os.path.islink(pa):
                assert filecmp.cmp(pa, pb, shallow=False), os.path.join(rel, name)


def _site(tmp_path, files: dict[str, bytes]):
    """A source tree synced once and restored (plainly) into the old primary's target."""
    repo, src, target = _init(tmp_path), tmp_path / "src", tmp_path / "old-primary"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    _sync(src, repo)
    _restore(repo, target)
    return repo, src, target


def test_a_moved_file_is_seeded_from_where_it_was(tmp_path):
    rnd = random.Random(1)
    image = rnd.randbytes(3 * MiB)
    repo, src, target = _site(tmp_path, {"a/img.dcm": image, "a/note.txt": b"note"})
    (src / "b").mkdir()
    os.rename(src / "a" / "img.dcm", src / "b" / "img.dcm")  # same size and time: only the path changed
    _sync(src, repo)
    _r, done = _restore(repo, target, "--delta")
    assert done["fetched_bytes"] == 0  # nothing crossed the WAN: it was all in a/img.dcm
    assert done["seeded_bytes"] == len(image)
    assert done["kept_files"] == 1 and done["deleted"] == 0
    assert (target / "b" / "img.dcm").read_bytes() == image
    assert (target / "a" / "img.dcm").exists()  # no --delete: what the snapshot lacks stays


def test_copies_and_parts_of_other_files_are_seeded(tmp_path):
    rnd = random.Random(2)
    image = rnd.randbytes(4 * MiB)
    repo, src, target = _site(tmp_path, {"a/img.dcm": image})
    (src / "c").mkdir()
    (src / "c" / "copy.dcm").write_bytes(image)  # a copy of a file that stays as it is (kept)
    (src / "c" / "half.dcm").write_bytes(image[: 2 * MiB])  # a new file made of part of it
    _sync(src, repo)
    _r, done = _restore(repo, target, "--delta")
    assert done["kept_files"] == 1  # a/img.dcm: its chunks are lent by its entry, not read again
    # At most the chunk where half.dcm ends differently (max_size 1 MiB) crosses the WAN.
    assert done["fetched_bytes"] <= 1 * MiB
    assert done["seeded_bytes"] >= len(image) + 1 * MiB
    assert (target / "c" / "copy.dcm").read_bytes() == image
    assert (target / "c" / "half.dcm").read_bytes() == image[: 2 * MiB]


def test_a_seed_changed_between_the_scan_and_its_use_is_not_used(tmp_path):
    from replicator.repo.repository import Repository
    from replicator.restore.seeds import Seeds
    from replicator.restore.writer import restore

    rnd = random.Random(3)
    image = rnd.randbytes(4 * MiB)
    repo_path, src, target = _site(tmp_path, {"a/img.dcm": image})
    (src / "b").mkdir()
    os.rename(src / "a" / "img.dcm", src / "b" / "img.dcm")
    _sync(src, repo_path)
    with Repository.open(str(repo_path), PASSPHRASE.encode()) as repo:
        snap = repo.find_snapshot(None, "h")
        entries = list(repo.walk_tree(snap.tree))
        seeds = Seeds(repo, str(target))
        seeds.scan(entries)
        with open(target / "a" / "img.dcm", "r+b") as f:  # after the scan, its second half changes
            f.seek(2 * MiB)
            f.write(bytes(2 * MiB))
        report = restore(str(target), entries, seeds.read_file, keep_unchanged=True, fsync_each=False)
        seeds.account(report)
        seeds.close()
    assert report.ok, report.errors
    assert (target / "b" / "img.dcm").read_bytes() == image  # never a wrong byte
    assert seeds.chunks_fetched >= 1
    assert 1 * MiB <= report.seeded_bytes <= 2 * MiB + 1 * MiB  # the first half still came from the seed
    assert report.fetched_bytes + report.seeded_bytes == len(image)


def test_plain_restore_reports_every_byte_fetched(tmp_path):
    repo, src, target = _site(tmp_path, {"f.bin": random.Random(4).randbytes(100_000)})
    _r, done = _restore(repo, tmp_path / "fresh")
    assert done["fetched_bytes"] == 100_000
    assert (done["seeded_bytes"], done["kept_files"], done["deleted"]) == (0, 0, 0)


def _outside(tmp_path):
    out = tmp_path / "outside"
    (out / "sub").mkdir(parents=True)
    (out / "secret.txt").write_bytes(b"secret")
    (out / "sub" / "x").write_bytes(b"x")
    return out


def _listing(root) -> list[tuple[str, bytes]]:
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            found.append((os.path.relpath(p, root), open(p, "rb").read()))
    return sorted(found)


def test_delete_removes_what_the_snapshot_lacks_and_nothing_outside(tmp_path):
    repo, src, target = _site(tmp_path, {"keep/f.txt": b"f", "d/g.txt": b"g"})
    outside = _outside(tmp_path)
    before = _listing(outside)
    (target / "extra.txt").write_bytes(b"1")
    (target / "d" / "extra2.txt").write_bytes(b"2")
    (target / ".replicator-tmp-0123456789abcdef").write_bytes(b"left by a crash")
    os.symlink(outside, target / "link")  # a symlink to a directory outside: the link goes, not what it names
    (target / "junk" / "a" / "b").mkdir(parents=True)
    (target / "junk" / "a" / "b" / "f1").write_bytes(b"3")
    (target / "junk" / "ro").mkdir()
    (target / "junk" / "ro" / "f2").write_bytes(b"4")
    os.symlink(outside / "secret.txt", target / "junk" / "inner_link")
    os.chmod(target / "junk" / "ro", 0o555)  # read-only: removed all the same
    _r, done = _restore(repo, target, "--delta")
    assert done["deleted"] == 0 and (target / "extra.txt").exists()  # without --delete nothing goes
    _r, done = _restore(repo, target, "--delta", "--delete")
    # extra.txt, d/extra2.txt, the temp file, link, and junk with a, a/b, a/b/f1, ro, ro/f2, inner_link
    assert done["deleted"] == 11
    _same_tree(src, target)
    assert _listing(outside) == before
    assert os.path.isdir(outside / "sub")


def test_delete_replaces_what_is_in_the_way_without_following_it(tmp_path):
    rnd = random.Random(5)
    image = rnd.randbytes(2 * MiB)
    repo, src, target = _site(tmp_path, {"d/img.dcm": image, "e.txt": b"e"})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "img.dcm").write_bytes(image)  # the same bytes, but outside the target
    shutil.rmtree(target / "d")
    os.symlink(outside, target / "d")  # a symlink where the snapshot has a directory
    os.unlink(target / "e.txt")
    (target / "e.txt").mkdir()  # a directory where it has a file
    (target / "e.txt" / "inside").write_bytes(b"i")
    r, _ = _restore(repo, target, "--delta", ok=False)
    assert r.returncode == C.EXIT_WARNING  # without --delete: refused and named, as before
    _r, done = _restore(repo, target, "--delta", "--delete")
    assert not (target / "d").is_symlink() and (target / "d" / "img.dcm").read_bytes() == image
    assert (target / "e.txt").read_bytes() == b"e"
    assert done["deleted"] == 3  # the symlink d, the directory e.txt and its file
    assert done["fetched_bytes"] == len(image) + 1  # outside/img.dcm was never read through the symlink
    assert sorted(os.listdir(outside)) == ["img.dcm"] and (outside / "img.dcm").read_bytes() == image


@pytest.mark.parametrize("case", ["no-delta", "path", "missing", "file", "unrelated", "repo-inside"])
def test_delete_refuses_a_target_it_should_not_clean(tmp_path, case):
    repo, src, target = _site(tmp_path, {"keep/f.txt": b"f"})
    args = ["--delta", "--delete"]
    if case == "no-delta":
        args = ["--delete"]
    elif case == "path":
        args += ["--path", "keep"]
    elif case == "missing":
        target = tmp_path / "not-there"
    elif case == "file":
        target = tmp_path / "a-file"
        target.write_bytes(b"x")
    elif case == "unrelated":  # a non-empty directory sharing no top-level name with the snapshot: a typo
        target = tmp_path / "home"
        (target / "alice").mkdir(parents=True)
        (target / "alice" / "thesis.tex").write_bytes(b"t")
    elif case == "repo-inside":
        shutil.move(str(repo), str(target / "repo"))
        repo = target / "repo"
    before = _listing(target) if target.is_dir() else None
    r, _ = _restore(repo, target, *args, ok=False)
    assert r.returncode == C.EXIT_USAGE, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert (_listing(target) if target.is_dir() else None) == before


def test_failback_fetches_at_most_1_2x_the_changed_content(tmp_path):
    """A small generated corpus, a day of changes at the secondary (benchmarks.corpus.mutate: edits,
    appends, SQL rows changed and inserted, new studies, deletes, a renamed directory), failback with
    --delta --delete: the chunk bytes fetched stay within 1.2x the bytes of new or changed content."""
    from benchmarks import corpus

    repo, secondary, target = _init(tmp_path), tmp_path / "secondary", tmp_path / "old-primary"
    corpus.generate(secondary, 6 * MiB, seed=1)
    _sync(secondary, repo)
    _restore(repo, target)
    before = {hashlib.sha256(data).digest() for _rel, data in _listing(secondary)}
    corpus.mutate(secondary, rate=0.05, seed=2)
    day = _sync(secondary, repo)
    changed = sum(len(data) for _rel, data in _listing(secondary) if hashlib.sha256(data).digest() not in before)
    _r, done = _restore(repo, target, "--delta", "--delete")
    assert done["fetched_bytes"] <= 1.2 * changed, (done, changed)
    assert done["fetched_bytes"] <= 1.2 * day["bytes_new"], (done, day["bytes_new"])  # the sync's own delta
    assert done["deleted"] > 0
    _same_tree(secondary, target)


def test_seeds_and_delete_work_at_any_depth_with_few_descriptors(tmp_path):
    """A file moved out of a chain 3,000 directories deep (paths far past PATH_MAX): the scan finds it there
    and --delete removes the chain, with RLIMIT_NOFILE at 200."""
    import resource

    from replicator.repo.repository import Repository
    from replicator.restore.seeds import Seeds
    from replicator.restore.writer import restore

    data = random.Random(6).randbytes(300_000)
    repo_path, src, target = _init(tmp_path), tmp_path / "src", tmp_path / "old-primary"
    (src / "top").mkdir(parents=True)
    (src / "top" / "img.bin").write_bytes(data)
    _sync(src, repo_path)
    target.mkdir()
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    for name in ["deep"] + ["d"] * 3000:
        os.mkdir(name, dir_fd=fd)
        nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    with os.fdopen(os.open("img.bin", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
        f.write(data)
    os.close(fd)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with Repository.open(str(repo_path), PASSPHRASE.encode()) as repo:
        entries = list(repo.walk_tree(repo.find_snapshot(None, "h").tree))
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
        try:
            seeds = Seeds(repo, str(target))
            seeds.scan(entries)
            report = restore(str(target), entries, seeds.read_file, keep_unchanged=True, fsync_each=False,
                             delete_extras=True)
            seeds.account(report)
            seeds.close()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert report.ok, (report.errors, report.refused)
    assert (report.seeded_bytes, report.fetched_bytes) == (len(data), 0)
    assert report.deleted == 3002  # deep, its 3,000 levels, the file at the bottom
    assert os.listdir(target) == ["top"] and (target / "top" / "img.bin").read_bytes() == data


def test_delete_never_enters_another_file_system(tmp_path):
    import subprocess

    repo, src, target = _site(tmp_path, {"keep/f.txt": b"f"})
    mnt = target / "junk" / "mnt"
    mnt.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        (mnt / "on-another-fs").write_bytes(b"x")
        r, _ = _restore(repo, target, "--delta", "--delete", ok=False)
        assert r.returncode == C.EXIT_WARNING, r.stdout + r.stderr
        done = json.loads(r.stdout)
        assert any("mount point" in e["message"] for e in done["errors"]), done["errors"]
        assert (mnt / "on-another-fs").read_bytes() == b"x"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)

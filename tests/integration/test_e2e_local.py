"""End to end through the real CLI: sync a generated hospital tree, mutate it,
sync again, restore both snapshots and compare them byte for byte and
metadata with what was synced."""
from __future__ import annotations

import json
import os
import shutil

from benchmarks import corpus
from tests.treecompare import diff, manifest

MiB = 1024 * 1024


def insert_in_middle(path: str, data: bytes) -> None:
    """Insert ``data`` at the middle of a large file, streaming (bounded memory)."""
    size = os.path.getsize(path)
    tmp = path + ".ins"
    st = os.stat(path)
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        remaining = size // 2
        while remaining:
            block = src.read(min(remaining, 4 * MiB))
            dst.write(block)
            remaining -= len(block)
        dst.write(data)
        shutil.copyfileobj(src, dst, 4 * MiB)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.replace(tmp, path)


def largest_file(root: str) -> str:
    best, size = "", -1
    for dirpath, _d, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p) and os.path.getsize(p) > size:
                best, size = p, os.path.getsize(p)
    return best


def test_sync_mutate_sync_restore_both(tmp_path, cli):
    src = tmp_path / "src"
    repo = tmp_path / "repo"
    stats = corpus.generate(src, 32 * MiB, seed=7, large_file_size=105 * MiB)
    m1 = manifest(str(src))
    files = [k for k, v in m1.items() if v[0] == "file"]
    assert len(files) >= 1000, "the corpus should have thousands of small files"
    assert sum(1 for k in files if m1[k][3] > 100 * MiB) >= 1, "and files over 100 MiB"

    assert cli("init", str(repo), "--kdf-work", "14").returncode == 0
    r1 = cli("sync", str(src), str(repo), "--name", "toulouse", "--json")
    assert r1.returncode == 0, r1.stderr
    s1 = json.loads(r1.stdout)
    assert s1["files"] == len(files)

    corpus.mutate(src, rate=0.05, seed=3)
    big = largest_file(str(src))
    insert_in_middle(big, os.urandom(1000))
    (src / "new-note.hl7").write_bytes(b"MSH|^~\\&|NEW\r")
    m2 = manifest(str(src))
    assert diff(m1, m2), "the mutation must change the tree"

    r2 = cli("sync", str(src), str(repo), "--name", "toulouse", "--json")
    assert r2.returncode == 0, r2.stderr
    s2 = json.loads(r2.stdout)
    assert s2["generation"] == 2
    # Deduplication: the second sync stores a small fraction of the tree.
    assert s2["bytes_new"] < 0.25 * s2["bytes_total"], s2
    assert s2["files_unchanged"] > 0.5 * s2["files"], s2

    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    r = cli("restore", str(repo), str(out1), "--snapshot", s1["snapshot"][:12])
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("restore", str(repo), str(out2))
    assert r.returncode == 0, r.stdout + r.stderr
    assert diff(m1, manifest(str(out1))) == []
    assert diff(m2, manifest(str(out2))) == []

    v = cli("verify", str(repo), "--data", "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    assert json.loads(v.stdout)["ok"] is True
    del stats

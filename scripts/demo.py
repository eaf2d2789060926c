"""make demo: the main job on a generated sample, with the embedded defaults.

Generates a small hospital-like tree, creates a repository, syncs the tree,
applies a "next day" of changes, syncs again, restores both snapshots and
verifies every byte, printing each command as an operator would type it.
Everything lands in ./demo-out (removed and made anew on each run).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import corpus  # noqa: E402
from tests.treecompare import diff, manifest  # noqa: E402

OUT = ROOT / "demo-out"
MiB = 1024 * 1024


def run(*args: str) -> None:
    shown = " ".join(shlex.quote(os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a) for a in args)
    print(f"\n$ replicator {shown}", flush=True)
    env = dict(os.environ, REPLICATOR_PASSPHRASE="demo passphrase: use --passphrase-file in production",
               REPLICATOR_CACHE_DIR=str(OUT / "cache"))
    r = subprocess.run([sys.executable, "-m", "replicator", *args], env=env, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"demo: 'replicator {shown}' failed with exit code {r.returncode}")


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    src, repo = OUT / "toulouse-data", OUT / "amiens-repo"
    print(f"Generating a sample hospital tree in {src.relative_to(ROOT)} ...")
    print("  " + corpus.generate(src, 48 * MiB, seed=1).summary())
    day1 = manifest(str(src))

    run("init", str(repo), "--kdf-work", "15")
    run("sync", str(src), str(repo), "--name", "toulouse:/data")
    print("\nThe next day: edits, appended logs, rows inserted in the middle of the SQL dump, new images, deletes ...")
    print("  " + corpus.mutate(src, rate=0.05, seed=2).summary())
    day2 = manifest(str(src))
    run("sync", str(src), str(repo), "--name", "toulouse:/data")
    run("snapshots", str(repo))
    run("verify", str(repo), "--data")

    from replicator.repo.repository import Repository  # only to find the first snapshot's id for the demo

    with Repository.open(str(repo), b"demo passphrase: use --passphrase-file in production") as r:
        first = r.snapshots()[0].id[:16]
    run("restore", str(repo), str(OUT / "restore-day1"), "--snapshot", first)
    run("restore", str(repo), str(OUT / "restore-day2"))
    for label, want, got in (("day 1", day1, OUT / "restore-day1"), ("day 2", day2, OUT / "restore-day2")):
        problems = diff(want, manifest(str(got)))
        if problems:
            sys.exit(f"demo: restore of {label} differs: {problems[:5]}")
        print(f"\nrestore of {label}: {len(want)} entries identical to the source (content, mode, mtime, owner)")
    print("\ndemo finished: everything above is in ./demo-out")


if __name__ == "__main__":
    main()

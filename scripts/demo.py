"""make demo: the main job on a generated sample, with the embedded defaults.

Two sites on one machine: a receiver (`replicator serve`) on loopback holds
the secondary site's repository; the primary syncs a generated hospital tree
to it over ssh://, applies a "next day" of changes and syncs again; the
secondary checks its copy without the passphrase, then restores both
snapshots with it and compares them with the source.  Each command is printed
as an operator would type it.  Everything lands in ./demo-out (made anew).
"""
from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import corpus  # noqa: E402
from tests.treecompare import diff, manifest  # noqa: E402

OUT = ROOT / "demo-out"
MiB = 1024 * 1024
PASSPHRASE = "demo passphrase: use --passphrase-file in production"


def shown(args) -> str:
    return " ".join(shlex.quote(os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a) for a in args)


def run(*args: str, site: str) -> None:
    print(f"\n[{site}]$ replicator {shown(args)}", flush=True)
    env = dict(os.environ, REPLICATOR_PASSPHRASE=PASSPHRASE, REPLICATOR_CACHE_DIR=str(OUT / "cache"))
    r = subprocess.run([sys.executable, "-m", "replicator", *args], env=env, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"demo: 'replicator {shown(args)}' failed with exit code {r.returncode}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_receiver(repo: Path, keys: Path, port: int) -> subprocess.Popen:
    args = ["serve", "--listen", f"127.0.0.1:{port}", "--repo", f"amiens={repo}",
            "--host-key", str(keys / "host_key"), "--authorized-keys", str(keys / "authorized_keys")]
    print(f"\n[amiens]$ replicator {shown(args)} &", flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}  # no passphrase here
    proc = subprocess.Popen([sys.executable, "-m", "replicator", *args], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(OUT / "amiens-serve.log", "wb"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"demo: the receiver exited: {(OUT / 'amiens-serve.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("demo: the receiver did not start listening")


def main() -> None:
    from replicator.transport.ssh import fingerprint, generate_key

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    src, repo, keys = OUT / "toulouse-data", OUT / "amiens-repo", OUT / "keys"
    keys.mkdir()
    print("Two sites on one machine: Toulouse (primary, the data) -> Amiens (secondary, the replica),")
    print("joined by SSH on 127.0.0.1.  Amiens never sees the passphrase or any plaintext.")
    print(f"\nGenerating a sample hospital tree in {src.relative_to(ROOT)} ...")
    print("  " + corpus.generate(src, 48 * MiB, seed=1).summary())
    day1 = manifest(str(src))

    generate_key(str(keys / "host_key"), "amiens host key")
    client_pub = generate_key(str(keys / "toulouse_key"), "toulouse sender")
    (keys / "authorized_keys").write_text(f'replicator-repos="amiens:rw" {client_pub}\n')
    import asyncssh  # only to show the fingerprint an operator would compare out of band

    host_fp = fingerprint(asyncssh.read_private_key(str(keys / "host_key")))
    print(f"\nKeys: Amiens host key {host_fp}; Toulouse's key is allowed to write 'amiens' "
          f"(authorized_keys: replicator-repos=\"amiens:rw\").")

    run("init", str(repo), "--kdf-work", "15", site="amiens")
    port = free_port()
    receiver = start_receiver(repo, keys, port)
    url = f"ssh://replicator@127.0.0.1:{port}/amiens"
    ssh_args = ["--identity", str(keys / "toulouse_key"), "--known-hosts", str(keys / "known_hosts")]
    try:
        run("sync", str(src), url, "--name", "toulouse:/data", *ssh_args, "--accept-host-key", host_fp,
            site="toulouse")
        print("\nThe next day: edits, appended logs, rows inserted in the middle of the SQL dump, new images, deletes ...")
        print("  " + corpus.mutate(src, rate=0.05, seed=2).summary())
        day2 = manifest(str(src))
        run("sync", str(src), url, "--name", "toulouse:/data", *ssh_args, site="toulouse")
    finally:
        receiver.terminate()
        receiver.wait(10)
    print("\nAmiens checks what it holds without the passphrase, then (the primary is gone) restores with it:")
    run("serve", "--verify-only", "--repo", f"amiens={repo}", site="amiens")
    run("snapshots", str(repo), site="amiens")
    run("verify", str(repo), "--data", site="amiens")

    from replicator.repo.repository import Repository  # only to find the first snapshot's id for the demo

    with Repository.open(str(repo), PASSPHRASE.encode()) as r:
        first = r.snapshots()[0].id[:16]
    run("restore", str(repo), str(OUT / "restore-day1"), "--snapshot", first, site="amiens")
    run("restore", str(repo), str(OUT / "restore-day2"), site="amiens")
    for label, want, got in (("day 1", day1, OUT / "restore-day1"), ("day 2", day2, OUT / "restore-day2")):
        problems = diff(want, manifest(str(got)))
        if problems:
            sys.exit(f"demo: restore of {label} differs: {problems[:5]}")
        print(f"\nrestore of {label} at Amiens: {len(want)} entries identical to Toulouse's "
              "(content, mode, mtime, owner)")
    print("\ndemo finished: everything above is in ./demo-out")


if __name__ == "__main__":
    main()

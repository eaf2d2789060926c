"""`replicator serve --stdio`: the receiver under OpenSSH's ForceCommand.

The peer is already authenticated by sshd; the session runs on stdin/stdout
and its rights come from --allow.  Here the pipes of a subprocess stand in for
the SSH channel.
"""
from __future__ import annotations

import asyncio
import os
import sys

from replicator.transport import protocol as P
from tests.conftest import ROOT, run_cli


async def _talk(repo, allow: str, frames: list[bytes]) -> tuple[list, int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "replicator", "serve", "--stdio", "--repo", f"amiens={repo}", "--allow", allow,
        "--peer-label", "test peer", cwd=ROOT, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    proc.stdin.write(P.Hello().encode())
    for f in frames:
        proc.stdin.write(f)
    await proc.stdin.drain()
    got = []
    while True:
        msg = await asyncio.wait_for(P.read_message(proc.stdout), 20)
        if msg is None:
            break
        got.append(msg)
        if isinstance(msg, (P.Error, P.Names)):
            break
    proc.stdin.close()
    err = await asyncio.wait_for(proc.stderr.read(), 20)
    rc = await asyncio.wait_for(proc.wait(), 20)
    return got, rc, err.decode(errors="replace")


def test_stdio_session_serves_the_repository(tmp_path):
    repo = tmp_path / "secondary"
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    frames = [P.Open("amiens", P.MODE_READ).encode(), P.List("snapshots/").encode()]
    got, rc, err = asyncio.run(_talk(repo, "amiens:r", frames))
    kinds = [type(m).__name__ for m in got]
    assert kinds[:3] == ["Hello", "OpenOk", "Names"], (kinds, err)
    assert got[1].config == (repo / "config").read_bytes()
    assert got[2].names == ()


def test_stdio_refuses_a_repository_not_allowed(tmp_path):
    repo = tmp_path / "secondary"
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    got, rc, err = asyncio.run(_talk(repo, "other:rw", [P.Open("amiens", P.MODE_WRITE).encode()]))
    assert isinstance(got[-1], P.Error) and "not allowed" in got[-1].message, got
    assert "not allowed" in err and "test peer" in err
    assert not (repo / "snapshots").exists() or not os.listdir(repo / "snapshots")

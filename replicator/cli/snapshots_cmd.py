"""replicator snapshots REPO"""
from __future__ import annotations

import datetime

from replicator.cli.common import emit, human_bytes, read_passphrase
from replicator.repo.repository import Repository


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("snapshots", help="list the snapshots in REPO",
                       description="List snapshots, oldest first: id, source name, generation, time, files, bytes.")
    p.add_argument("repo", metavar="REPO")
    add_common(p)
    p.set_defaults(func=run)


def _time(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def run(args) -> int:
    with Repository.open(args.repo, read_passphrase(args)) as repo:
        snaps = repo.snapshots()
    rows = [{"id": s.id, "source": s.source, "generation": s.generation, "time": _time(s.time_ns),
             "time_ns": s.time_ns, "files": s.stats.get("files", 0), "bytes": s.stats.get("bytes", 0),
             "hostname": s.hostname} for s in snaps]
    lines = [f"{'ID':16}  {'GEN':>4}  {'TIME':23}  {'FILES':>8}  {'SIZE':>10}  SOURCE"]
    for r in rows:
        lines.append(f"{r['id'][:16]}  {r['generation']:>4}  {r['time']:23}  {r['files']:>8}  "
                     f"{human_bytes(r['bytes']):>10}  {r['source']}")
    if not rows:
        lines = ["no snapshots yet"]
    emit(args, {"snapshots": rows}, lines)
    return 0

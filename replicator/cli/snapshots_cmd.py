"""replicator snapshots REPO"""
from __future__ import annotations

from replicator import constants as C
from replicator.cli.common import add_ssh_options, emit, human_bytes, open_repository, printable, warn_damaged
from replicator.repo.retention import effective_times
from replicator.times import shown_ns


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("snapshots", help="list the snapshots in REPO", description=
                       "List snapshots by source, each source's in generation order (oldest first): id, "
                       "generation, time, files, bytes, source.  The order is the generation, never the time: "
                       "the time is the primary's clock at commit, and a time later than a newer generation's "
                       "is marked '!' (that clock was wrong).  Damaged snapshot objects are named on stderr "
                       "and skipped (exit code 1).")
    p.add_argument("repo", metavar="REPO")
    add_ssh_options(p, "remote (REPO = ssh://USER@HOST:PORT/NAME: read the other site's repository)")
    add_common(p)
    p.set_defaults(func=run)




def run(args) -> int:
    with open_repository(args) as repo:
        listing = repo.read_snapshots()
    damaged = warn_damaged(listing.damaged)
    effective: dict[str, int] = {}
    latest: set[str] = set()
    for source in listing.sources():
        mine = [s for s in listing.snapshots if s.source == source]
        effective.update(effective_times(mine))
        latest.update(s.id for s in mine if s.generation == mine[-1].generation)
    rows = [{"id": s.id, "source": s.source, "generation": s.generation, "time": shown_ns(s.time_ns),
             "time_ns": s.time_ns, "files": s.stats.get("files", 0), "bytes": s.stats.get("bytes", 0),
             "hostname": s.hostname, "latest": s.id in latest, "clock_suspect": effective[s.id] != s.time_ns}
            for s in listing.snapshots]
    lines = [f"{'ID':16}  {'GEN':>4}  {'TIME':21}  {'FILES':>8}  {'SIZE':>10}  SOURCE"]
    for r in rows:
        mark = "!" if r["clock_suspect"] else " "
        lines.append(f"{r['id'][:16]}  {r['generation']:>4}  {r['time']:20}{mark}  {r['files']:>8}  "
                     f"{human_bytes(r['bytes']):>10}  {printable(r['source'])}")
    if any(r["clock_suspect"] for r in rows):
        lines.append("! recorded time later than a newer generation's: the primary's clock was wrong then "
                     "(or later); the generation orders them")
    if not rows:
        lines = ["no snapshots yet"]
    emit(args, {"snapshots": rows, "damaged_snapshots": damaged}, lines)
    return C.EXIT_WARNING if damaged else C.EXIT_OK

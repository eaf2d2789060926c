"""replicator stats REPO"""
from __future__ import annotations

from replicator import constants as C
from replicator.cli.common import add_ssh_options, emit, human_bytes, open_repository, printable, warn_damaged
from replicator.repo.stats import repository_stats
from replicator.times import shown_ns


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("stats", help="what each source holds, and what deduplication and compression save",
                       description=
                       "Per source: snapshots, the latest (highest generation) with its time, files and logical "
                       "size.  For the repository: packs and the bytes they take, unique chunks, the logical "
                       "bytes of all snapshots added up (what restoring each would write), the deduplication "
                       "ratio (those logical bytes over the unique chunks' plaintext) and the compression ratio "
                       "(that plaintext over what the chunks take sealed).  Sizes are counted from the trees, "
                       "each distinct subtree read once; the stored side comes from the index.  Damaged "
                       "snapshot objects are named and skipped (exit code 1).")
    p.add_argument("repo", metavar="REPO")
    add_ssh_options(p, "remote (REPO = ssh://USER@HOST:PORT/NAME: read the other site's repository)")
    add_common(p)
    p.set_defaults(func=run)


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def run(args) -> int:
    with open_repository(args) as repo:
        listing = repo.read_snapshots()
        damaged = warn_damaged(listing.damaged)
        st = repository_stats(repo, listing.snapshots)
    sources = [{"source": x.source, "snapshots": x.snapshots, "latest": x.latest.id,
                "latest_generation": x.latest.generation, "latest_time": shown_ns(x.latest.time_ns),
                "latest_time_ns": x.latest.time_ns, "latest_bytes": x.latest_totals.bytes,
                "latest_files": x.latest_totals.files, "latest_dirs": x.latest_totals.dirs,
                "latest_symlinks": x.latest_totals.symlinks} for x in st.sources]
    repository = {"snapshots": st.snapshots, "packs": st.packs, "stored_bytes": st.stored_bytes,
                  "unique_chunks": st.unique_chunks, "unique_chunk_bytes": st.chunk_bytes,
                  "unique_chunk_stored_bytes": st.chunk_stored_bytes, "trees": st.trees,
                  "logical_bytes": st.logical_bytes, "dedup_ratio": st.dedup_ratio,
                  "compression_ratio": st.compression_ratio}
    lines = [f"{'SOURCE':20}  {'SNAPSHOTS':>9}  {'LATEST':16}  {'GEN':>4}  {'TIME':20}  {'FILES':>9}  {'SIZE':>10}"]
    for x in st.sources:
        lines.append(f"{printable(x.source):20}  {x.snapshots:>9}  {x.latest.short_id:16}  {x.latest.generation:>4}  "
                     f"{shown_ns(x.latest.time_ns):20}  {x.latest_totals.files:>9}  {human_bytes(x.latest_totals.bytes):>10}")
    if not st.sources:
        lines = ["no snapshots yet"]
    lines += [f"repository: {st.snapshots} snapshots, {st.packs} packs, {human_bytes(st.stored_bytes)} stored",
              f"  unique chunks: {st.unique_chunks} ({human_bytes(st.chunk_bytes)} of plaintext, "
              f"{human_bytes(st.chunk_stored_bytes)} sealed)",
              f"  logical bytes of all snapshots: {human_bytes(st.logical_bytes)}",
              f"  deduplication: {_ratio(st.dedup_ratio)}, compression: {_ratio(st.compression_ratio)}"]
    emit(args, {"sources": sources, "repository": repository, "damaged_snapshots": damaged}, lines)
    return C.EXIT_WARNING if damaged else C.EXIT_OK

"""Turn a pytest-benchmark JSON file into the Markdown tables of `make bench`, and README's block of them.

Usage: python scripts/bench_report.py [--readme README.md] bench-out/bench.json > bench-out/bench.md

The Goals section is data-driven: GOALS lists issue 11's rows, each a measured value (or a ratio of two)
picked from the JSON by group, benchmark name and key ("min": the best round's seconds, else an extra_info
key).  A row whose inputs are missing says "not measured in this run" and why.  With --readme, only the
block between BEGIN and END in that file is replaced (summary + goals); every other byte stays as it was.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import dataclass

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def mib(n: float) -> str:
    return f"{n / 1048576:.1f}"


@dataclass(frozen=True)
class Pick:
    """One number in the JSON: benchmark ``name`` of ``group``, and ``key`` ("min" or an extra_info key)."""

    group: str
    name: str
    key: str


@dataclass(frozen=True)
class Goal:
    """A row of the goals table: ``value`` (divided by ``peer`` when given) compared with ``bound``."""

    run: str
    value: Pick
    peer: Pick | None
    op: str  # "<=" or ">="
    bound: float
    unit: str = ""  # "": a ratio (shown "x"); else the unit of an absolute value

    def check(self, measured: float) -> bool:
        return measured <= self.bound if self.op == "<=" else measured >= self.bound


SMALL, MIXED, LARGE = "goals-small-ssh", "goals-mixed-ssh", "goals-large"
OURS_SMALL, RSYNC_SMALL = "test_small_files_over_ssh_replicator", "test_small_files_over_ssh_rsync"
OURS_MIXED, RSYNC_MIXED = "test_mixed_over_ssh_replicator", "test_mixed_over_ssh_rsync"
GOALS = (
    Goal("no-change sync, many small files, over SSH vs rsync -a (wall)", Pick(SMALL, OURS_SMALL, "no_change_wall_s"),
         Pick(SMALL, RSYNC_SMALL, "no_change_wall_s"), "<=", 1.0),
    Goal("no-change sync, mixed corpus, over SSH vs rsync -a (wall)", Pick(MIXED, OURS_MIXED, "no_change_wall_s"),
         Pick(MIXED, RSYNC_MIXED, "no_change_wall_s"), "<=", 1.0),
    Goal("next day, mixed corpus, over SSH vs rsync -a (wall)", Pick(MIXED, OURS_MIXED, "next_day_wall_s"),
         Pick(MIXED, RSYNC_MIXED, "next_day_wall_s"), "<=", 1.0),
    Goal("next day, mixed corpus, bytes sent vs rsync -az", Pick(MIXED, OURS_MIXED, "next_day_bytes_sent"),
         Pick(MIXED, RSYNC_MIXED, "next_day_bytes_sent_z"), "<=", 1.0),
    Goal("initial sync, many small files, local vs restic (wall)",
         Pick("goals-small-local", "test_small_files_initial_local[replicator]", "min"),
         Pick("goals-small-local", "test_small_files_initial_local[restic]", "min"), "<=", 0.7),
    Goal("initial sync, mixed corpus, local vs restic (wall)", Pick("initial", "test_initial[replicator]", "min"),
         Pick("initial", "test_initial[restic]", "min"), "<=", 0.6),
    Goal("one large file, one core, vs the in-process ceiling of its stages",
         Pick(LARGE, "test_large_file_one_core_and_two", "one_core_of_ceiling"), None, ">=", 0.8),
    Goal("one large file, two cores vs one", Pick(LARGE, "test_large_file_one_core_and_two", "two_cores_vs_one"),
         None, ">=", 1.8),
    Goal("restore vs restic (rate)", Pick("restore-verify", "test_restore", "rate_vs_restic"), None, ">=", 2.0),
    Goal("peak RSS of the sender after unlock, initial over SSH, mixed corpus",
         Pick(MIXED, OURS_MIXED, "sender_after_unlock_peak_rss_mib"), None, "<=", 100, "MiB"),
    Goal("peak RSS of the receiver, initial over SSH, mixed corpus", Pick(MIXED, OURS_MIXED, "receiver_peak_rss_mib"),
         None, "<=", 64, "MiB"),
)


def _index(benches: list[dict]) -> dict[tuple[str, str], dict]:
    return {(b["group"], b["name"]): b for b in benches}


def pick(index: dict, p: Pick) -> tuple[float | None, str]:
    """:returns: the number, or None and why it is missing."""
    b = index.get((p.group, p.name))
    if b is None:
        return None, f"{p.name} did not run (skipped, e.g. peer not installed, or not selected)"
    value = b["stats"]["min"] if p.key == "min" else b["extra_info"].get(p.key)
    if not isinstance(value, (int, float)):
        return None, f"{p.name} recorded no {p.key}"
    return float(value), ""


def goal_rows(benches: list[dict]) -> list[dict]:
    """Each goal with ``measured`` (None when not measured), ``met`` and ``why`` (the reason when not measured)."""
    index, rows = _index(benches), []
    for g in GOALS:
        value, why = pick(index, g.value)
        if value is not None and g.peer is not None:
            peer, why = pick(index, g.peer)
            value = None if peer is None else (value / peer if peer else None)
            if peer == 0:
                why = f"{g.peer.name} {g.peer.key} is 0"
        rows.append({"goal": g, "measured": value, "met": value is not None and g.check(value), "why": why})
    return rows


def goals_table(benches: list[dict]) -> list[str]:
    lines = ["| run | measured | goal | status |", "| --- | --- | --- | --- |"]
    for r in goal_rows(benches):
        g = r["goal"]
        unit = f" {g.unit}" if g.unit else "x" if g.peer is None else ""
        goal = f"{g.op} {g.bound:g}{unit}"
        if r["measured"] is None:
            lines.append(f"| {g.run} | | {goal} | not measured in this run ({r['why']}) |")
        else:
            shown = f"{r['measured']:.1f}{unit}" if g.unit else f"{r['measured']:.2f}{unit}"
            lines.append(f"| {g.run} | {shown} | {goal} | {'met' if r['met'] else 'not met'} |")
    return lines


def _num(index: dict, group: str, name: str, key: str, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
    value, _ = pick(index, Pick(group, name, key))
    return "" if value is None else fmt.format(value / scale)


def summary_lines(doc: dict) -> list[str]:
    """The README block: when, where, how, the headline runs side by side, then the goals."""
    benches, machine = doc["benchmarks"], doc.get("machine_info", {})
    index = _index(benches)
    quick = any(b["extra_info"].get("quick") for b in benches)
    cpu = machine.get("cpu", {})
    lines = [f"Generated by `scripts/bench_report.py --readme README.md bench-out/bench.json` from `make bench` "
             f"({'QUICK MODE, tiny corpora: not the issue sizes' if quick else 'full size'}) on "
             f"{doc.get('datetime', '')[:10]}: {cpu.get('brand_raw', '?')}, {cpu.get('count', '?')} cores, "
             f"Python {machine.get('python_version', '?')}. Wall seconds of one run each unless said.", ""]
    small = index.get((SMALL, OURS_SMALL), {}).get("extra_info", {})
    mixed = index.get((MIXED, OURS_MIXED), {}).get("extra_info", {})
    lines += [f"Corpora: many small files {small.get('files', '?')} files / {mib(small.get('bytes', 0))} MiB, "
              f"mixed {mixed.get('files', '?')} files / {mib(mixed.get('bytes', 0))} MiB.", "",
              "| run | replicator | rsync -a (over OpenSSH) | rsync -az bytes |", "| --- | --- | --- | --- |"]
    for group, ours, peer, label in ((SMALL, OURS_SMALL, RSYNC_SMALL, "small files"),
                                     (MIXED, OURS_MIXED, RSYNC_MIXED, "mixed")):
        for phase in ("initial", "no_change", "next_day"):
            o = (f"{_num(index, group, ours, phase + '_wall_s')} s / "
                 f"{_num(index, group, ours, phase + '_bytes_sent', 1e6, '{:.1f}')} MB")
            p = (f"{_num(index, group, peer, phase + '_wall_s')} s / "
                 f"{_num(index, group, peer, phase + '_bytes_sent', 1e6, '{:.1f}')} MB")
            z = _num(index, group, peer, phase + "_bytes_sent_z", 1e6, "{:.1f} MB")
            lines.append(f"| {phase.replace('_', '-')}, {label}, over SSH | {o} | {p} | {z} |")
    tools = ("replicator", "restic", "borg", "rsync")
    lines += ["", "| local run: wall s (best) / MiB written, peak RSS MiB | " + " | ".join(tools) + " |",
              "| --- |" + " --- |" * len(tools)]
    for group, label, key in (("initial", "initial, mixed", "repo_bytes"),
                              ("next-day", "next day, mixed", "repo_bytes_added")):
        cells = []
        for tool in tools:
            name = f"test_{group.replace('-', '_')}[{tool}]"
            cells.append(f"{_num(index, group, name, 'min')} / {_num(index, group, name, key, 1048576, '{:.1f}')}, "
                         f"{_num(index, group, name, 'peak_rss_mib', 1, '{:.0f}')}" if (group, name) in index else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = []
    for tool in tools[:3]:
        name = f"test_small_files_initial_local[{tool}]"
        cells.append(f"{_num(index, 'goals-small-local', name, 'min')} / -, "
                     f"{_num(index, 'goals-small-local', name, 'peak_rss_mib', 1, '{:.0f}')}"
                     if ("goals-small-local", name) in index else "")
    lines.append("| initial, small files | " + " | ".join(cells) + " | |")
    lines += ["", "Commands: `make bench`, i.e. `pytest --benchmark-only --benchmark-json=bench-out/bench.json "
              "benchmarks` then `scripts/bench_report.py --readme README.md bench-out/bench.json`.",
              "", "### Goals (issue 11)", "", *goals_table(benches)]
    return lines


def replace_block(text: str, block: list[str]) -> str:
    """``text`` with what lies between BEGIN and END replaced by ``block``; every other byte unchanged.

    :raises ValueError: the markers are missing, repeated, or out of order."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"expected one {BEGIN} before one {END}")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return head + BEGIN + "\n" + "\n".join(block) + "\n" + END + tail


def load(path: str) -> dict:
    """The benchmark JSON, every benchmark with a group (a test without a ``group`` mark has None)."""
    with open(path) as f:
        doc = json.load(f)
    for b in doc["benchmarks"]:
        b["group"] = b.get("group") or ""
    return doc


def main(path: str) -> None:
    doc = load(path)
    benches = doc["benchmarks"]
    machine = doc.get("machine_info", {})
    print(f"Machine: {machine.get('cpu', {}).get('brand_raw', platform.processor())}, "
          f"{machine.get('cpu', {}).get('count', '?')} cores, Python {machine.get('python_version', '?')}; "
          f"{doc.get('datetime', '')[:19]}")
    print()
    print("### Goals (issue 11)")
    print()
    print("\n".join(goals_table(benches)))
    print()
    print("### Stages (in-memory, one thread)")
    print()
    print("| benchmark | MB/s (best round) |")
    print("| --- | --- |")
    for b in benches:
        if b["group"] in ("chunker",) or b["group"].startswith("stage-"):
            print(f"| {b['name']} | {b['extra_info'].get('MB/s', '')} |")
    chunk = {b["name"]: b["extra_info"].get("MB/s") for b in benches if b["group"] == "chunker"}
    if chunk.get("test_ours_scan") and chunk.get("test_pyfastcdc_cut_buf"):
        print(f"\nChunker scan, ours / pyfastcdc: **{chunk['test_ours_scan'] / chunk['test_pyfastcdc_cut_buf']:.2f}x**")
    for group, title, bytes_key in (("initial", "Initial backup of the corpus", "repo_bytes"),
                                    ("next-day", "Next day (after the mutation)", "repo_bytes_added")):
        rows = [b for b in benches if b["group"] == group]
        if not rows:
            continue
        ours = next((b for b in rows if b["extra_info"].get("tool") == "replicator"), None)
        print(f"\n### {title}\n")
        print("| tool | wall s (best) | MB/s | peak RSS MiB | repository bytes written MiB "
              "| time ratio replicator/peer | bytes ratio replicator/peer |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for b in rows:
            info = b["extra_info"]
            written = info.get(bytes_key, 0)
            sent = info.get("bytes_sent")
            shown = f"{mib(written)}" + (f" (sent {mib(sent)})" if sent is not None else "")
            tr = br = ""
            if ours and b is not ours:
                tr = f"{ours['stats']['min'] / b['stats']['min']:.2f}"
                other = sent if sent is not None else written
                if other:
                    br = f"{ours['extra_info'].get(bytes_key, 0) / other:.2f}"
            print(f"| {info.get('tool', b['name'])} | {b['stats']['min']:.2f} | {info.get('MB/s', '')} | "
                  f"{info.get('peak_rss_mib', '')} | {shown} | {tr} | {br} |")
    _recorded_table("Runs behind the goals", [b for b in benches if b["group"].startswith("goals-")])
    rows = [b for b in benches if b["group"] in ("restore-verify", "scaling")]
    if rows:
        print("\n### Restore, verify --data, and scaling of the initial sync\n")
        print("| benchmark | wall s (best) | MB/s | files | peak RSS MiB |")
        print("| --- | --- | --- | --- | --- |")
        for b in rows:
            info = b["extra_info"]
            print(f"| {b['name']} | {b['stats']['min']:.2f} | {info.get('MB/s', '')} | {info.get('files', '')} | "
                  f"{info.get('peak_rss_mib', '')} |")
    _recorded_table("Other", [b for b in benches
                              if b["group"] not in ("chunker", "initial", "next-day", "restore-verify", "scaling")
                              and not b["group"].startswith(("stage-", "goals-"))])


def _recorded_table(title: str, rows: list[dict]) -> None:
    """One row per benchmark: its group, name, best wall time and everything it recorded."""
    if not rows:
        return
    print(f"\n### {title}\n")
    print("| group | benchmark | wall s (best) | recorded |")
    print("| --- | --- | --- | --- |")
    for b in rows:
        print(f"| {b['group']} | {b['name']} | {b['stats']['min']:.3f} | {json.dumps(b['extra_info'])} |")


def cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="pytest-benchmark JSON -> Markdown (and README's bench block)")
    ap.add_argument("--readme", metavar="FILE", help="rewrite the block between the bench markers of FILE")
    ap.add_argument("json", help="pytest-benchmark --benchmark-json output")
    args = ap.parse_args(argv)
    try:
        doc = load(args.json)
        if args.readme:
            with open(args.readme, newline="") as f:
                text = f.read()
            new = replace_block(text, summary_lines(doc))
            with open(args.readme, "w", newline="") as f:
                f.write(new)
    except (OSError, ValueError, KeyError) as e:
        print(f"bench_report: {e}", file=sys.stderr)
        return 2
    main(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(cli())

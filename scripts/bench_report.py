"""Turn a pytest-benchmark JSON file into the Markdown tables of `make bench`.

Usage: python scripts/bench_report.py bench-out/bench.json > bench-out/bench.md
"""
from __future__ import annotations

import json
import platform
import sys


def mib(n: float) -> str:
    return f"{n / 1048576:.1f}"


def main(path: str) -> None:
    doc = json.load(open(path))
    benches = doc["benchmarks"]
    machine = doc.get("machine_info", {})
    print(f"Machine: {machine.get('cpu', {}).get('brand_raw', platform.processor())}, "
          f"{machine.get('cpu', {}).get('count', '?')} cores, Python {machine.get('python_version', '?')}; "
          f"{doc.get('datetime', '')[:19]}")
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
    rows = [b for b in benches if b["group"] in ("restore-verify", "scaling")]
    if rows:
        print("\n### Restore, verify --data, and scaling of the initial sync\n")
        print("| benchmark | wall s (best) | MB/s | files | peak RSS MiB |")
        print("| --- | --- | --- | --- | --- |")
        for b in rows:
            info = b["extra_info"]
            print(f"| {b['name']} | {b['stats']['min']:.2f} | {info.get('MB/s', '')} | {info.get('files', '')} | "
                  f"{info.get('peak_rss_mib', '')} |")
    other = [b for b in benches if b["group"] not in ("chunker", "initial", "next-day", "restore-verify", "scaling")
             and not b["group"].startswith("stage-")]
    if other:
        print("\n### Other\n")
        print("| group | benchmark | wall s (best) | extra |")
        print("| --- | --- | --- | --- |")
        for b in other:
            print(f"| {b['group']} | {b['name']} | {b['stats']['min']:.3f} | {json.dumps(b['extra_info'])} |")


if __name__ == "__main__":
    main(sys.argv[1])

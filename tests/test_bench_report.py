"""scripts/bench_report.py: the goal ratios from a pytest-benchmark JSON, and README's generated block."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("bench_report", ROOT / "scripts" / "bench_report.py")
assert _spec is not None and _spec.loader is not None
report = importlib.util.module_from_spec(_spec)
sys.modules["bench_report"] = report  # dataclasses look their module up
_spec.loader.exec_module(report)


def _bench(group: str, name: str, best: float = 1.0, **extra) -> dict:
    return {"group": group, "name": name, "stats": {"min": best}, "extra_info": extra}


DOC = {"datetime": "2026-12-03T07:00:00", "machine_info": {"cpu": {"brand_raw": "Test CPU", "count": 2},
                                                            "python_version": "3.11.7"},
       "benchmarks": [
           _bench("goals-small-ssh", "test_small_files_over_ssh_replicator", no_change_wall_s=3.0, quick=True,
                  files=300, bytes=1_000_000),
           _bench("goals-small-ssh", "test_small_files_over_ssh_rsync", no_change_wall_s=1.5),
           _bench("goals-mixed-ssh", "test_mixed_over_ssh_replicator", next_day_wall_s=1.0, next_day_bytes_sent=40,
                  no_change_wall_s=0.5, sender_after_unlock_peak_rss_mib=90.0, receiver_peak_rss_mib=70.0),
           _bench("goals-mixed-ssh", "test_mixed_over_ssh_rsync", next_day_wall_s=2.0, next_day_bytes_sent_z=50,
                  no_change_wall_s=0.0),
           _bench("goals-small-local", "test_small_files_initial_local[replicator]", best=6.0),
           _bench("goals-small-local", "test_small_files_initial_local[restic]", best=10.0),
           _bench("goals-large", "test_large_file_one_core_and_two", one_core_of_ceiling=0.85),
           _bench("restore-verify", "test_restore", rate_vs_restic=1.5),
       ]}


def _rows() -> dict[str, dict]:
    return {r["goal"].run: r for r in report.goal_rows(DOC["benchmarks"])}


def test_goal_ratios_are_computed_from_the_selected_values():
    rows = _rows()
    small = rows["no-change sync, many small files, over SSH vs rsync -a (wall)"]
    assert small["measured"] == pytest.approx(2.0) and not small["met"]
    wall = rows["next day, mixed corpus, over SSH vs rsync -a (wall)"]
    assert wall["measured"] == pytest.approx(0.5) and wall["met"]
    assert rows["next day, mixed corpus, bytes sent vs rsync -az"]["measured"] == pytest.approx(0.8)
    local = rows["initial sync, many small files, local vs restic (wall)"]
    assert local["measured"] == pytest.approx(0.6) and local["met"]
    assert rows["one large file, one core, vs the in-process ceiling of its stages"]["met"]
    restore = rows["restore vs restic (rate)"]
    assert restore["measured"] == pytest.approx(1.5) and not restore["met"]
    assert rows["peak RSS of the sender after unlock, initial over SSH, mixed corpus"]["met"]
    assert not rows["peak RSS of the receiver, initial over SSH, mixed corpus"]["met"]


def test_a_missing_input_is_not_measured_with_its_reason():
    rows = _rows()
    missing = rows["initial sync, mixed corpus, local vs restic (wall)"]
    assert missing["measured"] is None and not missing["met"] and "test_initial[replicator] did not run" in missing["why"]
    absent_key = rows["one large file, two cores vs one"]
    assert absent_key["measured"] is None and "recorded no two_cores_vs_one" in absent_key["why"]
    zero = rows["no-change sync, mixed corpus, over SSH vs rsync -a (wall)"]
    assert zero["measured"] is None and "is 0" in zero["why"]
    table = "\n".join(report.goals_table(DOC["benchmarks"]))
    assert "| initial sync, mixed corpus, local vs restic (wall) | | <= 0.6 | not measured in this run (" in table


def test_readme_block_replaced_and_the_rest_byte_identical(tmp_path):
    head = "# Title\r\n\nintro  \n## Benchmarks\n\n"
    tail = "\n\nThe full tables\n\n## After\ntrailing \t\n"
    readme = tmp_path / "README.md"
    readme.write_bytes((head + report.BEGIN + "\nold numbers 5.02\n" + report.END + tail).encode())
    js = tmp_path / "bench.json"
    js.write_text(json.dumps(DOC))
    assert report.cli(["--readme", str(readme), str(js)]) == 0
    text = readme.read_bytes().decode()
    assert text.startswith(head + report.BEGIN + "\n") and text.endswith("\n" + report.END + tail)
    block = text[len(head):-len(tail)]
    assert "old numbers" not in block and "QUICK MODE" in block and "Test CPU" in block
    assert "| no-change sync, many small files, over SSH vs rsync -a (wall) | 2.00 | <= 1 | not met |" in block


@pytest.mark.parametrize("text", ["no markers\n", f"{report.END}\n{report.BEGIN}\n",
                                  f"{report.BEGIN}\n{report.BEGIN}\n{report.END}\n"])
def test_bad_markers_one_line_error_and_the_file_unchanged(tmp_path, capsys, text):
    readme = tmp_path / "README.md"
    readme.write_text(text)
    js = tmp_path / "bench.json"
    js.write_text(json.dumps(DOC))
    assert report.cli(["--readme", str(readme), str(js)]) == 2
    assert readme.read_text() == text
    err = capsys.readouterr().err
    assert err.startswith("bench_report: expected one") and err.count("\n") == 1


def test_the_project_readme_has_one_block():
    text = (ROOT / "README.md").read_text()
    assert text.count(report.BEGIN) == 1 and text.count(report.END) == 1


def test_a_benchmark_without_a_group_does_not_stop_the_report(tmp_path, capsys):
    """bench_idset and bench_s3 carry no group mark (pytest-benchmark writes null): the full `make bench`
    of 2026-12-03 stopped at them with an AttributeError after 46 minutes of measuring."""
    doc = json.loads(json.dumps(DOC))
    doc["benchmarks"].append({"group": None, "name": "test_lookup_idset_batched", "stats": {"min": 1.0},
                              "extra_info": {"lookups/s": 125147}})
    js = tmp_path / "bench.json"
    js.write_text(json.dumps(doc))
    assert report.cli([str(js)]) == 0
    assert "test_lookup_idset_batched" in capsys.readouterr().out

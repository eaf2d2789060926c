"""Memory stays flat whatever the file size: files are streamed, never loaded."""
from __future__ import annotations

import os
import sys

from benchmarks.measure import run_measured
from tests.conftest import PASSPHRASE, ROOT

GiB = 1024 ** 3


def _sparse(path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def test_chunking_a_large_file_keeps_rss_flat(tmp_path):
    big = tmp_path / "big.img"
    _sparse(big, 2 * GiB)
    code = (
        "import sys; from replicator.core.chunker import Chunker, gear_table;"
        "from replicator.core.params import DEFAULT_PARAMS;"
        "c = Chunker(DEFAULT_PARAMS, gear_table(bytes(32)));"
        f"n = sum(len(x) for x in c.chunks(open({str(big)!r}, 'rb', buffering=0)));"
        f"assert n == {2 * GiB}, n"
    )
    m = run_measured([sys.executable, "-c", code], {"PYTHONPATH": str(ROOT)})
    print(f"chunker peak RSS {m.peak_rss_mib:.0f} MiB")
    assert m.peak_rss_mib < 120, f"peak RSS {m.peak_rss_mib:.0f} MiB while chunking a 2 GiB file"


def test_sync_of_a_large_file_keeps_rss_flat(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _sparse(src / "disk.img", 2 * GiB)
    (src / "note.txt").write_text("hello\n")
    env = {"REPLICATOR_PASSPHRASE": PASSPHRASE, "PYTHONPATH": str(ROOT)}
    run_measured([sys.executable, "-m", "replicator", "init", str(tmp_path / "repo"), "--kdf-work", "14"], env)
    m = run_measured([sys.executable, "-m", "replicator", "sync", str(src), str(tmp_path / "repo"), "--json"], env)
    assert '"files": 2' in m.stdout
    print(f"sync peak RSS {m.peak_rss_mib:.0f} MiB")
    assert m.peak_rss_mib < 250, f"peak RSS {m.peak_rss_mib:.0f} MiB while syncing a 2 GiB file"
    assert os.path.getsize(src / "disk.img") == 2 * GiB

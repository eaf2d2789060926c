"""The sync progress display (cli/progress.py): a total to read, an ETA, an upload line; only on a terminal."""
from __future__ import annotations

import fcntl
import io
import os
import struct
import subprocess
import sys
import termios
import threading
import types

import pytest

from replicator.cli.progress import SyncProgress, bytes_to_read, format_duration, shows_progress
from replicator.sync.options import SyncOptions
from tests.conftest import PASSPHRASE, ROOT

MiB = 1024 * 1024


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_read_line_has_total_share_rate_and_eta():
    clock = Clock()
    p = SyncProgress(io.StringIO(), uploaded=lambda: 3 * MiB, clock=clock, width=120)
    p.set_total(100 * MiB)
    p.sample()
    clock.now += 10
    p(50 * MiB)
    p.sample()
    read, upload = p.lines(120)
    assert "50%" in read and "50.0 MiB of 100.0 MiB" in read
    assert "5.0 MiB/s" in read
    assert "ETA 0:00:10" in read and "0:00:10 elapsed" in read
    assert read.startswith("read   [") and "#" * 10 in read
    assert upload.startswith("upload 3.0 MiB")
    assert p.eta() == pytest.approx(10.0)


def test_before_the_count_ends_the_line_says_counting_and_no_eta():
    clock = Clock()
    p = SyncProgress(io.StringIO(), clock=clock)
    p.counting(300, 7 * MiB)
    p.sample()
    clock.now += 1
    p(MiB)
    p.sample()
    (read,) = p.lines(100)  # no upload line without an upload source (a dry run)
    assert "counting: 300 files, 7.0 MiB to read" in read
    assert "ETA" not in read and p.eta() is None


def test_eta_follows_the_recent_rate():
    """The rate is over the last seconds, not since the start: a slow start does not stretch the ETA forever."""
    clock = Clock()
    p = SyncProgress(io.StringIO(), clock=clock)
    p.set_total(1000 * MiB)
    for _ in range(30):  # 30 s at 1 MiB/s
        p(MiB)
        clock.now += 1
        p.sample()
    for _ in range(20):  # then 10 MiB/s
        p(10 * MiB)
        clock.now += 1
        p.sample()
    assert p.eta() == pytest.approx((1000 - 230) / 10, rel=0.05)


def test_upload_line_moves_when_nothing_is_read_any_more():
    clock, sent = Clock(), [0]
    p = SyncProgress(io.StringIO(), uploaded=lambda: sent[0], clock=clock)
    p.set_total(10 * MiB)
    p(10 * MiB)
    p.sample()
    lines = []
    for _ in range(3):
        clock.now += 1
        sent[0] += 4 * MiB
        p.sample()
        lines.append(p.lines(100)[1])
    assert lines == ["upload 4.0 MiB  4.0 MiB/s", "upload 8.0 MiB  4.0 MiB/s", "upload 12.0 MiB  4.0 MiB/s"]


def test_a_read_past_the_total_shows_full_not_more():
    p = SyncProgress(io.StringIO(), clock=Clock())
    p.set_total(MiB)
    p(2 * MiB)
    p.sample()
    assert "100%" in p.lines(100)[0] and "2.0 MiB of 2.0 MiB" in p.lines(100)[0]


@pytest.mark.parametrize("width", [20, 40, 80, 200])
def test_lines_never_wrap(width):
    p = SyncProgress(io.StringIO(), uploaded=lambda: 123456789, clock=Clock())
    p.set_total(10**12)
    p(10**11)
    p.sample()
    assert all(len(line) < width for line in p.lines(width))


def test_draw_rewrites_two_lines_in_place_and_erase_clears_them():
    out = io.StringIO()
    p = SyncProgress(out, uploaded=lambda: 0, clock=Clock(), width=80)
    p.draw()
    first = out.getvalue()
    assert first.count("\n") == 1 and "\x1b[1A" not in first
    p.draw()
    second = out.getvalue()[len(first):]
    assert second.startswith("\r\x1b[1A\x1b[K")  # back up to the first line before drawing again
    p.erase()
    assert out.getvalue().endswith("\r\x1b[K\r\x1b[1A\x1b[K")


def test_format_duration():
    assert format_duration(7) == "0:00:07"
    assert format_duration(3723) == "1:02:03"
    assert format_duration(3 * 86400 + 14706) == "3d 4:05:06"


@pytest.mark.parametrize("flags, tty, shown", [
    ({}, True, True), ({}, False, False), ({"quiet": True}, True, False), ({"json": True}, True, False),
])
def test_shown_only_on_a_terminal_without_quiet_or_json(flags, tty, shown):
    args = types.SimpleNamespace(**{"json": False, "quiet": False, **flags})
    assert shows_progress(args, Tty() if tty else io.StringIO()) is shown


def test_bytes_to_read_leaves_out_what_the_cache_holds_unchanged_and_excluded(tmp_path):
    from replicator.repo.repository import Repository
    from tests.conftest import sync_repo

    src = tmp_path / "src"
    (src / "skip").mkdir(parents=True)
    (src / "a").write_bytes(b"a" * 1000)
    (src / "b").write_bytes(b"b" * 3000)
    (src / "skip" / "c").write_bytes(b"c" * 5000)
    os.link(src / "b", src / "b-link")
    cache = str(tmp_path / "cache")
    options = SyncOptions("s", excludes=("skip",), cache_dir=cache)
    assert bytes_to_read(str(src), options, "0" * 64) == (2, 4000)  # no cache yet; the hard link read once
    repo = Repository.init(str(tmp_path / "repo"), PASSPHRASE.encode(), log2n=14)
    from replicator.sync.state import StateCache, state_path

    state = StateCache(state_path(cache, repo.id, "s"))
    sync_repo(str(src), repo, "s", state=state, excludes=("skip",))
    state.close()
    (src / "a").write_bytes(b"A" * 1500)  # changed: read again
    assert bytes_to_read(str(src), options, repo.id) == (1, 1500)
    no_cache = SyncOptions("s", excludes=("skip",), cache_dir=cache, use_state=False)
    assert bytes_to_read(str(src), no_cache, repo.id) == (2, 4500)
    stop = threading.Event()
    stop.set()
    assert bytes_to_read(str(src), options, repo.id, stop=stop) is None
    repo.close()


def _run_on_a_pty(args: list[str], env: dict) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal of 100 columns; :returns: (rc, stdout, what the terminal got)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    chunks: list[bytes] = []

    def reader() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        proc = subprocess.run([sys.executable, "-m", "replicator", *args], stdout=subprocess.PIPE, stderr=slave,
                              stdin=subprocess.DEVNULL, env=env, cwd=ROOT, timeout=300)
    finally:
        os.close(slave)
    t.join(timeout=10)
    os.close(master)
    return proc.returncode, proc.stdout.decode(), b"".join(chunks).decode(errors="replace")


def test_sync_on_a_terminal_shows_total_eta_and_upload(tmp_path):
    env = {**os.environ, "REPLICATOR_PASSPHRASE": PASSPHRASE, "REPLICATOR_CACHE_DIR": str(tmp_path / "cache")}
    repo, src = tmp_path / "repo", tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(48 * MiB))  # about a second of reading here: several redraws
    r = subprocess.run([sys.executable, "-m", "replicator", "init", str(repo), "--kdf-work", "14", "-q"], env=env,
                       cwd=ROOT, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rc, out, screen = _run_on_a_pty(["sync", str(src), str(repo), "--name", "s"], env)
    assert rc == 0, screen
    assert "committed" in out  # the summary on stdout, as without a terminal
    assert "of 48.0 MiB" in screen and "ETA" in screen
    assert "upload " in screen
    assert screen.endswith("\x1b[K")  # erased at the end
    rc, out, screen = _run_on_a_pty(["sync", str(src), str(repo), "--name", "s", "-q"], env)
    assert rc == 0 and screen == "" and out == ""

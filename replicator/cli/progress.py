"""The progress display of ``replicator sync`` on a terminal: bytes read of the bytes to read, with an
ETA, and bytes uploaded to the destination.

This module owns that display and the count that gives it a total.  It draws on stderr only, and only
when stderr is a terminal and neither --quiet nor --json is given (:func:`shows_progress`); it never
changes what a sync does or what it prints on stdout.

The total is counted by a walk of the source made beside the sync (a thread), with the selection of
the sync and the state cache's answers: a file the cache holds unchanged is not read, so it is not
counted.  That is the number the read bar moves towards, including on a run that reads 1% of the
tree.  The previous snapshot's total bytes (in the state cache, free) was the other choice; it is
the size of the tree, not of what is read, so on an incremental run the bar would stop at the share
that changed and the ETA would be off by the same factor, and a first run has none.  Cost of the
count (docs/OPERATIONS.md, measured on 20,000 files of 0.5-8 KiB, warm cache): 0.25 s of walk and
lookups, against 2.6 s for the first sync and 0.95 s for a second, unchanged one.

The engine calls the object with each chunk's length (on its thread: an addition, nothing more);
a drawing thread redraws both lines every ``interval`` seconds, so the upload line keeps moving
while the destination takes the last packs, when nothing is read any more.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from replicator.cli.common import human_bytes
from replicator.format.entry import KIND_FILE
from replicator.sync.options import SyncOptions
from replicator.sync.state import StateCache, state_path
from replicator.sync.walk import walk

INTERVAL = 0.25  # seconds between redraws
BAR_WIDTH = 24  # columns of the bar, when the terminal has room for it beside the numbers
RATE_WINDOW = 10.0  # seconds of history behind the rate (and so the ETA)
_UP_AND_CLEAR = "\r\x1b[1A\x1b[K"  # to the start of the line above, erased
_CLEAR = "\x1b[K"


def shows_progress(args, stream: TextIO | None = None) -> bool:
    """Whether a command draws progress: on a terminal (stderr), never with --json or --quiet."""
    if getattr(args, "json", False) or getattr(args, "quiet", False):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def format_duration(seconds: float) -> str:
    """``0:00:07``, ``1:02:03``, ``3d 4:05:06``."""
    s = max(0, int(seconds + 0.5))
    days, s = divmod(s, 86400)
    text = f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{days}d {text}" if days else text


class _Rate:
    """Bytes per second over the last RATE_WINDOW seconds (from the first sample while younger)."""

    def __init__(self) -> None:
        self._samples: list[tuple[float, int]] = []

    def add(self, now: float, count: int) -> None:
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW:
            self._samples.pop(0)

    def per_second(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None


class SyncProgress:
    """Two lines: ``read`` (bytes read of the total, rate, ETA) and ``upload`` (bytes the destination took).

    :param stream: where to draw (a terminal).
    :param uploaded: returns the bytes handed to the destination so far; None: no upload line (a dry run).
    :param clock: seconds, monotonic (tests pass their own).
    :param width: columns; None: the terminal's, at each redraw.
    """

    def __init__(self, stream: TextIO, *, uploaded: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.monotonic, width: int | None = None) -> None:
        self.stream = stream
        self._uploaded = uploaded
        self._clock = clock
        self._width = width
        self.read = 0  # bytes read so far (the engine's calls)
        self.total: int | None = None  # bytes the sync will read; None while counting
        self.counted_files = 0
        self.counted_bytes = 0
        self.sent = 0
        self._start = clock()
        self._read_rate, self._sent_rate = _Rate(), _Rate()
        self._drawn = 0  # lines on the screen now
        self._lock = threading.Lock()

    # --- fed by the engine and the count -----------------------------------------------
    def __call__(self, n: int) -> None:
        """The engine's progress callback: ``n`` more bytes read."""
        self.read += n

    def counting(self, files: int, size: int) -> None:
        self.counted_files, self.counted_bytes = files, size

    def set_total(self, size: int) -> None:
        self.total = size

    # --- what is shown -----------------------------------------------------------------
    def sample(self) -> None:
        """Take the current counts (read, uploaded) at the clock's time."""
        now = self._clock()
        if self._uploaded is not None:
            try:
                self.sent = int(self._uploaded())
            except (RuntimeError, KeyError, TypeError, ValueError):  # a stats dict being updated: next time
                pass
        self._read_rate.add(now, self.read)
        self._sent_rate.add(now, self.sent)

    def eta(self) -> float | None:
        """Seconds until the total is read at the current rate; None without a total or a rate."""
        if self.total is None:
            return None
        if self.read >= self.total:
            return 0.0
        rate = self._read_rate.per_second()
        return (self.total - self.read) / rate if rate else None

    def lines(self, width: int = 80) -> list[str]:
        elapsed = format_duration(self._clock() - self._start)
        rate = self._read_rate.per_second()
        speed = f"{human_bytes(rate)}/s" if rate is not None else "-/s"
        if self.total is None:
            head = f"read   {human_bytes(self.read)}  {speed}  {elapsed}"
            tail = f"  (counting: {self.counted_files} files, {human_bytes(self.counted_bytes)} to read)"
            read_line = head + tail
        else:
            total = max(self.total, self.read)  # a file that grew, or a chunk the cache wrongly promised
            share = self.read / total if total else 1.0
            eta = self.eta()
            left = format_duration(eta) if eta is not None else "-"
            text = (f" {share:4.0%}  {human_bytes(self.read)} of {human_bytes(total)}  {speed}  "
                    f"{elapsed} elapsed, ETA {left}")
            room = min(BAR_WIDTH, width - len("read   []") - len(text) - 1)  # the same width at each redraw
            bar = ""
            if room >= 10:
                done = int(room * share)
                bar = "[" + "#" * done + "." * (room - done) + "]"
            read_line = f"read   {bar}{text}"
        lines = [read_line]
        if self._uploaded is not None:
            up_rate = self._sent_rate.per_second()
            up_speed = f"{human_bytes(up_rate)}/s" if up_rate is not None else "-/s"
            lines.append(f"upload {human_bytes(self.sent)}  {up_speed}")
        return [line[: max(1, width - 1)] for line in lines]  # never wrap: the redraw moves up one line a line

    # --- drawing -----------------------------------------------------------------------
    def _columns(self) -> int:
        if self._width is not None:
            return self._width
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
        return columns if columns >= 20 else 80  # a terminal that tells no size says 0

    def draw(self) -> None:
        """Sample, then redraw the lines in place."""
        with self._lock:
            self.sample()
            lines = self.lines(self._columns())
            out = _UP_AND_CLEAR * (self._drawn - 1) + ("\r" + _CLEAR if self._drawn else "")
            out += ("\n" + _CLEAR).join(lines)
            self._drawn = len(lines)
            self.stream.write(out)
            self.stream.flush()

    def erase(self) -> None:
        """Remove the lines: the command's summary prints where they were."""
        with self._lock:
            if self._drawn:
                self.stream.write("\r" + _CLEAR + _UP_AND_CLEAR * (self._drawn - 1))
                self.stream.flush()
                self._drawn = 0


def bytes_to_read(src: str, options: SyncOptions, dest_id: str, *, stop: threading.Event | None = None,
                  on_count: Callable[[int, int], None] | None = None) -> tuple[int, int] | None:
    """Walk ``src`` as the sync will and count the files it will read: those the state cache does not
    hold unchanged (a hard link to a file counted before is not read again).

    :param dest_id: the destination repository's id (the state cache is kept per destination).
    :param stop: set: give up (the sync finished first).
    :param on_count: called now and then with the files and bytes counted so far.
    :returns: (files, bytes), or None when stopped.
    """
    state = None
    if options.use_state and options.cache_dir is not None:
        state = StateCache.open_read_only(state_path(options.cache_dir, dest_id, options.source))
    files = size = 0
    try:
        for item in walk(src, selection=options.selection(), on_error=lambda _path, _message: None):
            if stop is not None and stop.is_set():
                return None
            entry = item.entry
            if entry.kind != KIND_FILE or entry.link_to:
                continue
            if state is not None and state.lookup(entry.path, item.key) is not None:
                continue
            files += 1
            size += entry.size
            if on_count is not None and files % 256 == 0:
                on_count(files, size)
    finally:
        if state is not None:
            state.close()
    return files, size


def uploaded_bytes(dest) -> int:
    """What the destination took so far: bytes on the wire to ``replicator serve``, else pack bytes stored."""
    stats = dest.stats
    return int(stats.get("bytes_sent", stats.get("bytes_written", 0)))


@contextmanager
def sync_progress(args, src: str, dest, options: SyncOptions, *,
                  stream: TextIO | None = None) -> Iterator[SyncProgress | None]:
    """The progress of one sync of ``src`` to ``dest``, drawn while the block runs; None when not shown.

    The count of what is to be read runs in a thread beside the sync and gives the read line its
    total and ETA when it finishes.
    """
    stream = sys.stderr if stream is None else stream
    if not shows_progress(args, stream):
        yield None
        return
    progress = SyncProgress(stream, uploaded=None if options.dry_run else (lambda: uploaded_bytes(dest)))
    done = threading.Event()

    def count() -> None:
        try:
            result = bytes_to_read(src, options, dest.id, stop=done, on_count=progress.counting)
        except Exception:  # noqa: BLE001 - only the display's total: the sync reports its own errors
            return
        if result is not None:
            progress.counting(*result)
            progress.set_total(result[1])

    def redraw() -> None:
        while not done.wait(INTERVAL):
            progress.draw()

    threads = [threading.Thread(target=count, name="progress-count", daemon=True),
               threading.Thread(target=redraw, name="progress-draw", daemon=True)]
    for t in threads:
        t.start()
    try:
        progress.draw()
        yield progress
    finally:
        done.set()
        for t in threads:
            t.join(timeout=5)
        progress.erase()

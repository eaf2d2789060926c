"""Run a command and measure its wall time and peak memory.

Shared by the benchmarks and the memory tests.  Peak RSS is VmHWM polled
from /proc every 10 ms (it only grows): rusage's ru_maxrss is not used, as for
a child forked from a large test process it counts the parent's pages from
before exec.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass


@dataclass
class Measured:
    seconds: float
    peak_rss_mib: float
    stdout: str
    stderr: str


def hwm_kib(pid: int) -> int:
    """VmHWM (peak RSS of the process's current image) from /proc, 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(cmd: list[str], env: dict | None = None) -> Measured:
    """Run a command to completion. :returns: wall time, peak RSS and output.

    :raises RuntimeError: when it exits with a code other than 0 or 1 (1: replicator finished with warnings).
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                            stdin=subprocess.DEVNULL)
    out: dict[str, bytes] = {}

    def drain(name: str, stream) -> None:  # so the child never blocks on a full pipe
        out[name] = stream.read()

    threads = [threading.Thread(target=drain, args=(n, s)) for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for t in threads:
        t.start()
    peak = 0
    while proc.poll() is None:
        peak = max(peak, hwm_kib(proc.pid))
        time.sleep(0.01)
    seconds = time.perf_counter() - t0
    for t in threads:
        t.join()
    stdout = out.get("out", b"").decode(errors="replace")
    stderr = out.get("err", b"").decode(errors="replace")
    if proc.returncode not in (0, 1):  # 1: replicator finished with warnings
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {stderr[-500:]}")
    return Measured(seconds, peak / 1024, stdout, stderr)

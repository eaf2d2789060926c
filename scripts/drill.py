"""The failover drill (docs/OPERATIONS.md "Failover and failback"), end to end on one machine.

Two sites, each in its own network namespace joined by a veth pair shaped like a WAN link (``tc tbf``)
when the machine allows it (root and ``ip netns``), else both on loopback.  Amiens runs ``replicator
serve`` with a live mirror; Toulouse writes and syncs to it.  Toulouse dies mid-sync (kill -9), Amiens
is promoted and serves its live copy read-write, applications write there, Toulouse comes back and
its sync is refused (also with its cache lost), fails back (restore from ssh://), Amiens hands the
role back and Toulouse takes it, Amiens is refused in turn, and at the end both sites must hold
the same tree with every write that reached Amiens.  Prints the measured RPO (writes made at
Toulouse that had not reached Amiens when it died, and how old the oldest of them was) and RTO
(from Toulouse's death to Amiens promoted, serving the data read-write).

Usage::

    python scripts/drill.py [--quick] [--json] [--keep DIR] [--network auto|netns|loopback]

Everything lives in a temporary directory and every process it starts is stopped; the namespaces it
creates are deleted.  Traffic stays on 127.0.0.1 or on the private veth link between the two
namespaces (10.231.7.0/30), which no other interface reaches.  ``--quick`` is the size the test
suite runs (tests/integration/test_drill.py).
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from replicator.transport.ssh import generate_key  # noqa: E402

PASSPHRASE = "drill passphrase, not for production"
NAME = "hospitals"


class Sites:
    """Where each site's processes run: two network namespaces with a veth link, or plain loopback."""

    SUBNET = "10.231.7"
    WAN_RATE = "200mbit"  # tbf on both ends: a dedicated inter-datacenter link, scaled to this machine

    def __init__(self, network: str) -> None:
        self.kind = "loopback"
        self.amiens_addr = self.toulouse_addr = "127.0.0.1"
        self._ns = (f"rpl-drill-t{os.getpid()}", f"rpl-drill-a{os.getpid()}")
        if network == "loopback":
            return
        problem = self._set_up()
        if problem is None:
            self.kind = "netns"
            self.toulouse_addr, self.amiens_addr = f"{self.SUBNET}.1", f"{self.SUBNET}.2"
        elif network == "netns":
            raise SystemExit(f"drill: cannot create network namespaces: {problem}")
        else:
            print(f"drill: network namespaces unavailable ({problem}); both sites on loopback", file=sys.stderr)

    def _set_up(self) -> str | None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            return "needs root and iproute2"
        t, a = self._ns
        vt, va = f"vt{os.getpid()}"[:15], f"va{os.getpid()}"[:15]
        steps = [["ip", "netns", "add", t], ["ip", "netns", "add", a],
                 ["ip", "link", "add", vt, "type", "veth", "peer", "name", va],
                 ["ip", "link", "set", vt, "netns", t], ["ip", "link", "set", va, "netns", a],
                 ["ip", "-n", t, "addr", "add", f"{self.SUBNET}.1/30", "dev", vt],
                 ["ip", "-n", a, "addr", "add", f"{self.SUBNET}.2/30", "dev", va],
                 ["ip", "-n", t, "link", "set", vt, "up"], ["ip", "-n", a, "link", "set", va, "up"],
                 ["ip", "-n", t, "link", "set", "lo", "up"], ["ip", "-n", a, "link", "set", "lo", "up"]]
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                self.clean_up()
                return f"{' '.join(cmd)}: {r.stderr.strip()}"
        for ns, dev in ((t, vt), (a, va)):  # shaping is a nicety: a kernel without tbf still runs the drill
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                            self.WAN_RATE, "burst", "256kb", "latency", "50ms"], capture_output=True)
        return None

    def at(self, site: str) -> list[str]:
        """The prefix that runs a command at ``site`` ("toulouse" or "amiens")."""
        if self.kind == "loopback":
            return []
        return ["ip", "netns", "exec", self._ns[0] if site == "toulouse" else self._ns[1]]

    def clean_up(self) -> None:
        for ns in self._ns:  # deleting a namespace deletes its end of the veth pair, and so the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class Drill:
    def __init__(self, work: Path, quick: bool, sites: Sites | None = None) -> None:
        self.work = work
        self.quick = quick
        self.sites = sites or Sites("loopback")
        self.env = {**os.environ, "REPLICATOR_PASSPHRASE": PASSPHRASE}
        self.toulouse = work / "toulouse" / "data"
        self.amiens_repo = work / "amiens" / "repo"
        self.live = work / "amiens" / "live"
        self.port = _free_port()
        self.serve: subprocess.Popen | None = None
        self.steps: list[str] = []

    # --- plumbing ---------------------------------------------------------------------------
    def cli(self, *args: str, cache: str = "toulouse", check: bool = True, **kw) -> subprocess.CompletedProcess:
        env = {**self.env, "REPLICATOR_CACHE_DIR": str(self.work / cache / "cache")}
        where = self.sites.at("amiens" if cache.startswith("amiens") else "toulouse")
        r = subprocess.run([*where, sys.executable, "-m", "replicator", *args], capture_output=True, text=True, env=env,
                           cwd=ROOT, stdin=subprocess.DEVNULL, timeout=300, **kw)
        if check and r.returncode != 0:
            raise SystemExit(f"drill: replicator {args[0]} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def ssh(self, *args: str) -> list[str]:
        return [*args, "--identity", str(self.work / "toulouse" / "key"), "--known-hosts",
                str(self.work / "toulouse" / "known_hosts")]

    def url(self) -> str:
        return f"ssh://replicator@{self.sites.amiens_addr}:{self.port}/{NAME}"

    def say(self, text: str) -> None:
        self.steps.append(text)

    def start_serve(self) -> None:
        log = open(self.work / "amiens" / "serve.log", "ab")
        self.serve = subprocess.Popen(
            [*self.sites.at("amiens"), sys.executable, "-m", "replicator", "serve", "--listen",
             f"{self.sites.amiens_addr}:{self.port}", "--repo",
             f"{NAME}={self.amiens_repo}", "--host-key", str(self.work / "amiens" / "host_key"),
             "--authorized-keys", str(self.work / "amiens" / "authorized_keys"), "--mirror", f"{NAME}={self.live}"],
            cwd=ROOT, env={**self.env, "REPLICATOR_CACHE_DIR": str(self.work / "amiens" / "cache")},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        # Reached from Toulouse's side, as the syncs will reach it.
        probe = ("import socket, sys, time\n"
                 "deadline = time.monotonic() + 20\n"
                 "while time.monotonic() < deadline:\n"
                 "    try:\n"
                 f"        socket.create_connection(({self.sites.amiens_addr!r}, {self.port}), 0.2).close()\n"
                 "        sys.exit(0)\n"
                 "    except OSError:\n"
                 "        time.sleep(0.05)\n"
                 "sys.exit(1)\n")
        if subprocess.run([*self.sites.at("toulouse"), sys.executable, "-c", probe]).returncode != 0:
            raise SystemExit("drill: replicator serve did not start")

    def stop_serve(self) -> None:
        if self.serve is not None and self.serve.poll() is None:
            self.serve.send_signal(signal.SIGTERM)
            try:
                self.serve.wait(10)
            except subprocess.TimeoutExpired:
                self.serve.kill()
                self.serve.wait()

    # --- the runbook --------------------------------------------------------------------------
    def set_up(self) -> None:
        for d in (self.toulouse, self.work / "amiens"):
            d.mkdir(parents=True)
        rnd = random.Random(2026)
        for i in range(20 if self.quick else 200):
            (self.toulouse / f"record-{i:04d}.hl7").write_bytes(rnd.randbytes(rnd.randint(200, 20_000)))
        (self.toulouse / "imaging").mkdir()
        (self.toulouse / "imaging" / "ct.dcm").write_bytes(rnd.randbytes((1 if self.quick else 16) << 20))
        self.cli("init", str(self.amiens_repo), "--kdf-work", "14", "-q")
        pub = generate_key(str(self.work / "toulouse" / "key"), "toulouse")
        generate_key(str(self.work / "amiens" / "host_key"), "amiens")
        (self.work / "amiens" / "authorized_keys").write_text(f'replicator-repos="{NAME}:rw" {pub.strip()}\n')
        host_pub = (self.work / "amiens" / "host_key.pub").read_text().split()
        (self.work / "toulouse" / "known_hosts").write_text(
            f"[{self.sites.amiens_addr}]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.start_serve()

    def period_one(self) -> tuple[dict[str, float], float]:
        """Toulouse writes and syncs until it dies mid-sync.  :returns: (write times by file, time of death)."""
        written: dict[str, float] = {}
        stop = threading.Event()

        def application() -> None:
            i = 0
            while not stop.is_set():
                name = f"admission-t-{i:04d}.hl7"
                (self.toulouse / name).write_text(f"MSH|^~\\&|ADT|TOULOUSE|{i}\n")
                written[name] = time.time()
                i += 1
                stop.wait(0.05)

        app = threading.Thread(target=application, daemon=True)
        app.start()
        for _ in range(2 if self.quick else 4):
            self.cli(*self.ssh("sync", str(self.toulouse), self.url(), "--name", NAME, "-q"))
        # One more sync, killed while it uploads: the site goes dark.
        (self.toulouse / "imaging" / "mri.dcm").write_bytes(os.urandom((2 if self.quick else 32) << 20))
        env = {**self.env, "REPLICATOR_CACHE_DIR": str(self.work / "toulouse" / "cache")}
        sync = self.ssh("sync", str(self.toulouse), self.url(), "--name", NAME, "-q")
        dying = subprocess.Popen([*self.sites.at("toulouse"), sys.executable, "-m", "replicator", *sync],
                                 cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        time.sleep(0.5 if self.quick else 1.5)
        dying.kill()
        stop.set()
        died = time.time()
        dying.wait()
        app.join()
        self.say(f"Toulouse died mid-sync (kill -9) after {len(written)} application writes")
        return written, died

    def wait_for_mirror(self, timeout: float = 30) -> None:
        """Until the live copy holds what the latest snapshot at Amiens holds."""
        deadline = time.monotonic() + timeout
        latest = self.work / "amiens" / "latest"
        shutil.rmtree(latest, ignore_errors=True)
        self.cli("restore", str(self.amiens_repo), str(latest), "-q", cache="amiens")
        while time.monotonic() < deadline:
            if self.live.exists() and _same_tree(latest, self.live):
                return
            time.sleep(0.2)
        raise SystemExit("drill: the live mirror did not catch up with the latest snapshot")

    def run(self) -> dict:
        self.set_up()
        written, died = self.period_one()
        self.wait_for_mirror()
        lost = sorted(n for n in written if not (self.live / n).exists())
        rpo_seconds = died - min(written[n] for n in lost) if lost else 0.0

        # Failover: Amiens promoted, serving its live copy read-write.
        self.cli("promote", str(self.live), str(self.amiens_repo), "--name", NAME, "-q", cache="amiens")
        rto_seconds = time.time() - died
        self.say(f"Amiens promoted {rto_seconds:.1f} s after Toulouse died")
        for i in range(5):
            (self.live / f"admission-a-{i:04d}.hl7").write_text(f"MSH|^~\\&|ADT|AMIENS|{i}\n")
        self.cli("sync", str(self.live), str(self.amiens_repo), "--name", NAME, "-q", cache="amiens")

        # Toulouse comes back: its daemon's first sync is refused, nothing committed.
        refused = self.cli(*self.ssh("sync", str(self.toulouse), self.url(), "--name", NAME, "-q"), check=False)
        fenced = refused.returncode == 8 and "another site writes" in refused.stderr
        self.say("Toulouse's stale sync refused (exit 8)" if fenced else
                 f"Toulouse's stale sync was NOT refused: exit {refused.returncode}")
        # Even with its cache lost (a reinstall): Amiens's repository holds the fence itself.
        amnesic = self.cli(*self.ssh("sync", str(self.toulouse), self.url(), "--name", NAME, "-q"), check=False,
                           cache="toulouse-reinstalled")
        fenced_at_receiver = amnesic.returncode == 8 and "took over writing" in amnesic.stderr
        self.say("Toulouse's stale sync with a lost cache refused by Amiens (exit 8)" if fenced_at_receiver else
                 f"Toulouse's stale sync with a lost cache was NOT refused: exit {amnesic.returncode}")
        fenced = fenced and fenced_at_receiver

        # Failback (the runbook's steps): a copy of Toulouse's tree brought to what Amiens holds, its own
        # files the seeds (only the chunks they lack cross the link), swapped in; then the role back.
        fresh = self.toulouse.with_name("data.new")
        shutil.copytree(self.toulouse, fresh, symlinks=True)  # cp -a: the old tree stays until the swap
        done = self.cli(*self.ssh("restore", self.url(), str(fresh), "--delta", "--delete", "--json"))
        failback = json.loads(done.stdout)
        self.say(f"failback: {failback['kept']} files kept, {failback['seeded_bytes']} bytes taken from Toulouse's own "
                 f"files, {failback['fetched_bytes']} fetched, {failback['deleted']} removed")
        self.toulouse.rename(self.toulouse.with_name("data.old"))
        fresh.rename(self.toulouse)
        self.cli("handback", str(self.amiens_repo), "--name", NAME, "-q", cache="amiens")
        self.cli(*self.ssh("sync", str(self.toulouse), self.url(), "--name", NAME, "--reset-lineage", "-q"))
        back = self.cli("sync", str(self.live), str(self.amiens_repo), "--name", NAME, "-q", cache="amiens",
                        check=False)
        amiens_fenced = back.returncode == 8
        self.say("roles handed back; Amiens's sync refused in turn" if amiens_fenced else
                 f"Amiens's sync after failback was NOT refused: exit {back.returncode}")

        self.wait_for_mirror()
        identical = _same_tree(self.toulouse, self.live)
        every_write = all((self.toulouse / n).exists() for n in written if n not in lost) and \
            all((self.toulouse / f"admission-a-{i:04d}.hl7").exists() for i in range(5))
        return {"rpo_writes_lost": len(lost), "rpo_seconds": round(rpo_seconds, 2), "rto_seconds": round(rto_seconds, 2),
                "old_primary_fenced": fenced, "secondary_fenced_after_failback": amiens_fenced,
                "sites_identical": identical, "every_write_kept": every_write, "network": self.sites.kind,
                "failback_fetched_bytes": failback["fetched_bytes"], "failback_seeded_bytes": failback["seeded_bytes"],
                "failback_kept_files": failback["kept"], "failback_bytes": failback["bytes"],
                "steps": self.steps, "ok": fenced and amiens_fenced and identical and every_write}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _match, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small corpus (what the test suite runs)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and leave it (default: a temporary directory)")
    parser.add_argument("--network", choices=("auto", "netns", "loopback"), default="auto",
                        help="each site in its own network namespace (netns; auto: when the machine allows it)")
    args = parser.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="replicator-drill-"))
    sites = Sites(args.network)
    drill = Drill(work, args.quick, sites)
    try:
        result = drill.run()
    finally:
        drill.stop_serve()
        sites.clean_up()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for step in result["steps"]:
            print(f"  {step}")
        print(f"network: {result['network']}")
        print(f"RPO: {result['rpo_writes_lost']} application writes not at Amiens when Toulouse died "
              f"(the oldest {result['rpo_seconds']} s old); RTO: {result['rto_seconds']} s to Amiens serving "
              f"read-write; sites identical: {result['sites_identical']}; drill {'passed' if result['ok'] else 'FAILED'}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

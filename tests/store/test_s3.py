"""S3Storage against a real SeaweedFS server on loopback: what the conformance suite does not cover."""
from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from replicator.errors import StorageError
from replicator.store.s3 import S3Settings, S3Storage


@pytest.fixture
def s3(s3_settings):
    store = S3Storage(s3_settings)
    yield store
    store.close()


def test_list_pages_through_many_pages(s3):
    s3.page_size = 3
    names = {f"data/{i:02x}/{i:064x}" for i in range(10)}
    for n in names:
        s3.put(n, b"x")
    assert sorted(s3.list("data/")) == sorted(names)


def test_prefix_isolates_repositories(seaweed, s3_settings):
    from dataclasses import replace

    a = S3Storage(s3_settings)
    b = S3Storage(replace(s3_settings, prefix=s3_settings.prefix + "-other"))
    a.put("config", b"a")
    b.put("config", b"b")
    assert a.get("config") == b"a" and b.get("config") == b"b"
    assert list(a.list("")) == ["config"]
    assert a.location == f"s3://{s3_settings.bucket}/{s3_settings.prefix}"


def test_concurrent_puts_of_one_name_one_wins(s3):
    """If-None-Match: * is honoured by the server: of racing writers exactly one creates the object."""
    results: list[str] = []

    def put(i: int) -> None:
        try:
            s3.put("snapshots/race", b"%d" % i)
            results.append("ok")
        except FileExistsError:
            results.append("exists")

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["exists"] * 7 + ["ok"]


KILLED_PUT = r"""
import http.client, sys, time
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conn = http.client.HTTPConnection(host, port)
conn.putrequest("PUT", path)
conn.putheader("Content-Length", str(8 << 20))
conn.endheaders()
conn.send(b"x" * (1 << 20))  # one eighth of the announced body, then the process dies
print("started", flush=True)
time.sleep(60)
"""


def test_killed_put_leaves_no_object(seaweed, s3):
    """A PutObject cut off mid-body (the sending process killed) publishes nothing under the name."""
    path = f"/{s3.bucket}/{s3.settings.prefix}/data/00/torn"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PUT, "127.0.0.1", str(seaweed.s3_port), path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"started", proc.stderr.read() if proc.stderr else ""
    proc.kill()
    proc.wait()
    assert not s3.exists("data/00/torn")
    assert list(s3.list("data/")) == []


def test_unreachable_endpoint_is_a_one_line_storage_error():
    store = S3Storage(S3Settings(bucket="nobucket", endpoint_url="http://127.0.0.1:9", region="us-east-1",
                                 access_key="a", secret_key="b", path_style=True, max_attempts=1))
    with pytest.raises(StorageError) as info:
        store.get("config")
    assert "\n" not in str(info.value) and "config" in str(info.value)
    store.close()


def test_settings_without_prefix():
    s = S3Settings(bucket="b1x")
    assert s.location == "s3://b1x"

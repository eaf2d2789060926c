"""S3Storage rides out a server's passing failures (5xx, throttling) and says in one line when they last.

A small HTTP server on loopback plays the object store: it answers the first requests with an error, then
serves them.  botocore's "standard" retries (backoff with jitter, ``max_attempts`` tries in all) must absorb
the errors without a duplicate or a partial object, and a server that keeps failing must give one
StorageError naming the object and the server's code, after exactly ``max_attempts`` tries.
"""
from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from replicator.errors import StorageError
from replicator.store.s3 import S3Settings, S3Storage

ERROR_BODY = "<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"


class _Store(http.server.BaseHTTPRequestHandler):
    """PUT, GET and HEAD of one bucket in memory; the first ``server.failures`` requests get ``server.status``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *_args) -> None:  # keep the test output clean
        pass

    def _fail(self) -> bool:
        srv = self.server
        srv.requests.append(self.command)  # type: ignore[attr-defined]
        if srv.failures <= 0:  # type: ignore[attr-defined]
            return False
        srv.failures -= 1  # type: ignore[attr-defined]
        code, message = {500: ("InternalError", "volume server unreachable"),
                         503: ("SlowDown", "reduce your request rate")}[srv.status]  # type: ignore[attr-defined]
        body = ERROR_BODY.format(code=code, message=message).encode()
        self.send_response(srv.status)  # type: ignore[attr-defined]
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return True

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self._fail():
            return
        self.server.objects[self.path] = body  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("ETag", '"0"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        if self._fail():
            return
        data = self.server.objects.get(self.path.split("?")[0])  # type: ignore[attr-defined]
        if data is None:
            body = ERROR_BODY.format(code="NoSuchKey", message="no such key").encode()
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", '"0"')
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Store)
    srv.objects, srv.requests, srv.failures, srv.status = {}, [], 0, 500  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _storage(srv, attempts: int) -> S3Storage:
    return S3Storage(S3Settings("bucket", "repo", endpoint_url=f"http://127.0.0.1:{srv.server_address[1]}",
                                region="us-east-1", access_key="k", secret_key="s", path_style=True,
                                max_attempts=attempts))


@pytest.mark.parametrize("status", [500, 503])
def test_passing_server_errors_are_retried(server, status):
    server.status, server.failures = status, 2
    store = _storage(server, attempts=4)
    store.put("snapshots/" + "ab" * 32, b"sealed snapshot", overwrite=True)
    assert server.requests == ["PUT"] * 3  # two refused, the third stored
    assert server.objects == {"/bucket/repo/snapshots/" + "ab" * 32: b"sealed snapshot"}
    server.failures = 2
    assert store.get("snapshots/" + "ab" * 32) == b"sealed snapshot"
    assert server.requests[3:] == ["GET"] * 3


def test_a_server_that_keeps_failing_gives_one_line_after_max_attempts(server):
    server.status, server.failures = 500, 100
    store = _storage(server, attempts=3)
    with pytest.raises(StorageError) as exc:
        store.put("snapshots/" + "cd" * 32, b"sealed snapshot", overwrite=True)
    message = str(exc.value)
    assert "\n" not in message and "snapshots/" + "cd" * 32 in message and "InternalError" in message, message
    assert server.requests == ["PUT"] * 3
    assert server.objects == {}

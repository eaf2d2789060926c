"""Storage in an S3-compatible object store (AWS S3, Ceph RGW, MinIO, SeaweedFS).

The one importer of botocore.  Every repository object is one S3 object under
``PREFIX/`` in the bucket, named exactly as in a local repository (FORMAT.md,
"Object storage layout").  Nothing relies on rename:

* ``put`` is a single PutObject: S3 publishes an object whole or not at all, so
  a killed put leaves no object and no temporary.  Without ``overwrite`` the
  request carries ``If-None-Match: *`` and the server refuses an existing name
  (412), which becomes FileExistsError.  botocore adds a payload checksum that
  the server verifies before storing.
* ``get`` with a range sends a Range header (restore reads one blob of a pack).
* ``list`` pages through ListObjectsV2; memory is one page, not the listing.
* ``size`` and ``exists`` are HEAD requests.

No multipart upload is started (objects are at most a pack), so
``clean_temporaries`` only aborts incomplete multipart uploads under the
prefix that another tool may have left, and returns how many.

This module never reads the environment: the caller passes an ``S3Settings``.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import botocore.config
import botocore.exceptions
import botocore.session

from replicator.errors import ObjectNotFound, StorageError
from replicator.store.storage import check_name

MAX_ATTEMPTS = 10  # botocore "standard" retries: backoff with jitter on 5xx, throttling and connection errors
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0
LIST_PAGE = 1000  # keys per ListObjectsV2 page (the S3 maximum)
POOL_CONNECTIONS = 32  # the writer and the restore readers share one client across threads
_EXISTS_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


@dataclass(frozen=True)
class S3Settings:
    """Where and how to reach the bucket.  Credentials left None fall to botocore's own chain
    (AWS_* variables, ~/.aws/credentials, instance roles)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    verify: bool | str = True  # False, True or the path of a CA bundle
    path_style: bool = False  # MinIO, SeaweedFS and most RGW deployments need path-style addressing
    max_attempts: int = MAX_ATTEMPTS  # per request, the first try included

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: botocore.exceptions.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _error(name: str, exc: Exception) -> StorageError:
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        return StorageError(f"{name}: S3 {err.get('Code', '?')}: {err.get('Message', '') or exc}")
    return StorageError(f"{name}: {exc}")


class S3Storage:
    def __init__(self, settings: S3Settings, *, root: str = "", client: object | None = None) -> None:
        self.settings = settings
        self.root = root  # the local cache directory for the index and lock file (store/location.py)
        self.bucket = settings.bucket
        self.location = settings.location
        prefix = settings.prefix.strip("/")
        if prefix:
            check_name(prefix)
        self._base = prefix + "/" if prefix else ""
        self._client = client if client is not None else self._make_client(settings)
        self.page_size = LIST_PAGE

    @staticmethod
    def _make_client(s: S3Settings) -> object:
        config = botocore.config.Config(
            retries={"total_max_attempts": s.max_attempts, "mode": "standard"},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            max_pool_connections=POOL_CONNECTIONS,
            s3={"addressing_style": "path" if s.path_style else "auto"},
        )
        session = botocore.session.get_session()
        return session.create_client(
            "s3", endpoint_url=s.endpoint_url, region_name=s.region, verify=s.verify,
            aws_access_key_id=s.access_key, aws_secret_access_key=s.secret_key,
            aws_session_token=s.session_token, config=config,
        )

    def _key(self, name: str) -> str:
        return self._base + check_name(name)

    def put(self, name: str, data: bytes | bytearray | memoryview, *, overwrite: bool = False) -> None:
        key = self._key(name)
        args = {"Bucket": self.bucket, "Key": key, "Body": bytes(data)}
        if not overwrite:
            args["IfNoneMatch"] = "*"
        try:
            self._client.put_object(**args)  # type: ignore[attr-defined]
        except botocore.exceptions.ClientError as exc:
            if not overwrite and (_code(exc) in _EXISTS_CODES or _status(exc) == 412):
                raise FileExistsError(name) from None
            raise _error(name, exc) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise _error(name, exc) from None

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        key = self._key(name)
        if length == 0:
            self.size(name)  # a missing object is an error even for an empty range
            return b""
        args = {"Bucket": self.bucket, "Key": key}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            args["Range"] = f"bytes={offset}-{end}"
        try:
            resp = self._client.get_object(**args)  # type: ignore[attr-defined]
            with resp["Body"] as body:
                return bytes(body.read())
        except botocore.exceptions.ClientError as exc:
            code = _code(exc)
            if code in _MISSING_CODES:
                raise ObjectNotFound(name) from None
            if code == "InvalidRange" or _status(exc) == 416:
                return b""  # the range starts at or past the end of an existing object
            raise _error(name, exc) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise _error(name, exc) from None

    def _head(self, name: str) -> dict | None:
        try:
            return self._client.head_object(Bucket=self.bucket, Key=self._key(name))  # type: ignore[attr-defined]
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _MISSING_CODES or _status(exc) == 404:
                return None
            raise _error(name, exc) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise _error(name, exc) from None

    def size(self, name: str) -> int:
        head = self._head(name)
        if head is None:
            raise ObjectNotFound(name)
        return int(head["ContentLength"])

    def exists(self, name: str) -> bool:
        return self._head(name) is not None

    def list(self, prefix: str) -> Iterator[str]:
        folder = prefix.strip("/")
        if folder:
            check_name(folder)
        start = self._base + (folder + "/" if folder else "")
        paginator = self._client.get_paginator("list_objects_v2")  # type: ignore[attr-defined]
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=start,
                                           PaginationConfig={"PageSize": self.page_size}):
                for obj in page.get("Contents", ()):
                    yield obj["Key"][len(self._base):]
        except botocore.exceptions.ClientError as exc:
            raise _error(prefix or "/", exc) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise _error(prefix or "/", exc) from None

    def delete(self, name: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(name))  # type: ignore[attr-defined]
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _MISSING_CODES:
                return
            raise _error(name, exc) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise _error(name, exc) from None

    def clean_temporaries(self) -> int:
        """Abort incomplete multipart uploads under the prefix. :returns: how many."""
        aborted = 0
        paginator = self._client.get_paginator("list_multipart_uploads")  # type: ignore[attr-defined]
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._base):
                for up in page.get("Uploads", ()):
                    self._client.abort_multipart_upload(  # type: ignore[attr-defined]
                        Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                    aborted += 1
        except botocore.exceptions.ClientError as exc:
            raise _error("multipart uploads", exc) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise _error("multipart uploads", exc) from None
        return aborted

    def close(self) -> None:
        """Close the client's pooled connections (never raises; later requests reconnect)."""
        try:
            self._client.close()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - close never raises, whatever the pool reports
            pass

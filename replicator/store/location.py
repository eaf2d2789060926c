"""Where a repository's storage is: a local directory or ``s3://BUCKET/PREFIX``; the one storage-opening factory.

``open_location(target)`` returns the Storage for a path or an ``s3://`` URL, and ``parse_s3_url`` is the one
parser of such URLs (transport/url.py asks ``is_object_url`` so it never takes one for a remote).

An S3 repository's index and writer lock cannot live in the bucket: its ``root`` (where
repo/repository.py and repo/local_sink.py put ``index.sqlite`` and the lock file) is a local cache
directory, ``CACHE_ROOT/s3/<sha256 of the location, 16 hex>``.

Settings come from the environment (read here, the one exception to "only cli/daemon read env", as
botocore's own credential chain reads AWS_* anyway; the caller may pass a mapping instead):
REPLICATOR_S3_ENDPOINT, REPLICATOR_S3_REGION, REPLICATOR_S3_ACCESS_KEY_ID, REPLICATOR_S3_SECRET_ACCESS_KEY,
REPLICATOR_S3_CREDENTIALS_FILE (a file of two lines: access key id, secret key), REPLICATOR_S3_CA_BUNDLE,
REPLICATOR_S3_VERIFY=0 (no TLS verification), REPLICATOR_S3_PATH_STYLE=1.  Unset credentials fall to
botocore's chain (AWS_ACCESS_KEY_ID, ~/.aws/credentials, instance roles).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

from replicator.errors import UsageError
from replicator.store.storage import check_name

S3_SCHEME = "s3://"
ENV = "REPLICATOR_S3_"
CACHE_ENV = "REPLICATOR_CACHE_DIR"


def is_object_url(target: str) -> bool:
    return target.startswith(S3_SCHEME)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` -> (bucket, prefix); the prefix may be empty.  :raises UsageError:"""
    rest = url[len(S3_SCHEME):] if is_object_url(url) else ""
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    bad = not (3 <= len(bucket) <= 63) or not all(c.islower() or c.isdigit() or c in ".-" for c in bucket)
    if not bad and prefix:
        try:
            check_name(prefix)
        except ValueError:
            bad = True
    if bad:
        raise UsageError(f"bad storage URL {url!r}: expected s3://BUCKET/PREFIX (bucket of 3-63 characters "
                         f"a-z 0-9 . -; prefix of a-z 0-9 . _ - components separated by /)")
    return bucket, prefix


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(ENV + name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"{ENV}{name}={value!r}: expected 1 or 0")


def cache_dir_for(location: str, cache_root: str) -> str:
    return os.path.join(cache_root, "s3", hashlib.sha256(location.encode()).hexdigest()[:16])


def default_cache_root(env: Mapping[str, str]) -> str:
    """$REPLICATOR_CACHE_DIR, else $XDG_CACHE_HOME/replicator, else ~/.cache/replicator (also the CLI's default)."""
    if env.get(CACHE_ENV):
        return env[CACHE_ENV]
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "replicator")


def s3_settings(url: str, env: Mapping[str, str]):
    """The S3Settings of ``url`` with the REPLICATOR_S3_* variables of ``env``.  :raises UsageError:"""
    from replicator.store.s3 import S3Settings

    bucket, prefix = parse_s3_url(url)
    access, secret = env.get(ENV + "ACCESS_KEY_ID") or None, env.get(ENV + "SECRET_ACCESS_KEY") or None
    cred_file = env.get(ENV + "CREDENTIALS_FILE")
    if cred_file:
        try:
            with open(cred_file, encoding="utf-8") as f:
                lines = [line.strip() for line in f if line.strip()]
        except OSError as exc:
            raise UsageError(f"{ENV}CREDENTIALS_FILE {cred_file}: {exc.strerror or exc}") from None
        if len(lines) != 2:
            raise UsageError(f"{ENV}CREDENTIALS_FILE {cred_file}: expected two lines, access key id and secret key")
        access, secret = lines
    verify: bool | str = _flag(env, "VERIFY", True)
    if env.get(ENV + "CA_BUNDLE"):
        verify = env[ENV + "CA_BUNDLE"]
    return S3Settings(bucket=bucket, prefix=prefix, endpoint_url=env.get(ENV + "ENDPOINT") or None,
                      region=env.get(ENV + "REGION") or None, access_key=access, secret_key=secret,
                      verify=verify, path_style=_flag(env, "PATH_STYLE", False))


def open_location(target: str, env: Mapping[str, str] | None = None):
    """The Storage at ``target``: a LocalStorage for a path, an S3Storage for ``s3://``."""
    if not is_object_url(target):
        from replicator.store.local import LocalStorage

        return LocalStorage(target)
    from replicator.store.s3 import S3Storage

    env = os.environ if env is None else env
    settings = s3_settings(target, env)
    root = cache_dir_for(settings.location, default_cache_root(env))
    os.makedirs(root, mode=0o700, exist_ok=True)
    return S3Storage(settings, root=root)

"""The repository config object (``config``, JSON in the clear; docs/FORMAT.md "Config").

Pure: parse and validate, make a new one.  Must never: do I/O.
"""
from __future__ import annotations

import json

from replicator import constants as C
from replicator.core.compress import DEFAULT_LEVEL
from replicator.core.params import ChunkerParams
from replicator.errors import RepositoryError, UnsupportedVersion


def check_compression_level(level: object) -> int:
    """:returns: ``level``, an integer COMPRESSION_LEVEL_MIN..MAX.  :raises ValueError: (one line)"""
    lo, hi = C.COMPRESSION_LEVEL_MIN, C.COMPRESSION_LEVEL_MAX
    if type(level) is not int or not lo <= level <= hi:  # not 2.5, not "3", not true
        raise ValueError(f"compression level {level!r} is not an integer {lo} to {hi}")
    return level


def make_config(repo_id: bytes, params: ChunkerParams, compression_level: int, created_ns: int) -> bytes:
    """:raises ValueError: a compression level parse_config would refuse."""
    check_compression_level(compression_level)
    config = {
        "magic": C.REPO_MAGIC,
        "version": C.FORMAT_VERSION_CURRENT,
        "id": repo_id.hex(),
        "chunker": params.to_dict(),
        "compression": {"algorithm": "zstd", "level": compression_level},
        "created_ns": created_ns,
    }
    return (json.dumps(config, indent=1, sort_keys=True) + "\n").encode()


def parse_config(data: bytes, location: str) -> dict:
    """:returns: the config with ``params`` (ChunkerParams) and ``compression_level`` added.

    :raises RepositoryError: not a replicator config, or damaged.  :raises UnsupportedVersion:
    """
    try:
        cfg = json.loads(data)
        magic = cfg.get("magic")
    except (ValueError, AttributeError):
        raise RepositoryError(location, "config is not a replicator repository config") from None
    if magic != C.REPO_MAGIC:
        raise RepositoryError(location, "not a replicator repository (foreign config)")
    version = cfg.get("version")
    if type(version) is not int or not C.FORMAT_VERSION_MIN <= version <= C.FORMAT_VERSION_MAX:
        raise UnsupportedVersion(location, version, C.FORMAT_VERSION_MIN, C.FORMAT_VERSION_MAX)
    try:
        if not isinstance(cfg["id"], str) or len(cfg["id"]) != 64 or cfg["id"] != cfg["id"].lower() \
                or len(bytes.fromhex(cfg["id"])) != 32:
            raise ValueError("id must be 64 lowercase hex digits")
        cfg["params"] = ChunkerParams.from_dict(cfg["chunker"])
        compression = cfg.get("compression", {})
        if not isinstance(compression, dict):
            raise ValueError("compression must be an object")
        if compression.get("algorithm", "zstd") != "zstd":
            raise ValueError(f"compression algorithm {compression['algorithm']!r} is not zstd")
        cfg["compression_level"] = check_compression_level(compression.get("level", DEFAULT_LEVEL))
    except (ValueError, KeyError, TypeError) as exc:
        raise RepositoryError(location, f"config is damaged ({exc})") from None
    return cfg

"""The daemon's status file: what ``replicator status`` shows.

Owns the file name and format: ``STATE_DIR/status.json``, one JSON object
``{"pid", "updated", "config", "jobs": {NAME: {...}}}`` replaced atomically
(store/atomic.py) so a reader never sees half of it.
"""
from __future__ import annotations

import json
import os

from replicator.store import atomic

STATUS_NAME = "status.json"


def status_path(state_dir: str) -> str:
    return os.path.join(state_dir, STATUS_NAME)


def write_status(state_dir: str, doc: dict) -> None:
    """Replace the status file atomically (store/atomic.py).  :raises OSError:"""
    data = (json.dumps(doc, sort_keys=True, indent=1, default=str) + "\n").encode()
    atomic.replace(status_path(state_dir), data, mode=0o644)


def read_status(state_dir: str) -> dict | None:
    """:returns: the last status written, or None if there is none.  :raises ValueError: unreadable JSON."""
    try:
        with open(status_path(state_dir)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

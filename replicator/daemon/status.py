"""The daemon's status file: what ``replicator status`` shows.

Owns the file name and format: ``STATE_DIR/status.json``, one JSON object
``{"pid", "updated", "config", "jobs": {NAME: {...}}}`` replaced atomically
(temporary file, fsync, rename) so a reader never sees half of it.
Depends on the standard library only.
"""
from __future__ import annotations

import json
import os
import tempfile

STATUS_NAME = "status.json"


def status_path(state_dir: str) -> str:
    return os.path.join(state_dir, STATUS_NAME)


def write_status(state_dir: str, doc: dict) -> None:
    """Replace the status file atomically.  :raises OSError:"""
    os.makedirs(state_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=state_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, sort_keys=True, indent=1, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, status_path(state_dir))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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

"""Snapshot a directory tree's content and metadata, to compare two trees."""
from __future__ import annotations

import hashlib
import os
import stat


def manifest(root: str, *, owner: bool = True) -> dict[str, tuple]:
    """path -> (kind, mode, mtime_ns, sha256 or link target[, uid, gid]); directories' mtime included."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            extra = (st.st_uid, st.st_gid) if owner else ()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(full)) + extra
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns) + extra
            else:
                h = hashlib.sha256()
                with open(full, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_size, h.hexdigest()) + extra
    return out


def diff(a: dict, b: dict) -> list[str]:
    problems = []
    for k in sorted(a.keys() | b.keys()):
        if a.get(k) != b.get(k):
            problems.append(f"{k}: {a.get(k)} != {b.get(k)}")
    return problems

"""Entry: one node of a source tree as a snapshot records it.

This is the shared model between walking (sync/walk.py), the snapshot
manifest encoding (format/snapshot.py) and restore (restore/writer.py).  It holds
metadata only; it never touches the file system.
"""
from __future__ import annotations

from dataclasses import dataclass

KIND_FILE = "file"
KIND_DIR = "dir"
KIND_SYMLINK = "symlink"
KINDS = (KIND_FILE, KIND_DIR, KIND_SYMLINK)


@dataclass(frozen=True)
class Entry:
    """A file, directory or symlink inside a snapshot.

    ``path`` is relative to the snapshot root, '/'-separated, decoded from the
    file system with ``os.fsdecode`` (surrogateescape, so any byte string
    round-trips through ``os.fsencode``).  The root itself is never an Entry.
    """

    path: str
    kind: str
    mode: int  # permission bits only (stat.S_IMODE)
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0  # files: plaintext length; others: 0
    chunks: tuple[bytes, ...] = ()  # files: chunk ids (32 bytes each), in order
    target: str = ""  # symlinks: the link text, never followed
    xattrs: tuple[tuple[str, bytes], ...] = ()  # sorted by name
    link_to: str = ""  # hard link: path of the earlier entry of this snapshot sharing its inode

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> str:
        return self.path.rsplit("/", 1)[0] if "/" in self.path else ""

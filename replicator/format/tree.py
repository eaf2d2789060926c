"""Tree nodes: the canonical encoding of one directory's entries.

A directory is one tree blob listing its entries sorted by name bytes; a
sub-directory entry carries the id of its own tree blob, a file entry its
chunk ids.  A tree's id is the keyed hash of its encoding, so equal ids mean
equal subtrees: two snapshots are compared subtree by subtree (merkle).

Encoding (all integers little-endian; docs/FORMAT.md "Trees")::

    magic "RTREE001" | count u32 | entry*
    entry = kind u8 | name_len u16 | name | mode u32 | uid u32 | gid u32
            | mtime_ns i64 | size u64
            | xattr_count u16 | (name_len u16 | name | value_len u32 | value)*  (sorted by name bytes, unique)
            | link_to_len u16 | link_to
            | file: chunk_count u32 | chunk id (32)*
            | dir: tree id (32)
            | symlink: target_len u16 | target

Pure: no I/O.  The decoder validates every field and rejects trailing bytes.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from replicator.constants import ID_SIZE
from replicator.format.entry import KIND_DIR, KIND_FILE, KIND_SYMLINK, Entry

TREE_MAGIC = b"RTREE001"
_KIND_CODES = {KIND_FILE: 0, KIND_DIR: 1, KIND_SYMLINK: 2}
_KIND_NAMES = {v: k for k, v in _KIND_CODES.items()}
_FIXED = struct.Struct("<IIIqQ")  # mode, uid, gid, mtime_ns, size
MAX_NAME = 4096


class TreeFormatError(ValueError):
    """A tree blob that does not decode (damage, or a hostile writer)."""


@dataclass(frozen=True)
class TreeItem:
    """One entry of a tree: the Entry plus, for directories, the subtree id."""

    entry: Entry
    subtree: bytes = b""


def _u16_bytes(b: bytes) -> bytes:
    if len(b) > 0xFFFF:
        raise ValueError("field too long")
    return struct.pack("<H", len(b)) + b


def encode_tree(items: list[TreeItem]) -> bytes:
    """Canonical encoding; ``items`` may come in any order."""
    keyed = sorted(items, key=lambda it: os.fsencode(it.entry.name))
    out = [TREE_MAGIC, struct.pack("<I", len(keyed))]
    for it in keyed:
        e = it.entry
        out.append(bytes((_KIND_CODES[e.kind],)))
        out.append(_u16_bytes(os.fsencode(e.name)))
        out.append(_FIXED.pack(e.mode, e.uid, e.gid, e.mtime_ns, e.size))
        out.append(struct.pack("<H", len(e.xattrs)))
        for name, value in sorted(e.xattrs, key=lambda kv: os.fsencode(kv[0])):
            out.append(_u16_bytes(os.fsencode(name)))
            out.append(struct.pack("<I", len(value)) + value)
        out.append(_u16_bytes(os.fsencode(e.link_to)))
        if e.kind == KIND_FILE:
            out.append(struct.pack("<I", len(e.chunks)))
            out.extend(e.chunks)
        elif e.kind == KIND_DIR:
            if len(it.subtree) != ID_SIZE:
                raise ValueError("directory entry without subtree id")
            out.append(it.subtree)
        else:
            out.append(_u16_bytes(os.fsencode(e.target)))
    return b"".join(out)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise TreeFormatError("tree blob is truncated")
        b = self.data[self.pos : self.pos + n].tobytes()
        self.pos += n
        return b

    def unpack(self, st: struct.Struct) -> tuple:
        return st.unpack(self.take(st.size))

    def u16_bytes(self) -> bytes:
        (n,) = struct.unpack("<H", self.take(2))
        return self.take(n)


def decode_tree(data: bytes, parent: str) -> list[TreeItem]:
    """Decode a tree blob whose directory is at relative path ``parent`` ('' for the root).

    :raises TreeFormatError: on any malformed field, unsorted or duplicate
        names, names with '/' or NUL, '.' or '..', or trailing bytes.
    """
    r = _Reader(data)
    if r.take(8) != TREE_MAGIC:
        raise TreeFormatError("not a tree blob")
    (count,) = struct.unpack("<I", r.take(4))
    if count > len(data):
        raise TreeFormatError("tree entry count is impossible")
    items = []
    prev = None
    for _ in range(count):
        code = r.take(1)[0]
        if code not in _KIND_NAMES:
            raise TreeFormatError(f"unknown entry kind {code}")
        kind = _KIND_NAMES[code]
        raw_name = r.u16_bytes()
        if not raw_name or b"/" in raw_name or b"\x00" in raw_name or raw_name in (b".", b".."):
            raise TreeFormatError(f"invalid entry name {raw_name!r}")
        if prev is not None and raw_name <= prev:
            raise TreeFormatError("tree entries are not sorted or not unique")
        prev = raw_name
        mode, uid, gid, mtime_ns, size = r.unpack(_FIXED)
        (nx,) = struct.unpack("<H", r.take(2))
        xattrs = []
        prev_x = None
        for _ in range(nx):
            raw_x = r.u16_bytes()
            if not raw_x or (prev_x is not None and raw_x <= prev_x):
                raise TreeFormatError("xattr names are empty, unsorted or not unique")
            prev_x = raw_x
            xname = os.fsdecode(raw_x)
            (vlen,) = struct.unpack("<I", r.take(4))
            xattrs.append((xname, r.take(vlen)))
        link_to = os.fsdecode(r.u16_bytes())
        name = os.fsdecode(raw_name)
        path = f"{parent}/{name}" if parent else name
        chunks: tuple[bytes, ...] = ()
        subtree = b""
        target = ""
        if kind == KIND_FILE:
            (n,) = struct.unpack("<I", r.take(4))
            if n * ID_SIZE > len(data):
                raise TreeFormatError("chunk count is impossible")
            raw = r.take(n * ID_SIZE)
            chunks = tuple(raw[i : i + ID_SIZE] for i in range(0, len(raw), ID_SIZE))
        elif kind == KIND_DIR:
            subtree = r.take(ID_SIZE)
        else:
            target = os.fsdecode(r.u16_bytes())
        entry = Entry(path, kind, mode, uid, gid, mtime_ns, size, chunks, target, tuple(xattrs), link_to)
        items.append(TreeItem(entry, subtree))
    if r.pos != len(data):
        raise TreeFormatError("trailing bytes after the last tree entry")
    return items

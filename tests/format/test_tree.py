"""Tree encoding: canonical round trips, and a hostile table that only ever raises TreeFormatError."""
from __future__ import annotations

import os
import struct

import pytest

from replicator.format.entry import KIND_DIR, KIND_FILE, KIND_SYMLINK, Entry
from replicator.format.tree import TREE_MAGIC, TreeFormatError, TreeItem, decode_tree, encode_tree

ID_A = bytes(range(32))
ID_B = bytes(range(32, 64))
ID_T = bytes(range(64, 96))
ODD = os.fsdecode(b"\xff\xfe")  # not UTF-8: must survive via surrogateescape


def items(parent: str = "") -> list[TreeItem]:
    def p(name: str) -> str:
        return f"{parent}/{name}" if parent else name

    return [
        TreeItem(Entry(p("report.pdf"), KIND_FILE, 0o640, 1000, 100, 1_700_000_000_123456789, 70000,
                       chunks=(ID_A, ID_B), xattrs=(("user.a", b"1"), ("user.b", b"\x00\xff")))),
        TreeItem(Entry(p("empty"), KIND_FILE, 0o600, 0, 0, -5, 0)),
        TreeItem(Entry(p("copy.pdf"), KIND_FILE, 0o640, 1000, 100, 1, 70000, chunks=(ID_A, ID_B),
                       link_to=p("report.pdf"))),
        TreeItem(Entry(p("scans"), KIND_DIR, 0o755, 1000, 100, 2), subtree=ID_T),
        TreeItem(Entry(p("latest"), KIND_SYMLINK, 0o777, 1000, 100, 3, target="../scans/2024")),
        TreeItem(Entry(p(ODD), KIND_FILE, 0o644, 1, 2, 4, 1, chunks=(ID_A,))),
        TreeItem(Entry(p("Ünïcode ✓"), KIND_SYMLINK, 0o777, 1, 2, 5, target=ODD)),
    ]


def by_name(its: list[TreeItem]) -> list[TreeItem]:
    return sorted(its, key=lambda it: os.fsencode(it.entry.name))


@pytest.mark.parametrize("parent", ["", "ward7", "ward7/" + ODD])
def test_round_trip(parent):
    original = items(parent)
    decoded = decode_tree(encode_tree(original), parent)
    assert decoded == by_name(original)


def test_round_trip_preserves_odd_name_bytes():
    (it,) = decode_tree(encode_tree([items()[5]]), "")
    assert os.fsencode(it.entry.path) == b"\xff\xfe"


def test_empty_tree():
    data = encode_tree([])
    assert data == TREE_MAGIC + b"\x00\x00\x00\x00"
    assert decode_tree(data, "") == []


def test_canonical_order():
    its = items()
    a = encode_tree(its)
    assert encode_tree(list(reversed(its))) == a
    assert encode_tree(its[3:] + its[:3]) == a


def test_sorted_by_bytes_not_by_str():
    # '\udcff' (surrogateescape of 0xff) sorts before 'é' as str, after it as bytes (0xc3 < 0xff).
    its = [TreeItem(Entry(ODD, KIND_FILE, 0, 0, 0, 0)), TreeItem(Entry("é", KIND_FILE, 0, 0, 0, 0))]
    assert [it.entry.name for it in decode_tree(encode_tree(its), "")] == ["é", ODD]


def test_content_changes_change_bytes():
    base = encode_tree(items())
    its = items()
    its[0] = TreeItem(Entry("report.pdf", KIND_FILE, 0o640, 1000, 100, 1_700_000_000_123456789, 70000,
                            chunks=(ID_B, ID_A), xattrs=(("user.a", b"1"), ("user.b", b"\x00\xff"))))
    assert encode_tree(its) != base


def test_dir_without_subtree_refused():
    with pytest.raises(ValueError):
        encode_tree([TreeItem(Entry("d", KIND_DIR, 0o755, 0, 0, 0))])


# --- hostile input ----------------------------------------------------------

def entry_bytes(kind: int, name: bytes, tail: bytes | None = None, xattrs: bytes = b"\x00\x00",
                link_to: bytes = b"\x00\x00") -> bytes:
    fixed = struct.pack("<IIIqQ", 0o644, 0, 0, 0, 0)
    if tail is None:
        tail = {0: struct.pack("<I", 0), 1: ID_T, 2: struct.pack("<H", 1) + b"x"}.get(kind, b"")
    return bytes((kind,)) + struct.pack("<H", len(name)) + name + fixed + xattrs + link_to + tail


def tree(*entries: bytes, count: int | None = None) -> bytes:
    return TREE_MAGIC + struct.pack("<I", len(entries) if count is None else count) + b"".join(entries)


def test_hand_made_encoding_matches_encoder():
    """The hostile blobs below are built by the same rules as the encoder."""
    good = tree(entry_bytes(0, b"a"), entry_bytes(1, b"b"), entry_bytes(2, b"c"))
    its = decode_tree(good, "")
    assert [(i.entry.kind, i.entry.name) for i in its] == [(KIND_FILE, "a"), (KIND_DIR, "b"), (KIND_SYMLINK, "c")]
    assert encode_tree(its) == good


HOSTILE = {
    "empty": b"",
    "bad-magic": b"RTREE002" + b"\x00" * 4,
    "short-magic": b"RTREE",
    "no-count": TREE_MAGIC,
    "count-too-high": tree(entry_bytes(0, b"a"), count=2),
    "count-absurd": tree(count=0xFFFFFFFF),
    "count-zero-with-entries": tree(entry_bytes(0, b"a"), count=0),
    "unsorted": tree(entry_bytes(0, b"b"), entry_bytes(0, b"a")),
    "duplicate": tree(entry_bytes(0, b"a"), entry_bytes(1, b"a")),
    "dot": tree(entry_bytes(0, b".")),
    "dotdot": tree(entry_bytes(0, b"..")),
    "slash": tree(entry_bytes(0, b"a/b")),
    "leading-slash": tree(entry_bytes(0, b"/etc")),
    "nul": tree(entry_bytes(0, b"a\x00b")),
    "empty-name": tree(entry_bytes(0, b"")),
    "unknown-kind": tree(entry_bytes(3, b"a", tail=b"")),
    "unknown-kind-ff": tree(entry_bytes(0xFF, b"a", tail=b"")),
    "trailing-byte": tree(entry_bytes(0, b"a")) + b"\x00",
    "trailing-entry": tree(entry_bytes(0, b"a")) + entry_bytes(0, b"b"),
    "chunk-count-absurd": tree(entry_bytes(0, b"a", tail=struct.pack("<I", 0xFFFFFFFF))),
    "chunk-count-too-high": tree(entry_bytes(0, b"a", tail=struct.pack("<I", 2) + ID_A)),
    "xattr-count-absurd": tree(entry_bytes(0, b"a", xattrs=b"\xff\xff")),
    "xattr-value-too-long": tree(entry_bytes(0, b"a", xattrs=b"\x01\x00\x01\x00x\xff\xff\xff\xff")),
    "name-len-too-long": TREE_MAGIC + b"\x01\x00\x00\x00\x00\xff\xff" + b"a" * 10,
    "link-to-too-long": tree(entry_bytes(0, b"a", link_to=b"\xff\xff")),
    "short-subtree": tree(entry_bytes(1, b"d", tail=ID_T[:31])),
    "symlink-target-too-long": tree(entry_bytes(2, b"l", tail=b"\xff\xff")),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile(case):
    with pytest.raises(TreeFormatError):
        decode_tree(HOSTILE[case], "")


def test_truncated_at_every_offset():
    data = encode_tree(items())
    for n in range(len(data)):
        with pytest.raises(TreeFormatError):
            decode_tree(data[:n], "")


def test_flipped_byte_never_raises_anything_else():
    """A flipped byte may still decode (it can land in a timestamp), but never raises another type."""
    data = encode_tree(items())
    for i in range(len(data)):
        d = bytearray(data)
        d[i] ^= 0x80
        try:
            decode_tree(bytes(d), "p")
        except TreeFormatError:
            pass


def test_tree_format_error_is_value_error():
    assert issubclass(TreeFormatError, ValueError)


def test_xattrs_are_canonical_whatever_their_input_order():
    from replicator.format.entry import Entry
    from replicator.format.tree import TreeItem, decode_tree, encode_tree

    a = Entry("f", "file", 0o644, 0, 0, 1, 0, (), "", (("user.b", b"2"), ("user.a", b"1")))
    b = Entry("f", "file", 0o644, 0, 0, 1, 0, (), "", (("user.a", b"1"), ("user.b", b"2")))
    assert encode_tree([TreeItem(a)]) == encode_tree([TreeItem(b)])
    (item,) = decode_tree(encode_tree([TreeItem(a)]), "")
    assert item.entry.xattrs == (("user.a", b"1"), ("user.b", b"2"))


@pytest.mark.parametrize("names", [(b"user.b", b"user.a"), (b"user.a", b"user.a"), (b"", b"user.a")])
def test_unsorted_duplicate_or_empty_xattr_names_are_refused(names):
    import struct

    from replicator.format.tree import TREE_MAGIC, TreeFormatError, decode_tree

    blob = bytearray(TREE_MAGIC + struct.pack("<I", 1))
    blob += bytes((0,)) + struct.pack("<H", 1) + b"f" + struct.pack("<IIIqQ", 0o644, 0, 0, 1, 0)
    blob += struct.pack("<H", len(names))
    for n in names:
        blob += struct.pack("<H", len(n)) + n + struct.pack("<I", 1) + b"v"
    blob += struct.pack("<H", 0) + struct.pack("<I", 0)
    with pytest.raises(TreeFormatError):
        decode_tree(bytes(blob), "")

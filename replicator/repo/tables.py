"""Pack tables read by ranges: header, footer, then the sealed table, never the whole pack.

The index catch-up, the upgrade that signs old id lists, and a repository
read over SSH all need the tables of many packs.  ``read_tables`` reads them
in three rounds (headers, footers, tables), each one call of a ``get_ranges``
function, so a remote storage pipelines every round; a local storage reads
one range after another (``ranges_reader``).

Must never: read a whole pack, or return a table that did not authenticate.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from replicator import constants as C
from replicator.errors import IntegrityError, ObjectNotFound, ReplicatorError, UnsupportedVersion
from replicator.format.pack import BlobEntry, open_table, parse_header, table_range

TABLE_BATCH = 64  # packs whose tables are read in one set of three rounds
GetRanges = Callable[[Sequence[tuple[str, int, int]]], list[tuple[int, bytes]]]


def ranges_reader(storage) -> GetRanges:
    """``storage.get_ranges`` when the storage pipelines ranges (over SSH), else one ``get`` after another.

    Each answer is (the object's size, the bytes asked for; fewer at its end).
    """
    pipelined = getattr(storage, "get_ranges", None)
    if pipelined is not None:
        return pipelined

    def one_by_one(wanted: Sequence[tuple[str, int, int]]) -> list[tuple[int, bytes]]:
        return [(storage.size(name), storage.get(name, offset, length)) for name, offset, length in wanted]

    return one_by_one


def read_table_from(storage, name: str, encrypt_key: bytes) -> list[BlobEntry]:
    """The table of one stored pack.  :raises IntegrityError: :raises UnsupportedVersion: :raises ObjectNotFound:"""
    _size, found = read_tables(ranges_reader(storage), [name], encrypt_key)[0]
    if isinstance(found, ReplicatorError):
        raise found
    return found


Table = tuple[int, "list[BlobEntry] | ReplicatorError"]  # (pack size, its entries or why they are unreadable)


def read_tables(get_ranges: GetRanges, names: list[str], encrypt_key: bytes) -> list[Table]:
    """(size, authenticated table) of each of ``names``, in order; an unreadable pack gives its error in its
    place (ObjectNotFound for one deleted meanwhile, IntegrityError or UnsupportedVersion for a damaged one)."""
    try:
        return _read_tables(get_ranges, names, encrypt_key)
    except ObjectNotFound:
        if len(names) == 1:
            return [(0, ObjectNotFound(names[0]))]
        # One of them went away since the listing (a prune elsewhere): read them one at a time.
        return [read_tables(get_ranges, [n], encrypt_key)[0] for n in names]


def _read_tables(get_ranges: GetRanges, names: list[str], encrypt_key: bytes) -> list[Table]:
    heads = get_ranges([(n, 0, C.PACK_HEADER_SIZE) for n in names])
    feet = get_ranges([(n, max(0, size - C.PACK_FOOTER_SIZE), C.PACK_FOOTER_SIZE)
                       for n, (size, _head) in zip(names, heads)])
    found: list[list[BlobEntry] | ReplicatorError] = []
    located: dict[int, tuple[bytes, int, int]] = {}  # position -> (salt, table offset, table length)
    for i, (name, (size, head), (_size, foot)) in enumerate(zip(names, heads, feet)):
        try:
            located[i] = (parse_header(head, name), *table_range(size, foot, name))
            found.append([])
        except (IntegrityError, UnsupportedVersion) as exc:
            found.append(exc)
    todo = sorted(located)
    tables = get_ranges([(names[i], located[i][1], located[i][2]) for i in todo])
    for i, (_size, sealed) in zip(todo, tables):
        salt, start, _length = located[i]
        try:
            found[i] = open_table(salt, sealed, start, names[i], encrypt_key)
        except (IntegrityError, UnsupportedVersion) as exc:
            found[i] = exc
    return [(size, item) for (size, _head), item in zip(heads, found)]

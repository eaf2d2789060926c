"""Native FastCDC cut-point scan (built from ext/cdc.pyx).  Spec: docs/CHUNKING.md."""
from typing_extensions import Buffer  # a bytes-like object (collections.abc.Buffer on 3.12+)

MIN_SIZE_FLOOR: int  # 64
AVG_SIZE_FLOOR: int  # 256
MAX_SIZE_CEIL: int  # 64 MiB
NC_LEVEL: int  # 2

def masks(avg_size: int) -> tuple[int, int]:
    """(mask_s, mask_l): the top log2(avg)+2 and log2(avg)-2 bits of a uint64.
    :raises ValueError: if avg_size is not a power of two >= 256."""

def find_cuts(buf: Buffer, min_size: int, avg_size: int, max_size: int,
              gear: Buffer, eof: bool) -> list[int]:
    """End offsets of the complete chunks in ``buf`` (C-contiguous uint8).

    ``gear`` is a C-contiguous uint64 buffer of 256 entries (e.g. ``array('Q')``).
    With ``eof`` the last offset is ``len(buf)`` (empty list for empty ``buf``);
    without it the bytes after the last offset are an incomplete chunk the caller
    carries over to the next call.  The GIL is released during the scan.
    :raises ValueError: on invalid sizes or a gear table that is not 256 entries.
    """

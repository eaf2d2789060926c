"""Chunker parameters: validation and their encoding in the repository config.

Owns the rules for min/avg/max chunk sizes.  Never reads files or env; the
values a repository was created with are recorded in its config and must be
used for its whole life (other values give other boundaries and no dedup).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KIB = 1024
MIB = 1024 * KIB

MIN_SIZE_FLOOR = 64
"""Smallest allowed min_size: the gear hash needs a few bytes to mix."""
AVG_SIZE_FLOOR = 256
"""Smallest allowed avg_size: mask_l has log2(avg) - 2 bits, at least 6."""
MAX_SIZE_CEIL = 64 * MIB
"""Largest allowed max_size: bounds the chunker buffer and a single chunk in memory."""


@dataclass(frozen=True)
class ChunkerParams:
    """Content-defined chunking sizes, in bytes.

    Rules: integers; ``avg_size`` a power of two >= 256; ``64 <= min_size <=
    avg_size <= max_size <= 64 MiB``.  ``max_size >= 2 * avg_size`` is
    recommended (with a tighter max, many chunks are cut by the limit and
    lose shift resistance) but not required.
    """

    min_size: int
    avg_size: int
    max_size: int

    def __post_init__(self) -> None:
        for name in ("min_size", "avg_size", "max_size"):
            value = getattr(self, name)
            if type(value) is not int:
                raise ValueError(f"{name} must be an int, got {type(value).__name__}")
        lo, avg, hi = self.min_size, self.avg_size, self.max_size
        if avg < AVG_SIZE_FLOOR or avg & (avg - 1):
            raise ValueError(f"avg_size must be a power of two >= {AVG_SIZE_FLOOR}, got {avg}")
        if lo < MIN_SIZE_FLOOR:
            raise ValueError(f"min_size must be >= {MIN_SIZE_FLOOR}, got {lo}")
        if not lo <= avg <= hi:
            raise ValueError(f"need min_size <= avg_size <= max_size, got {lo}/{avg}/{hi}")
        if hi > MAX_SIZE_CEIL:
            raise ValueError(f"max_size must be <= {MAX_SIZE_CEIL}, got {hi}")

    def to_dict(self) -> dict[str, int]:
        """:returns: ``{"min": ..., "avg": ..., "max": ...}`` for the repository config."""
        return {"min": self.min_size, "avg": self.avg_size, "max": self.max_size}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ChunkerParams:
        """Inverse of :meth:`to_dict`.

        :raises ValueError: on missing or unknown keys, or invalid values.
        """
        keys = set(d)
        if keys != {"min", "avg", "max"}:
            raise ValueError(f"chunker params need exactly keys avg, max, min; got {sorted(keys)}")
        return cls(min_size=d["min"], avg_size=d["avg"], max_size=d["max"])


DEFAULT_PARAMS = ChunkerParams(min_size=64 * KIB, avg_size=256 * KIB, max_size=1 * MIB)
"""Chosen by measurement (scripts/chunk_quality.py, table in docs/CHUNKING.md)."""

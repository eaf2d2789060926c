"""Heads: the receiver's own record of the latest snapshot of each source, and who may write it.

A key-less receiver cannot read a snapshot's source or parent (both are
sealed).  So every commit carries, in clear, a **claim**: the source's tag
(16 bytes of a keyed hash of the source name, so the name stays secret) and
the digest of the snapshot it continues (its parent, or none).  The receiver
keeps one small JSON object per tag, ``heads/<tag>`` (docs/FORMAT.md
"Heads"), and refuses a commit whose parent is not the head it holds
(compare-and-swap), or that comes from the side the head is fenced against
(``promote`` at one site fences the other; ``handback`` lifts it).

This module is the byte layout and the pure decision; storing the object is
the sink's (repo/local_sink.py).  Must never: do I/O.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

TAG_SIZE = 16
HEAD_VERSION = 1
SIDE_LOCAL, SIDE_REMOTE = "local", "remote"  # who commits: the repository's own host, or a sender over serve
SIDES = (SIDE_LOCAL, SIDE_REMOTE)
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class Claim:
    """What a commit says about its lineage: the source's tag and the snapshot digest it continues."""

    tag: bytes
    parent: str | None

    def __post_init__(self) -> None:
        if len(self.tag) != TAG_SIZE:
            raise ValueError(f"a source tag is {TAG_SIZE} bytes")
        if self.parent is not None and not _HEX64.match(self.parent):
            raise ValueError("a parent is a snapshot digest (64 hex digits)")


@dataclass(frozen=True)
class Fence:
    """Only ``side`` may commit this source: set by ``promote`` (its own side) or ``handback`` (the other)."""

    side: str
    host: str
    time: str  # RFC 3339
    reason: str  # "promote" or "handback"


@dataclass(frozen=True)
class Head:
    snapshot: str | None  # the latest snapshot committed with this tag (None: a fence set before any commit)
    previous: str | None  # the one before: the head is written before the snapshot (FORMAT.md reader rule)
    fence: Fence | None = None

    def encode(self) -> bytes:
        doc: dict = {"version": HEAD_VERSION, "snapshot": self.snapshot, "previous": self.previous}
        if self.fence is not None:
            doc["fence"] = {"side": self.fence.side, "host": self.fence.host, "time": self.fence.time,
                            "reason": self.fence.reason}
        return (json.dumps(doc, sort_keys=True) + "\n").encode()


def decode_head(data: bytes, name: str) -> Head:
    """:raises ValueError: not a head object of a known version (the message names ``name``)."""
    try:
        doc = json.loads(data)
        if doc.get("version") != HEAD_VERSION:
            raise ValueError(f"version {doc.get('version')!r}")
        snapshot, previous = doc["snapshot"], doc["previous"]
        for value in (snapshot, previous):
            if value is not None and not (isinstance(value, str) and _HEX64.match(value)):
                raise ValueError("a snapshot digest is 64 hex digits")
        fence = None
        if doc.get("fence") is not None:
            f = doc["fence"]
            if f["side"] not in SIDES:
                raise ValueError(f"fence side {f['side']!r}")
            fence = Fence(str(f["side"]), str(f["host"]), str(f["time"]), str(f["reason"]))
        return Head(snapshot, previous, fence)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{name}: not a head object ({exc})") from None


@dataclass(frozen=True)
class Refusal:
    kind: str  # "fenced" or "diverged"
    message: str


def check_commit(head: Head | None, claim: Claim, side: str, head_present: bool, snapshot: str) -> Refusal | None:
    """Whether a commit of ``snapshot`` with ``claim`` from ``side`` may go on top of ``head``.

    :param head_present: whether ``head.snapshot`` is still stored (a crash between writing the head
        and the snapshot, or a forget of the newest snapshot, leaves a head naming a missing one: then
        any parent is accepted, since there is nothing newer to protect).
    :returns: None to accept, else why not.
    """
    if head is None:
        return None
    if head.fence is not None and head.fence.side != side:
        if head.fence.reason == "promote":
            why = (f"{head.fence.host} took over writing this source ('replicator promote' at {head.fence.time}); "
                   f"commits from anywhere else are refused until it hands the role back ('replicator handback')")
        else:
            why = (f"{head.fence.host} handed the role of writing this source back ('replicator handback' at "
                   f"{head.fence.time}) and commits no more of it until it is promoted again")
        return Refusal("fenced", f"{why}; see docs/OPERATIONS.md 'Failover and failback'")
    if head.snapshot is not None and head_present and claim.parent != head.snapshot and snapshot != head.snapshot:
        continues = claim.parent[:16] if claim.parent else "no snapshot (a new lineage)"
        return Refusal("diverged", f"its latest snapshot of this source is {head.snapshot[:16]}, but this "
                                   f"commit continues {continues}: another writer committed in between")
    return None


def after_commit(head: Head | None, snapshot: str) -> Head:
    """The head to write (before the snapshot itself) for a commit of ``snapshot`` (the same commit again,
    a retry, leaves the head as it is)."""
    if head is not None and head.snapshot == snapshot:
        return head
    return Head(snapshot, head.snapshot if head else None, head.fence if head else None)

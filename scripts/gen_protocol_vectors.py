"""Generate the wire protocol test vectors, tests/vectors/protocol.json (docs/PROTOCOL.md "Test vectors").

One or more vectors per message type of replicator/transport/protocol.py:
the message's fields in JSON form, the exact frame in hex, and the frame
split into labelled pieces ("layout").  Every input is a small fixed value
(ids of one repeated byte, fixed names), so the file is reproducible byte
for byte.

The layout is built here from docs/PROTOCOL.md section 4 with ``struct``
only, independently of the codec (frames.py); the script refuses to write
anything unless the concatenated layout equals ``message.encode()`` and
``decode_message`` gives the message back, for every vector.

JSON form of the fields (tests/transport/test_protocol_vectors.py reads it the same way):
``int`` and ``str`` as is; ``bytes`` as lowercase hex; a tuple of ids as a
list of hex strings; a tuple of names as a list of strings.

Usage::

    .venv/bin/python scripts/gen_protocol_vectors.py           # write tests/vectors/protocol.json
    .venv/bin/python scripts/gen_protocol_vectors.py --check   # exit 1 if the file would change

A changed vector means the bytes on the wire changed: deployed peers would no
longer understand each other.  Never regenerate to make the test pass: bump
PROTOCOL_VERSION_MAX, document the change in docs/PROTOCOL.md "Changes", and
commit spec, code and vectors together.  Adding a message type adds vectors
(the test fails until every type in protocol.MESSAGES has one).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from replicator.transport import frames as F  # noqa: E402
from replicator.transport import protocol as P  # noqa: E402

VECTOR_FILE = ROOT / "tests" / "vectors" / "protocol.json"

# --- fixed inputs --------------------------------------------------------------
ID_AA, ID_BB, ID_CC = b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32
PACK = "data/ab/" + "ab" * 32
SNAP = "snapshots/" + "cd" * 32
IDS_1, IDS_2 = "ids/" + "11" * 32, "ids/" + "22" * 32
TAG = bytes(range(16))  # a source tag (format/head.py)
PROOF = bytes(range(64))  # a declaration proof's 64 bytes (not a valid signature: the codec does not check it)

MESSAGES = [
    P.Hello(3, 3, "replicator"),
    P.Open("amiens", P.MODE_WRITE),
    P.OpenOk(b"CONFIG", b"KEYFILE"),
    P.List("ids/"),
    P.Names((IDS_1, IDS_2)),
    P.Names(()),
    P.Get(SNAP),
    P.Data(ID_AA + ID_BB),  # an ids/ object: two ids concatenated
    P.PutPack(PACK, (ID_AA, ID_BB), PROOF, b"PACK"),
    P.PackOk(PACK),
    P.Refs((ID_AA, ID_BB)),
    P.Commit(SNAP, b"SNAP", PROOF, TAG, None, (ID_CC,)),  # after the REFS batch above: its refs are greater
    P.Commit(SNAP, b"SNAP", PROOF, TAG, "dd" * 32, ()),  # a parent; every ref went in REFS batches
    P.CommitOk(SNAP),
    P.GetRange(PACK, 1 << 32, 4096),
    P.Range(1 << 24, b"TABLE"),
    P.Declare(PACK, (ID_AA, ID_BB), PROOF),
    P.Declare(SNAP, (), PROOF),
    P.DeclareOk(PACK),
    P.Forget(SNAP, PROOF),
    P.ForgetOk(SNAP),
    P.Prune(P.PRUNE_DRY_RUN),
    P.PruneOk((2, 10, 3, 50_331_648, 4, 1, 0)),
    P.RefsBase("dd" * 32, 3, bytes.fromhex("ee" * 32)),  # version 4: the next commit's refs as a difference
    P.Drop((ID_AA,)),
    P.GetRanges(((PACK, 0, 4096), (PACK, 1 << 32, 512))),  # version 5: answered by two RANGEs
    P.Error(P.E_VERSION, "no common protocol version"),
    P.Bye(),
]


# --- JSON form of fields -----------------------------------------------------------
def field_to_json(annotation: str, value):
    if annotation in ("int", "str", "str | None"):
        return value
    if annotation in ("bytes", "bytes | memoryview"):
        return bytes(value).hex()
    if annotation == "tuple[bytes, ...]":
        return [bytes(v).hex() for v in value]
    if annotation in ("tuple[str, ...]", "tuple[int, ...]"):
        return list(value)
    if annotation == "tuple[tuple[str, int, int], ...]":
        return [list(v) for v in value]
    raise TypeError(f"no JSON form for a field of type {annotation}")


def fields_to_json(msg) -> dict:
    return {f.name: field_to_json(f.type, getattr(msg, f.name)) for f in dataclasses.fields(msg)}


# --- layout from the spec (struct only, not frames.py) ------------------------------
def _u8(label, v):
    return [(f"{label} u8", struct.pack(">B", v))]


def _u16(label, v):
    return [(f"{label} u16", struct.pack(">H", v))]


def _name(label, text):
    raw = text.encode("utf-8")
    return [(f"{label} length u16", struct.pack(">H", len(raw))), (f"{label} UTF-8", raw)]


def _names(label, items):
    out = [(f"{label} count u32", struct.pack(">I", len(items)))]
    for i, n in enumerate(items):
        out += _name(f"{label}[{i}]", n)
    return out


def _u32(label, v):
    return [(f"{label} u32", struct.pack(">I", v))]


def _u64(label, v):
    return [(f"{label} u64", struct.pack(">Q", v))]


def _bytes(label, data):
    return [(f"{label} length u32", struct.pack(">I", len(data))), (label, bytes(data))]


def _ids(label, items):
    return [(f"{label} count u32", struct.pack(">I", len(items)))] + \
        [(f"{label}[{i}]", bytes(v)) for i, v in enumerate(items)]


def body_layout(msg) -> list[tuple[str, bytes]]:
    """The body, field by field, as PROTOCOL.md section 4 describes it."""
    if isinstance(msg, P.Hello):
        return [("magic", b"RPLPROTO")] + _u16("min_version", msg.min_version) + \
            _u16("max_version", msg.max_version) + _name("software", msg.software)
    if isinstance(msg, P.Open):
        return _name("repository", msg.repository) + _u8("mode", msg.mode)
    if isinstance(msg, P.OpenOk):
        return _bytes("config", msg.config) + _bytes("keyfile", msg.keyfile)
    if isinstance(msg, P.List):
        return _name("prefix", msg.prefix)
    if isinstance(msg, P.Names):
        return _names("names", msg.names)
    if isinstance(msg, (P.Get, P.PackOk, P.CommitOk, P.DeclareOk, P.ForgetOk)):
        return _name("name", msg.name)
    if isinstance(msg, P.Data):
        return _bytes("data", msg.data)
    if isinstance(msg, P.PutPack):
        return _name("name", msg.name) + _ids("ids", msg.ids) + [("proof", msg.proof)] + _bytes("data", msg.data)
    if isinstance(msg, P.Refs):
        return _ids("ids", msg.ids)
    if isinstance(msg, P.Commit):
        parent = bytes.fromhex(msg.parent) if msg.parent else bytes(32)  # 32 zero bytes: no parent
        return (_name("name", msg.name) + _bytes("data", msg.data) + [("proof", msg.proof), ("tag", msg.tag),
                ("parent", parent)] + _ids("refs", msg.refs))
    if isinstance(msg, P.GetRange):
        return _name("name", msg.name) + _u64("offset", msg.offset) + _u32("length", msg.length)
    if isinstance(msg, P.Range):
        return _u64("size", msg.size) + _bytes("data", msg.data)
    if isinstance(msg, P.Declare):
        return _name("name", msg.name) + _ids("ids", msg.ids) + [("proof", msg.proof)]
    if isinstance(msg, P.Forget):
        return _name("name", msg.name) + [("proof", msg.proof)]
    if isinstance(msg, P.Prune):
        return _u8("flags", msg.flags)
    if isinstance(msg, P.PruneOk):
        return [piece for label, v in zip(P.PRUNE_COUNTERS, msg.counters) for piece in _u64(label, v)]
    if isinstance(msg, P.RefsBase):
        return [("base", bytes.fromhex(msg.base))] + _u64("count", msg.count) + [("digest", msg.digest)]
    if isinstance(msg, P.Drop):
        return _ids("ids", msg.ids)
    if isinstance(msg, P.GetRanges):
        return _u16("count", len(msg.ranges)) + [piece for i, (n, o, length) in enumerate(msg.ranges)
                                                 for piece in _name(f"ranges[{i}] name", n)
                                                 + _u64(f"ranges[{i}] offset", o) + _u32(f"ranges[{i}] length", length)]
    if isinstance(msg, P.Error):
        return _u16("code", msg.code) + _bytes("message", msg.message.encode("utf-8"))
    if isinstance(msg, P.Bye):
        return []
    raise TypeError(f"no layout for {type(msg).__name__}: describe it here from PROTOCOL.md")


def layout(msg) -> list[tuple[str, bytes]]:
    body = body_layout(msg)
    length = 1 + sum(len(v) for _l, v in body)
    return [("length u32", struct.pack(">I", length)), ("type u8", struct.pack(">B", msg.TYPE))] + body


TYPE_NAMES = {getattr(P, n): n for n in ("HELLO", "OPEN", "OPEN_OK", "LIST", "NAMES", "GET", "DATA", "PUT_PACK",
                                         "PACK_OK", "REFS", "COMMIT", "COMMIT_OK", "ERROR", "BYE", "GET_RANGE",
                                         "RANGE", "DECLARE", "DECLARE_OK", "FORGET", "FORGET_OK", "PRUNE",
                                         "PRUNE_OK", "REFS_BASE", "DROP", "GET_RANGES")}


def vector(msg) -> dict:
    pieces = layout(msg)
    wire = b"".join(v for _l, v in pieces)
    if wire != msg.encode():
        raise SystemExit(f"{type(msg).__name__}: the spec's layout differs from encode():\n"
                         f"  spec   {wire.hex()}\n  encode {msg.encode().hex()}")
    length, msg_type = F.parse_header(wire[:F.HEADER_SIZE])
    if P.decode_message(msg_type, wire[F.HEADER_SIZE:]) != msg or length != len(wire) - F.HEADER_SIZE:
        raise SystemExit(f"{type(msg).__name__}: decode(encode(m)) != m")
    return {"type": msg.TYPE, "message": TYPE_NAMES[msg.TYPE], "class": type(msg).__name__,
            "fields": fields_to_json(msg), "frame": wire.hex(),
            "layout": [[label, v.hex()] for label, v in pieces]}


def all_vectors() -> dict:
    missing = set(P.MESSAGES) - {m.TYPE for m in MESSAGES}
    if missing:
        raise SystemExit(f"no vector for message types {sorted(missing)}: add one to MESSAGES")
    return {
        "comment": [
            "Wire protocol test vectors (docs/PROTOCOL.md 'Test vectors'), written by scripts/gen_protocol_vectors.py.",
            "frame: the whole frame in hex (u32 BE length || u8 type || body); layout: the same bytes, field by field.",
            "fields: bytes as lowercase hex, id tuples as lists of hex, name tuples as lists of strings.",
            "A changed vector is a changed wire format: bump PROTOCOL_VERSION_MAX, never regenerate to pass a test.",
        ],
        "protocol_version": P.PROTOCOL_VERSION_MAX,
        "vectors": [vector(m) for m in MESSAGES],
    }


def render(doc: dict) -> str:
    text = json.dumps(doc, indent=2, ensure_ascii=True) + "\n"
    # One line per layout piece: ["label", "hex"].
    return re.sub(r'\[\n\s+("(?=[^"\n]*[^0-9a-f"\n])[^"\n]*"),\n\s+("[0-9a-f]*")\n\s+\]', r"[\1, \2]", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file; write nothing")
    args = parser.parse_args(argv)
    text = render(all_vectors())
    old = VECTOR_FILE.read_text() if VECTOR_FILE.exists() else None
    rel = VECTOR_FILE.relative_to(ROOT)
    if old == text:
        print(f"{rel}: unchanged")
        return 0
    if args.check:
        print(f"differs: {rel}")
        return 1
    VECTOR_FILE.parent.mkdir(parents=True, exist_ok=True)
    VECTOR_FILE.write_text(text)
    print(f"wrote: {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

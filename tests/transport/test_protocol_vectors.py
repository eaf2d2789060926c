"""Golden wire vectors (tests/vectors/protocol.json) and docs/PROTOCOL.md checked against the code.

GOLDEN TEST.  A failing vector means the bytes on the wire changed: deployed
senders and receivers would no longer understand each other.  Do NOT
regenerate the vectors to make this pass.  If the change is intended, bump
PROTOCOL_VERSION_MAX, document it in docs/PROTOCOL.md "Changes", regenerate
with scripts/gen_protocol_vectors.py and have the diff reviewed, in one commit.

The doc tests parse PROTOCOL.md's tables (messages, limits, error codes,
receiver states) and its inline vectors, so the document cannot drift from
protocol.py and frames.py without a test failing.
"""
from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import pytest

from replicator.transport import frames as F
from replicator.transport import protocol as P

ROOT = Path(__file__).resolve().parents[2]
VECTOR_PATH = ROOT / "tests" / "vectors" / "protocol.json"
DOC_PATH = ROOT / "docs" / "PROTOCOL.md"
VECTORS = json.loads(VECTOR_PATH.read_text())["vectors"]
DOC = DOC_PATH.read_text()
TYPE_NAMES = {"HELLO": P.HELLO, "OPEN": P.OPEN, "OPEN_OK": P.OPEN_OK, "LIST": P.LIST, "NAMES": P.NAMES,
              "GET": P.GET, "DATA": P.DATA, "PUT_PACK": P.PUT_PACK, "PACK_OK": P.PACK_OK, "REFS": P.REFS,
              "COMMIT": P.COMMIT, "COMMIT_OK": P.COMMIT_OK, "ERROR": P.ERROR, "BYE": P.BYE,
              "GET_RANGE": P.GET_RANGE, "RANGE": P.RANGE, "DECLARE": P.DECLARE, "DECLARE_OK": P.DECLARE_OK,
              "FORGET": P.FORGET, "FORGET_OK": P.FORGET_OK, "PRUNE": P.PRUNE, "PRUNE_OK": P.PRUNE_OK,
              "REFS_BASE": P.REFS_BASE, "DROP": P.DROP, "GET_RANGES": P.GET_RANGES}


# --- JSON form of fields (as scripts/gen_protocol_vectors.py writes it) ----------------
# field annotation -> (from JSON, to JSON)
JSON_FORMS = {
    "int": (int, int),
    "str": (str, str),
    "str | None": (lambda v: v, lambda v: v),
    "bytes": (bytes.fromhex, lambda v: bytes(v).hex()),
    "bytes | memoryview": (bytes.fromhex, lambda v: bytes(v).hex()),
    "tuple[bytes, ...]": (lambda v: tuple(bytes.fromhex(x) for x in v), lambda v: [bytes(x).hex() for x in v]),
    "tuple[str, ...]": (tuple, list),
    "tuple[int, ...]": (tuple, list),
    "tuple[tuple[str, int, int], ...]": (lambda v: tuple(tuple(x) for x in v), lambda v: [list(x) for x in v]),
}


def message_from_json(vec: dict):
    cls = P.MESSAGES[vec["type"]]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(vec["fields"]) == set(fields), f"{vec['message']}: fields {sorted(vec['fields'])} != {sorted(fields)}"
    return cls(**{k: JSON_FORMS[fields[k].type][0](v) for k, v in vec["fields"].items()})


def message_to_json(msg) -> dict:
    return {f.name: JSON_FORMS[f.type][1](getattr(msg, f.name)) for f in dataclasses.fields(msg)}


def _vid(vec: dict) -> str:
    return f"{vec['message']}-{VECTORS.index(vec)}"


# --- the vectors -----------------------------------------------------------------------
def test_every_message_type_has_a_vector():
    covered = {v["type"] for v in VECTORS}
    missing = sorted(set(P.MESSAGES) - covered)
    assert not missing, f"message types without a vector: {missing} (add them to scripts/gen_protocol_vectors.py)"
    assert covered <= set(P.MESSAGES)
    assert set(TYPE_NAMES.values()) == set(P.MESSAGES)


def test_every_field_type_has_a_json_form():
    for cls in P.MESSAGES.values():
        for f in dataclasses.fields(cls):
            assert f.type in JSON_FORMS, f"{cls.__name__}.{f.name}: {f.type} has no JSON form (extend this test " \
                                         f"and scripts/gen_protocol_vectors.py)"


@pytest.mark.parametrize("vec", VECTORS, ids=_vid)
def test_vector_names(vec):
    assert TYPE_NAMES[vec["message"]] == vec["type"]
    assert P.MESSAGES[vec["type"]].__name__ == vec["class"]


@pytest.mark.parametrize("vec", VECTORS, ids=_vid)
def test_vector_encode(vec):
    msg = message_from_json(vec)
    assert msg.encode().hex() == vec["frame"]
    assert b"".join(msg.encode_parts()).hex() == vec["frame"]


@pytest.mark.parametrize("vec", VECTORS, ids=_vid)
@pytest.mark.parametrize("copy", [True, False], ids=["copy", "no-copy"])
def test_vector_decode(vec, copy):
    wire = bytes.fromhex(vec["frame"])
    length, msg_type = F.parse_header(wire[: F.HEADER_SIZE])
    assert msg_type == vec["type"] and length == len(wire) - F.HEADER_SIZE
    msg = P.decode_message(msg_type, wire[F.HEADER_SIZE:], copy=copy)
    assert type(msg).__name__ == vec["class"]
    assert message_to_json(msg) == vec["fields"]
    assert msg == message_from_json(vec)


def test_vectors_decode_from_a_stream():
    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(b"".join(bytes.fromhex(v["frame"]) for v in VECTORS))
        reader.feed_eof()
        got = []
        while (msg := await P.read_message(reader)) is not None:
            got.append(msg)
        return got

    assert asyncio.run(go()) == [message_from_json(v) for v in VECTORS]


@pytest.mark.parametrize("vec", VECTORS, ids=_vid)
def test_vector_layout(vec):
    """The field-by-field split (built from PROTOCOL.md by the generator) is the frame."""
    assert "".join(h for _label, h in vec["layout"]) == vec["frame"]
    assert vec["layout"][0][0] == "length u32" and vec["layout"][1] == ["type u8", f"{vec['type']:02x}"]


def test_file_is_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("gen_protocol_vectors", ROOT / "scripts" / "gen_protocol_vectors.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.render(gen.all_vectors()) == VECTOR_PATH.read_text(), \
        "tests/vectors/protocol.json differs from what scripts/gen_protocol_vectors.py writes"


# --- PROTOCOL.md against the code ----------------------------------------------------------
def _section(title: str) -> str:
    start = DOC.index(title)
    nxt = re.compile(r"^#{2,3} ", re.M).search(DOC, start + len(title))
    return DOC[start : nxt.start() if nxt else len(DOC)]


def _table(header: str) -> list[list[str]]:
    """Rows of the markdown table whose header line starts with ``header``."""
    lines = DOC.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    assert rows, header
    return rows


def _number(cell: str) -> int:
    return int(re.match(r"[\d,]+", cell).group(0).replace(",", ""))


def test_doc_quotes_the_vector_file():
    assert "tests/vectors/protocol.json" in DOC
    assert "scripts/gen_protocol_vectors.py" in DOC


def test_doc_inline_vectors_are_vectors():
    section = _section("### Test vectors")
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        first, *lines = block.strip().splitlines()
        name = first.split()[0]
        wire = "".join(line.split()[0] for line in lines)
        assert re.fullmatch(r"[0-9a-f]+", wire), block
        frames = [v["frame"] for v in VECTORS if v["message"] == name]
        assert wire in frames, f"inline {name} vector in PROTOCOL.md is not in protocol.json"


def test_doc_message_table():
    rows = _table("| type | name | direction | body | answer |")
    assert {int(r[0]): r[1] for r in rows} == {t: n for n, t in TYPE_NAMES.items()}
    senders = set()
    for type_, name, direction, _body, answer in rows:
        word = answer.split()[0] if answer else ""
        assert TYPE_NAMES.get(word) == P.ANSWERS.get(int(type_)), f"{name}: answer {answer!r}"
        if "S→R" in direction or direction.startswith("both"):
            senders.add(int(type_))
    assert senders == set().union(*P.ALLOWED.values()), "messages the sender sends != messages the receiver accepts"


def test_doc_error_table():
    rows = _table("| code | constant | name | sent when | sender exits |")
    assert {int(r[0]): r[2] for r in rows} == P.ERROR_NAMES
    for code, const, _name, _when, exits in rows:
        assert getattr(P, const.strip("`")) == int(code)
        err = P.RemoteError("host", "message", int(code))
        assert (err.exit_code, err.retryable) == (_number(exits), "retried" in exits), f"ERROR {code}: {exits}"


def test_doc_state_table():
    rows = _table("| state | accepted | transitions |")
    states = {"start": P.STATE_START, "ready": P.STATE_READY, "open": P.STATE_OPEN}
    assert {states[r[0]]: {TYPE_NAMES[n.strip()] for n in r[1].split(",")} for r in rows} == P.ALLOWED


def test_doc_limits_table():
    from replicator.transport import server

    rows = _table("| constant | value | applies to | derivation |")
    for const, value, _applies, _derivation in rows:
        name = const.strip("`")
        module = next(m for m in (F, P, server) if hasattr(m, name))
        assert getattr(module, name) == _number(value), f"PROTOCOL.md says {name} = {value}"
    assert P.MAX_IDS_PER_FRAME == (F.MAX_FRAME_SIZE - 1024) // 32
    assert {r[0].strip("`") for r in rows} >= {"MAX_FRAME_SIZE", "MAX_IDS_PER_FRAME", "MAX_PACK_BLOBS", "MAX_NAMES",
                                                "MAX_SNAPSHOT_OBJECT", "MAX_CONFIG_OBJECT", "MAX_ERROR_MESSAGE",
                                                "MAX_SNAPSHOT_REFS", "MAX_LISTED_NAMES", "MAX_ID_LIST_OBJECT",
                                                "MAX_REMOTE_ID_BYTES"}

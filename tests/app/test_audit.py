"""The audit log: a SHA-256 chain over JSON lines; any modified or deleted line is found."""
from __future__ import annotations

import json

from replicator.app.audit import GENESIS, append_audit, line_hash, verify_audit
from tests.conftest import run_cli


def _log(tmp_path, n=5):
    p = tmp_path / "audit.jsonl"
    heads = [append_audit(str(p), {"event": "commit", "job": "j", "snapshot": f"{i:064x}", "generation": i})
             for i in range(1, n + 1)]
    return p, heads


def test_append_and_verify(tmp_path):
    p, heads = _log(tmp_path)
    lines = p.read_bytes().splitlines()
    assert json.loads(lines[0])["prev"] == GENESIS
    assert all(json.loads(lines[i])["prev"] == line_hash(lines[i - 1]) for i in range(1, len(lines)))
    check = verify_audit(str(p))
    assert check.ok and check.lines == 5 and check.head == heads[-1]
    assert verify_audit(str(p), head=heads[-1]).ok
    r = run_cli("audit", "verify", str(p), "--json", passphrase=None)
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True


def test_modified_line_detected(tmp_path):
    p, _ = _log(tmp_path)
    lines = p.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace('"generation":3', '"generation":33')
    p.write_text("".join(lines))
    check = verify_audit(str(p))
    assert not check.ok and check.bad_line == 4 and check.lines == 3
    r = run_cli("audit", "verify", str(p), passphrase=None)
    assert r.returncode == 5 and f"{p}:4:" in r.stdout


def test_deleted_line_detected(tmp_path):
    p, heads = _log(tmp_path)
    lines = p.read_text().splitlines(keepends=True)
    del lines[1]
    p.write_text("".join(lines))
    check = verify_audit(str(p))
    assert not check.ok and check.bad_line == 2
    r = run_cli("audit", "verify", str(p), "-q", passphrase=None)
    assert r.returncode == 5 and ":2:" in r.stderr


def test_deleted_last_line_needs_head(tmp_path):
    p, heads = _log(tmp_path)
    lines = p.read_text().splitlines(keepends=True)
    p.write_text("".join(lines[:-1]))
    assert verify_audit(str(p)).ok  # undetectable without a copy of the head...
    assert not verify_audit(str(p), head=heads[-1]).ok  # ...and found with it


def test_garbage_and_torn_lines(tmp_path):
    p, _ = _log(tmp_path, 2)
    with open(p, "ab") as f:
        f.write(b'{"event":"commit"')
    check = verify_audit(str(p))
    assert not check.ok and check.bad_line == 3 and "truncated" in check.problem
    p.write_text("not json\n")
    assert verify_audit(str(p)).bad_line == 1

"""Names from the other site never reach the terminal raw.

A file name (or source name) may hold ESC [ 31 m (colours), ESC ] 0 ; ... BEL (the window title),
a newline (a fake line of output), a bidirectional override, or bytes that are not UTF-8.  The
text output of diff, snapshots, restore, verify and forget shows them escaped, like ``ls -b``
(``\\x1b``, ``\\u202e``, a non-UTF-8 byte as ``\\xff``, a backslash doubled); ``--json`` keeps the
exact name (a non-UTF-8 byte as the surrogate ``os.fsdecode`` gives, which ``os.fsencode`` turns back).
"""
from __future__ import annotations

import json
import os

import pytest

from replicator.cli.common import printable
from replicator.repo.repository import Repository
from tests.conftest import PASSPHRASE

RAW_BAD = ("\x1b", "\x07", "\u202e", "\r")

NAMES = {
    # the name in the snapshot -> how text output shows it
    "\x1b[31mred.txt": "\\x1b[31mred.txt",
    "title\x1b]0;pwned\x07.txt": "title\\x1b]0;pwned\\x07.txt",
    "new\nline.txt": "new\\x0aline.txt",
    "cr\rhide.txt": "cr\\x0dhide.txt",
    "\u202eevil.txt": "\\u202eevil.txt",
    "back\\slash.txt": "back\\\\slash.txt",
    os.fsdecode(b"bad\xff\xfe.txt"): "bad\\xff\\xfe.txt",
    "caf\u00e9 \u65e5\u672c.txt": "caf\u00e9 \u65e5\u672c.txt",  # printable text of any script stays as it is
}


def no_raw_controls(text: str) -> None:
    for ch in RAW_BAD:
        assert ch not in text, f"raw {ch!r} in output: {text!r}"
    assert not any(0xDC80 <= ord(c) <= 0xDCFF for c in text)


@pytest.mark.parametrize("name,shown", sorted(NAMES.items()))
def test_printable_table(name, shown):
    assert printable(name) == shown


def test_printable_is_unambiguous():
    # a name that *is* the four characters \x1b is shown differently from one holding ESC
    assert printable("\\x1b") != printable("\x1b")
    assert printable("a\U000e0001b") == "a\\U000e0001b"  # a format character above U+FFFF


@pytest.fixture
def repo(tmp_path, cli):
    path = tmp_path / "repo"
    assert cli("init", str(path), "--kdf-work", "14").returncode == 0
    return path


def _make(src, names) -> None:
    for name in names:
        with open(os.path.join(os.fsencode(src), os.fsencode(name)), "wb") as f:
            f.write(name.encode("utf-8", "surrogateescape") * 20)


def test_diff_escapes_names_and_json_keeps_them(cli, repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "plain.txt").write_text("x")
    first = json.loads(cli("sync", str(src), str(repo), "--json").stdout)["snapshot"]
    _make(src, NAMES)
    # --no-cache: the state cache (sync/state.py) cannot store a name that is not UTF-8 yet
    r = cli("sync", str(src), str(repo), "--json", "--no-cache")
    assert r.returncode == 0, r.stderr
    second = json.loads(r.stdout)["snapshot"]
    r = cli("diff", str(repo), first[:12], second[:12])
    assert r.returncode == 0, r.stderr
    no_raw_controls(r.stdout + r.stderr)
    lines = r.stdout.splitlines()
    assert len(lines) == len(NAMES) + 1  # one line per change: a newline in a name makes no extra line
    for shown in NAMES.values():
        assert f"+ {shown}" in lines
    r = cli("diff", str(repo), first[:12], second[:12], "--json")
    assert r.returncode == 0, r.stderr
    assert {c["path"] for c in json.loads(r.stdout)["changes"]} == set(NAMES)


def test_snapshots_and_forget_escape_the_source_name(cli, repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    evil = "\x1b]0;pwned\x07ward\x1b[2J"
    assert cli("sync", str(src), str(repo), "--name", evil).returncode == 0
    for args in (("snapshots", str(repo)), ("forget", str(repo), "--keep-last", "1", "--dry-run")):
        r = cli(*args)
        assert r.returncode == 0, r.stderr
        no_raw_controls(r.stdout + r.stderr)
        assert "\\x1b]0;pwned\\x07ward\\x1b[2J" in r.stdout
    r = cli("snapshots", str(repo), "--json")
    assert json.loads(r.stdout)["snapshots"][0]["source"] == evil


def test_restore_and_verify_escape_the_paths_they_report(cli, repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    evil = "\x1b[31mscan\n.dcm"
    (src / evil).write_bytes(os.urandom(50_000))
    assert cli("sync", str(src), str(repo)).returncode == 0
    with Repository.open(str(repo), PASSPHRASE.encode()) as r:
        (entry,) = [e for e in r.walk_tree(r.find_snapshot().tree) if e.path == evil]
        pack, blob = r.index.lookup(entry.chunks[0])
    pack_path = os.path.join(repo, *pack.split("/"))
    data = bytearray(open(pack_path, "rb").read())
    data[blob.offset + blob.length // 2] ^= 1  # the file's chunk fails; the trees still read
    open(pack_path, "wb").write(bytes(data))
    shown = "\\x1b[31mscan\\x0a.dcm"
    for extra in ((), ("-q",)):
        r = cli("restore", str(repo), str(tmp_path / f"out{len(extra)}"), *extra)
        assert r.returncode == 5, r.stdout + r.stderr
        no_raw_controls(r.stdout + r.stderr)
        assert shown in (r.stderr if extra else r.stdout)
    r = cli("restore", str(repo), str(tmp_path / "outj"), "--json")
    assert [e["path"] for e in json.loads(r.stdout)["errors"]] == [evil]
    r = cli("verify", str(repo), "--data")
    assert r.returncode == 5
    no_raw_controls(r.stdout + r.stderr)
    assert shown in r.stdout

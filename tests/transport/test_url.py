"""Destination URLs (transport/url.py): what the wire cannot carry is a usage error at parse time.

A repository name travels in OPEN as a protocol name (at most 255 bytes of
UTF-8, PROTOCOL.md 3): a longer one used to get through parsing and fail when
OPEN was encoded (exit 70, "internal error").  urlsplit silently removes tabs
and newlines and strips leading control characters, so "ssh://h/am\\niens"
used to name "amiens": a control character anywhere is refused, never stripped.
"""
from __future__ import annotations

import pytest

from replicator.errors import UsageError
from replicator.transport.frames import MAX_NAME_SIZE
from replicator.transport.url import parse_url
from tests.conftest import run_cli

OK = "ssh://rep@amiens.example:2222/amiens-hospitals"


def test_plain_url_still_parses():
    u = parse_url(OK)
    assert (u.user, u.host, u.port, u.name) == ("rep", "amiens.example", 2222, "amiens-hospitals")
    assert parse_url("ssh://rep@h/" + "n" * MAX_NAME_SIZE).name == "n" * MAX_NAME_SIZE


@pytest.mark.parametrize("name", ["n" * (MAX_NAME_SIZE + 1), "n" * 300, "é" * 128], ids=["256", "300", "256-utf8"])
def test_name_longer_than_the_wire_allows(name):
    with pytest.raises(UsageError, match="255 bytes"):
        parse_url(f"ssh://rep@h/{name}")


CONTROL = ["\n", "\r", "\t", "\x00", "\x01", "\x1b", "\x7f", "\x85", "\u2028"]


@pytest.mark.parametrize("char", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
@pytest.mark.parametrize("where", ["name", "host", "user", "start", "end"])
def test_control_character_refused_not_stripped(char, where):
    url = {"name": f"ssh://rep@h/ami{char}ens", "host": f"ssh://rep@am{char}iens/x", "user": f"ssh://r{char}ep@h/x",
           "start": f"{char}ssh://rep@h/x", "end": f"ssh://rep@h/x{char}"}[where]
    with pytest.raises(UsageError, match="control character"):
        parse_url(url)


def test_cli_long_name_is_a_usage_error(tmp_path):
    """Exit 2 with one line, before any connection is tried (port 9 on loopback: discard, nobody listens)."""
    src = tmp_path / "src"
    src.mkdir()
    r = run_cli("sync", str(src), "ssh://rep@127.0.0.1:9/" + "n" * 300, "--identity", str(tmp_path / "id"),
                "--known-hosts", str(tmp_path / "kh"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "255 bytes" in r.stderr, r.stderr


def test_cli_long_name_against_a_real_server(site, tmp_path):
    """Used to connect, then fail encoding OPEN: exit 70 ("internal error")."""
    src = tmp_path / "src"
    src.mkdir()
    site.pin()
    r = run_cli(*site.sync_args(src, name="n" * 300))
    assert r.returncode == 2, r.stderr
    assert "internal error" not in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_cli_newline_in_url_is_refused(site, tmp_path):
    """ "amiens" exists at the server: with the newline stripped, the sync used to succeed against it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    site.pin()
    r = run_cli(*site.sync_args(src, name="ami\nens"))
    assert r.returncode == 2, r.stderr
    assert "control character" in r.stderr and site.snapshots() == []

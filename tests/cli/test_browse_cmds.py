"""ls, cat, find and stats: looking inside snapshots without restoring them, locally and over ssh://."""
from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import types

import pytest

from tests.conftest import PASSPHRASE, ROOT, run_cli
from tests.transport.conftest import site  # noqa: F401 - the fixture of a real serve

ESC_NAME = "bad\x1b[31mname.txt"
RAW_NAME = os.fsdecode(b"caf\xe9.txt")  # latin-1, not UTF-8


def _src(root):
    rnd = random.Random(4)
    (root / "scans" / "2024").mkdir(parents=True)
    (root / "lab").mkdir()
    (root / "scans" / "2024" / "ct.dcm").write_bytes(rnd.randbytes(2_500_000))
    (root / "lab" / "results.csv").write_text("patient;glucose\n1;5.4\n")
    os.symlink("lab/results.csv", root / "link")
    for name in (ESC_NAME, RAW_NAME):
        with open(os.path.join(os.fsencode(root / "lab"), os.fsencode(name)), "wb") as f:
            f.write(b"x")
    return root


def _lab(two) -> str:
    """A second source, 'lab', of other data."""
    other = two.src.parent / "lab-src"
    other.mkdir()
    (other / "results.csv").write_text("sample;value\nA;1\n")
    r = run_cli("sync", str(other), two.repo, "--name", "lab", "--json", "--no-cache")
    assert r.returncode == 1 and "starts a new lineage" in r.stdout, r.stderr  # a second source from this host
    return json.loads(r.stdout)["snapshot"]


def _cli_bytes(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """run_cli with stdout kept as bytes (what cat writes)."""
    full_env = {**os.environ, "REPLICATOR_PASSPHRASE": PASSPHRASE, **(env or {})}
    return subprocess.run([sys.executable, "-m", "replicator", *args], capture_output=True, env=full_env, cwd=ROOT,
                          timeout=600, stdin=subprocess.DEVNULL)


def _sync(src, repo, name="hospital", *extra) -> str:
    r = run_cli("sync", str(src), str(repo), "--name", name, "--json", "--no-cache", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["snapshot"]


@pytest.fixture
def two(tmp_path):
    """A repository with two snapshots of 'hospital': results.csv changes between them."""
    src = _src(tmp_path / "src")
    repo = tmp_path / "repo"
    assert run_cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    s1 = _sync(src, repo)
    (src / "lab" / "results.csv").write_text("patient;glucose\n1;5.4\n2;6.1\n")
    s2 = _sync(src, repo)
    return types.SimpleNamespace(src=src, repo=str(repo), s1=s1, s2=s2)


# --- ls --------------------------------------------------------------------------------------------

def test_ls_long_format(two):
    r = run_cli("ls", two.repo, "latest")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split()[-1] for ln in lines if not ln.startswith("l")] == ["lab", "scans"]
    link = next(ln for ln in lines if ln.startswith("l"))
    st = os.lstat(two.src / "link")
    assert link.split() == ["lrwxrwxrwx", f"{st.st_uid}/{st.st_gid}", "15",
                            link.split()[3], "link", "->", "lab/results.csv"]
    assert link.split()[3].endswith("Z") and "T" in link.split()[3]  # RFC 3339
    r = run_cli("ls", two.repo, "latest", "/lab/results.csv")
    st = os.stat(two.src / "lab" / "results.csv")
    assert r.stdout.split()[0] == "-rw-r--r--" and r.stdout.split()[2] == str(st.st_size)
    assert r.stdout.split()[-1] == "lab/results.csv"


def test_ls_escapes_names_and_json_keeps_them(two):
    r = run_cli("ls", two.repo, two.s2[:10], "lab")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "bad\\x1b[31mname.txt" in r.stdout and "caf\\xe9.txt" in r.stdout
    assert len(r.stdout.splitlines()) == 3
    r = run_cli("ls", two.repo, two.s2[:10], "lab", "--json")
    doc = json.loads(r.stdout)
    assert doc["snapshot"] == two.s2 and doc["path"] == "lab"
    assert {e["name"] for e in doc["entries"]} == {ESC_NAME, RAW_NAME, "results.csv"}
    assert os.fsencode(next(e["path"] for e in doc["entries"] if e["name"] == RAW_NAME)) == b"lab/caf\xe9.txt"


def test_ls_recursive_lists_every_path(two):
    r = run_cli("ls", two.repo, "latest", "-R", "--json")
    assert r.returncode == 0, r.stderr
    paths = [e["path"] for e in json.loads(r.stdout)["entries"]]
    expected = sorted(os.path.relpath(os.path.join(d, n), two.src) for d, ds, fs in os.walk(two.src) for n in ds + fs)
    assert sorted(paths) == expected
    text = run_cli("ls", two.repo, "latest", "scans", "--recursive").stdout.splitlines()
    assert [ln.split()[-1] for ln in text] == ["scans/2024", "scans/2024/ct.dcm"]


def test_ls_bad_paths_and_snapshots_are_one_line_errors(two):
    cases = [
        (("ls", two.repo, "latest", "nosuch"), 2, "has no path 'nosuch'"),
        (("ls", two.repo, "latest", "lab/results.csv/x"), 2, "has no path"),
        (("ls", two.repo, "ffffffffff"), 3, "no snapshot matches"),
        (("ls", two.repo, "latest", "--source", "nosuch"), 3, "no snapshot of source 'nosuch'"),
    ]
    for args, rc, message in cases:
        r = run_cli(*args)
        assert r.returncode == rc and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_latest_needs_a_source_when_there_are_several(two):
    _lab(two)
    r = run_cli("ls", two.repo, "latest")
    assert r.returncode == 2 and "choose one with --source NAME (or a snapshot id)" in r.stderr, r.stderr
    r = run_cli("ls", two.repo, "latest", "--source", "lab", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["source"] == "lab"
    r = run_cli("ls", two.repo, two.s1[:12])  # an id needs no source
    assert r.returncode == 0 and json.loads(run_cli("ls", two.repo, two.s1[:12], "--json").stdout)["snapshot"] == two.s1


# --- cat -------------------------------------------------------------------------------------------

def test_cat_writes_the_files_bytes(two):
    r = _cli_bytes("cat", two.repo, "latest", "scans/2024/ct.dcm")
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert r.stdout == (two.src / "scans" / "2024" / "ct.dcm").read_bytes()
    r = run_cli("cat", two.repo, two.s1[:8], "/lab/results.csv")
    assert r.stdout == "patient;glucose\n1;5.4\n"


def test_cat_streams_chunk_by_chunk(two, monkeypatch, capsys):
    """One write per chunk, in order: the file is never joined in memory."""
    from replicator.cli import main

    writes: list[int] = []

    class Out(io.BytesIO):
        def write(self, b):
            writes.append(len(b))
            return super().write(b)

    out = Out()
    monkeypatch.setattr("sys.stdout", types.SimpleNamespace(buffer=out, write=lambda s: None, flush=lambda: None))
    monkeypatch.setenv("REPLICATOR_PASSPHRASE", "correct horse battery staple")
    assert main(["cat", two.repo, "latest", "scans/2024/ct.dcm"]) == 0
    assert out.getvalue() == (two.src / "scans" / "2024" / "ct.dcm").read_bytes()
    assert len(writes) > 1 and max(writes) < len(out.getvalue())


def test_cat_refuses_what_is_not_a_file(two):
    cases = [
        (("cat", two.repo, "latest", "lab"), 2, "is a directory"),
        (("cat", two.repo, "latest", "/"), 2, "is a directory"),
        (("cat", two.repo, "latest", "link"), 2, "is a symlink to lab/results.csv"),
        (("cat", two.repo, "latest", "nosuch.txt"), 2, "has no path 'nosuch.txt'"),
        (("cat", two.repo, "latest", "lab/results.csv", "--json"), 2, "--json does not apply"),
    ]
    for args, rc, message in cases:
        r = run_cli(*args)
        assert r.returncode == rc and message in r.stderr and r.stdout == "", (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


def test_a_lost_pack_is_an_integrity_error(two):
    packs = [os.path.join(d, n) for d, _ds, fs in os.walk(os.path.join(two.repo, "data")) for n in fs]
    for p in packs:
        os.unlink(p)
    for args in (("cat", two.repo, "latest", "lab/results.csv"), ("ls", two.repo, "latest"), ("stats", two.repo),
                 ("find", two.repo, "*.csv")):
        r = run_cli(*args)
        assert r.returncode == 5 and "integrity error" in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


# --- find ------------------------------------------------------------------------------------------

def test_find_across_snapshots(two):
    r = run_cli("find", two.repo, "*.csv")
    assert r.returncode == 0, r.stderr
    rows = [ln.split("  ") for ln in r.stdout.splitlines()]
    # both versions of results.csv, the newest first
    assert [(sid, path) for sid, _t, path in rows] == [(two.s2[:16], "lab/results.csv"), (two.s1[:16], "lab/results.csv")]
    assert all(t.endswith("Z") for _s, t, _p in rows)
    r = run_cli("find", two.repo, "scans/*", "--json")
    doc = json.loads(r.stdout)
    assert [(m["snapshot"], m["path"]) for m in doc["matches"]] == [(two.s2, "scans/2024"), (two.s2, "scans/2024/ct.dcm")]
    assert doc["snapshots_searched"] == 2
    r = run_cli("find", two.repo, "*.txt", "--snapshot", two.s1[:10], "--json")
    assert {m["name"] for m in json.loads(r.stdout)["matches"]} == {ESC_NAME, RAW_NAME}
    text = run_cli("find", two.repo, "*.txt").stdout
    assert "\x1b" not in text and "bad\\x1b[31mname.txt" in text


def test_find_options_and_bad_input(two):
    _lab(two)
    r = run_cli("find", two.repo, "results.csv", "--source", "lab", "--json")
    assert [m["source"] for m in json.loads(r.stdout)["matches"]] == ["lab"]
    assert len(json.loads(run_cli("find", two.repo, "results.csv", "--json").stdout)["matches"]) == 3
    for args, rc, message in [
        (("find", two.repo, ""), 2, "the pattern is empty"),
        (("find", two.repo, "*", "--source", "nosuch"), 3, "no snapshot of source 'nosuch'"),
        (("find", two.repo, "*", "--snapshot", two.s1[:10], "--source", "lab"), 2, "is of source 'hospital'"),
    ]:
        r = run_cli(*args)
        assert r.returncode == rc and message in r.stderr, (args, r.stderr)


# --- stats -----------------------------------------------------------------------------------------

def test_stats(two):
    r = run_cli("stats", two.repo, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    files = [p for p in two.src.rglob("*") if p.is_file() and not p.is_symlink()]
    size = sum(p.stat().st_size for p in files)
    (src,) = doc["sources"]
    assert (src["source"], src["snapshots"], src["latest"], src["latest_files"]) == ("hospital", 2, two.s2, len(files))
    assert src["latest_bytes"] == size and src["latest_time"].endswith("Z")
    repo = doc["repository"]
    assert repo["logical_bytes"] == 2 * size - len("2;6.1\n")
    assert repo["dedup_ratio"] > 1.9 and 0.9 < repo["compression_ratio"] < 1.1  # random data does not compress
    assert repo["packs"] >= 1 and repo["stored_bytes"] > repo["unique_chunk_stored_bytes"] > 0
    text = run_cli("stats", two.repo).stdout
    assert "hospital" in text and "deduplication: 2.00x" in text


# --- over ssh:// -----------------------------------------------------------------------------------

def test_browsing_over_ssh(site, tmp_path):  # noqa: F811 - the fixture
    src = _src(tmp_path / "src")
    site.pin()
    assert run_cli(*site.sync_args(src)).returncode == 0
    remote = ["--identity", str(site.keys["reader"]), "--known-hosts", str(site.known_hosts)]
    r = run_cli("ls", site.url(), "latest", "lab", "--json", *remote)
    assert r.returncode == 0, r.stderr
    assert {e["name"] for e in json.loads(r.stdout)["entries"]} == {ESC_NAME, RAW_NAME, "results.csv"}
    r = _cli_bytes("cat", site.url(), "latest", "scans/2024/ct.dcm", *remote)
    assert r.returncode == 0 and r.stdout == (src / "scans" / "2024" / "ct.dcm").read_bytes(), r.stderr
    r = run_cli("find", site.url(), "*.dcm", "--json", *remote)
    assert [m["path"] for m in json.loads(r.stdout)["matches"]] == ["scans/2024/ct.dcm"]
    r = run_cli("stats", site.url(), "--json", *remote)
    assert r.returncode == 0 and json.loads(r.stdout)["sources"][0]["latest_files"] == 4
    r = run_cli("cat", site.url(), "latest", "lab", *remote)
    assert r.returncode == 2 and "is a directory" in r.stderr

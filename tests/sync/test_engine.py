"""The sync engine: torn reads, the state cache, skipped files, dedup; SyncRun, its events, its report."""
from __future__ import annotations

import dataclasses
import json
import os

import pytest

from replicator.constants import EXIT_WARNING
from replicator.core.chunker import Chunker
from replicator.errors import UsageError
from replicator.repo.repository import Repository
from replicator.sync import engine
from replicator.sync.engine import DESTINATION, EntryEvent, FileDone, FileJob, SyncReport, SyncRun
from replicator.sync.options import SyncOptions
from replicator.sync.pipeline import INLINE_MAX, ChunkEvent, ChunkResult, Pipeline
from replicator.sync.state import StateCache, state_path
from tests.conftest import run_cli
from tests.sync.conftest import SMALL

DAMAGED = "snapshots/" + "0" * 64  # a snapshot object that does not open


def run(repo, src, options: SyncOptions | str = "s", **kw) -> SyncReport:
    """One SyncRun into ``repo`` through a writer of its own (one commit per writer)."""
    if isinstance(options, str):
        options = SyncOptions(options, use_state=False)
    with repo.writer() as dest:
        return SyncRun(str(src), dest, options, **kw).run()


def contents(repo, snap) -> dict[str, bytes]:
    return {e.path: b"".join(repo.read_blob(c) for c in e.chunks)
            for e in repo.walk_tree(snap.tree) if e.kind == "file"}


def _grow_while_reading(monkeypatch, target: str, times: int):
    """Append to ``target`` after its first chunk is read, the first ``times`` reads."""
    real = Chunker.chunks
    state = {"n": 0}

    def chunks(self, f, size_hint=None):
        first = True
        for c in real(self, f, size_hint):
            yield c
            if first and state["n"] < times and _is(f, target):
                state["n"] += 1
                with open(target, "ab") as g:
                    g.write(b"more data written by the application\n")
            first = False

    monkeypatch.setattr(Chunker, "chunks", chunks)
    return state


def _is(f, target: str) -> bool:
    try:
        return os.path.samefile(f"/proc/self/fd/{f.fileno()}", target)
    except OSError:
        return False


def _opened(monkeypatch, src) -> list[str]:
    """Record the files under ``src`` that are opened (relative paths)."""
    seen: list[str] = []
    real_open = os.open

    def spy(path, flags, *a, **kw):
        if str(path).startswith(f"{src}{os.sep}"):
            seen.append(os.path.relpath(str(path), src))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(engine.os, "open", spy)
    return seen


# --- behaviour (unchanged by the SyncRun refactoring) ---------------------------------
def test_file_changing_while_read_is_read_again(src, repo, monkeypatch):
    log = src / "app.log"
    log.write_bytes(os.urandom(200_000))
    state = _grow_while_reading(monkeypatch, str(log), times=1)
    report = run(repo, src)
    assert state["n"] == 1
    assert not report.warnings
    assert contents(repo, report.snapshot)["app.log"] == log.read_bytes()


def test_file_that_keeps_changing_is_left_out_never_torn(src, repo, monkeypatch):
    (src / "stable.txt").write_bytes(b"stable\n" * 1000)
    log = src / "busy.log"
    log.write_bytes(os.urandom(200_000))
    _grow_while_reading(monkeypatch, str(log), times=100)
    report = run(repo, src)
    assert [p for p, _m in report.warnings] == ["busy.log"]
    assert "changed while being read" in report.warnings[0][1]
    got = contents(repo, report.snapshot)
    assert "busy.log" not in got and got["stable.txt"] == b"stable\n" * 1000


def test_state_cache_skips_unchanged_files_and_notices_changes(tmp_path, src, repo, monkeypatch):
    for i in range(5):
        (src / f"f{i}").write_bytes(os.urandom(50_000))
    options = SyncOptions("s", cache_dir=str(tmp_path / "cache"))
    first = run(repo, src, options)
    assert first.bytes_read == 250_000 and first.files_unchanged == 0
    assert os.path.exists(state_path(str(tmp_path / "cache"), repo.id, "s"))  # the run opened (and closed) it
    (src / "f2").write_bytes(os.urandom(50_000))
    opened = _opened(monkeypatch, src)
    second = run(repo, src, options)
    assert second.files_unchanged == 4 and second.bytes_read == 50_000
    assert opened == ["f2"]  # unchanged files are not even opened
    assert contents(repo, second.snapshot)["f2"] == (src / "f2").read_bytes()


def test_use_state_false_reads_everything_and_leaves_the_cache_alone(tmp_path, src, repo):
    (src / "a").write_bytes(os.urandom(50_000))
    cache = tmp_path / "cache"
    run(repo, src, SyncOptions("s", cache_dir=str(cache)))
    before = os.stat(state_path(str(cache), repo.id, "s")).st_mtime_ns
    report = run(repo, src, SyncOptions("s", cache_dir=str(cache), use_state=False))
    assert report.files_unchanged == 0 and report.bytes_read == 50_000
    assert os.stat(state_path(str(cache), repo.id, "s")).st_mtime_ns == before


def test_state_cache_row_naming_missing_chunks_is_not_trusted(tmp_path, src, repo):
    (src / "a").write_bytes(os.urandom(100_000))
    cache = StateCache(str(tmp_path / "state.sqlite"))
    options = SyncOptions("s")
    run(repo, src, options, state=cache)
    # A cache from another repository (or after a prune) names chunks this one lacks.
    other = Repository.init(str(tmp_path / "other"), b"pw", log2n=14, params=SMALL)
    report = run(other, src, options, state=cache)
    assert report.files_unchanged == 0 and report.bytes_read == 100_000
    assert contents(other, report.snapshot)["a"] == (src / "a").read_bytes()
    other.close()
    cache.close()


def test_only_missing_chunks_are_stored(src, repo):
    data = os.urandom(1_000_000)
    (src / "one").write_bytes(data)
    first = run(repo, src)
    (src / "copy").write_bytes(data)
    second = run(repo, src)
    assert first.chunks_new == first.chunks_total > 10
    assert second.chunks_new == 0 and second.chunks_total == 2 * first.chunks_total


def test_unreadable_file_is_reported_and_skipped(src, repo, monkeypatch):
    (src / "ok").write_bytes(b"fine")
    (src / "secret").write_bytes(b"no access")
    real_open = os.open

    def fake_open(path, flags, *a, **kw):
        if str(path).endswith("secret"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(engine.os, "open", fake_open)
    report = run(repo, src)
    assert report.warnings == [("secret", "cannot open: Permission denied")]
    assert set(contents(repo, report.snapshot)) == {"ok"}


def test_hard_links_share_chunks_and_are_recorded(src, repo, monkeypatch):
    (src / "a").write_bytes(os.urandom(70_000))
    os.link(src / "a", src / "b")
    opened = _opened(monkeypatch, src)
    report = run(repo, src)
    assert report.hardlinks == 1 and report.files == 2
    assert opened == ["a"]
    entries = {e.path: e for e in repo.walk_tree(report.snapshot.tree)}
    assert entries["b"].link_to == "a" and entries["b"].chunks == entries["a"].chunks


def test_progress_gets_every_byte_read(src, repo):
    (src / "a").write_bytes(os.urandom(300_000))
    (src / "b").write_bytes(b"small")
    got: list[int] = []
    report = run(repo, src, progress=got.append)
    assert sum(got) == report.bytes_read == 300_005 and len(got) == report.chunks_total


def test_exception_from_progress_aborts_and_commits_nothing(tmp_path, src, repo):
    class Cancelled(Exception):
        pass

    (src / "a").write_bytes(os.urandom(300_000))
    (src / "b").write_bytes(os.urandom(300_000))
    calls = []

    def progress(n: int) -> None:
        calls.append(n)
        if len(calls) == 3:
            raise Cancelled()

    options = SyncOptions("s", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(Cancelled):
        run(repo, src, options, progress=progress)
    assert repo.snapshots() == []
    report = run(repo, src, options)  # the next run syncs everything, nothing taken from a half run
    assert report.files == 2 and report.files_unchanged == 0 and report.snapshot.generation == 1


# --- the class API -------------------------------------------------------------------
def test_a_sync_run_runs_once(src, repo):
    (src / "a").write_bytes(b"x")
    with repo.writer() as dest:
        sync_run = SyncRun(str(src), dest, SyncOptions("s", use_state=False))
        report = sync_run.run()
        assert report is sync_run.report and report.files == 1
        with pytest.raises(RuntimeError):
            sync_run.run()


def test_excludes_from_options(src, repo):
    (src / "keep.txt").write_bytes(b"k")
    (src / "drop.tmp").write_bytes(b"d")
    (src / "cache").mkdir()
    (src / "cache" / "x").write_bytes(b"x")
    report = run(repo, src, SyncOptions("s", excludes=["*.tmp", "cache"], use_state=False))
    assert set(contents(repo, report.snapshot)) == {"keep.txt"}


def test_missing_source_raises(tmp_path, repo):
    with pytest.raises(FileNotFoundError):
        run(repo, tmp_path / "nothing")


def test_options_must_be_sync_options(src, repo):
    with repo.writer() as dest, pytest.raises(TypeError):
        SyncRun(str(src), dest, {"source": "s"})  # type: ignore[arg-type]


# --- events and the pipeline ---------------------------------------------------------
def test_events_are_frozen_and_slotted():
    job = FileJob(entry=None, key=(0, 0, 0, 0))  # type: ignore[arg-type]
    for event in (ChunkEvent(job, ChunkResult(b"i", 1)), FileDone(job), EntryEvent(None)):  # type: ignore[arg-type]
        assert not hasattr(event, "__dict__")
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(event, dataclasses.fields(event)[0].name, None)


def test_pipeline_keeps_events_in_submission_order():
    """Small chunks (hashed inline), large ones (in worker threads) and pass-through events interleave;
    the consumer sees them exactly in submission order, each chunk as a ChunkEvent with its result."""
    got: list = []
    pipe = Pipeline(lambda data: data[:1] + len(data).to_bytes(4, "big"), lambda _id: False, 1, got.append,
                    workers=4, max_in_flight=3)
    submitted: list = []
    try:
        for i in range(40):
            data = bytes([i]) * (INLINE_MAX * 2 if i % 3 else 100 + i)  # threads and inline, mixed
            pipe.submit_chunk(f"job{i}", data)
            submitted.append(("chunk", f"job{i}", bytes([i]) + len(data).to_bytes(4, "big")))
            if i % 5 == 0:
                marker = EntryEvent(f"entry{i}")  # type: ignore[arg-type]
                pipe.submit(marker)
                submitted.append(("event", marker))
        pipe.drain()
    finally:
        pipe.close()
    seen = [("chunk", e.job, e.result.id) if type(e) is ChunkEvent else ("event", e) for e in got]
    assert seen == submitted
    assert all(e.result.payload is not None for e in got if type(e) is ChunkEvent)  # none known: compressed


def test_known_chunks_are_not_compressed():
    got: list = []
    pipe = Pipeline(lambda data: b"id", lambda _id: True, 1, got.append, workers=1)
    pipe.submit_chunk("j", b"x" * (INLINE_MAX + 1))
    pipe.submit_chunk("j", b"x")
    pipe.drain()
    pipe.close()
    assert [e.result for e in got] == [ChunkResult(b"id", INLINE_MAX + 1), ChunkResult(b"id", 1)]


def test_closed_pipeline_drops_what_is_queued():
    got: list = []
    pipe = Pipeline(lambda data: b"id", lambda _id: False, 1, got.append, workers=1)
    pipe.submit_chunk("j", b"x" * (INLINE_MAX + 1))
    pipe.submit(FileDone("j"))  # type: ignore[arg-type]
    pipe.close()
    assert got == []


def test_unknown_event_is_a_programming_error(src, repo):
    (src / "a").write_bytes(b"x")
    with repo.writer() as dest:
        sync_run = SyncRun(str(src), dest, SyncOptions("s", use_state=False))
        with pytest.raises(TypeError, match="unknown event tuple"):
            sync_run._consume(("entry", None))  # the tagged tuples of old are not events


def test_unknown_event_in_a_run_aborts_it_and_commits_nothing(src, repo, monkeypatch):
    (src / "a").write_bytes(b"x")
    real = SyncRun._visit

    def visit(self, item):
        real(self, item)
        self._pipe.submit("not an event")

    monkeypatch.setattr(SyncRun, "_visit", visit)
    with pytest.raises(TypeError, match="unknown event str"):
        run(repo, src)
    assert repo.snapshots() == []


# --- the report: the destination's warnings and stats --------------------------------
def _damage_a_snapshot(repo_path) -> None:
    path = os.path.join(repo_path, DAMAGED)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"junk, not a sealed snapshot")


def test_report_carries_the_destination_warnings_and_stats(tmp_path, src, repo):
    (src / "a").write_bytes(os.urandom(50_000))
    (src / "pipe").mkdir()
    os.mkfifo(src / "pipe" / "fifo")
    _damage_a_snapshot(tmp_path / "repo")
    report = run(repo, src)
    assert report.warnings[0][0] == "pipe/fifo"  # the source's, in walk order, then the destination's
    assert report.warnings[1][0] == DESTINATION == "(destination)"
    assert report.warnings[1][1].endswith("(ignored when numbering this snapshot)")
    assert len(report.warnings) == 2
    assert report.destination_stats["packs_written"] >= 1 and report.destination_stats["bytes_written"] > 0
    d = report.as_dict()
    assert d["warnings"][1] == {"path": "(destination)", "message": report.warnings[1][1]}
    assert d["destination_stats"] == report.destination_stats
    assert d["snapshot"] == report.snapshot.id and d["files"] == 1
    json.dumps(d)


def test_report_without_warnings(src, repo):
    (src / "a").write_bytes(b"x")
    report = run(repo, src)
    assert report.warnings == [] and report.as_dict()["warnings"] == []


# --- the CLI ---------------------------------------------------------------------------


def test_cli_quiet_prints_destination_warnings_and_exits_1(tmp_path, src, cli_repo):
    (src / "a").write_bytes(b"record\n")
    _damage_a_snapshot(cli_repo)
    r = run_cli("sync", str(src), str(cli_repo), "--name", "x", "-q")
    assert r.returncode == EXIT_WARNING, r.stderr
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("replicator: warning: (destination): ")
    assert lines[0].endswith("(ignored when numbering this snapshot)")


def test_cli_json_includes_destination_warnings(tmp_path, src, cli_repo):
    (src / "a").write_bytes(b"record\n")
    _damage_a_snapshot(cli_repo)
    r = run_cli("sync", str(src), str(cli_repo), "--name", "x", "--json")
    assert r.returncode == EXIT_WARNING, r.stderr
    s = json.loads(r.stdout)
    assert [w["path"] for w in s["warnings"]] == ["(destination)"]
    assert s["repository_warnings"] == [s["warnings"][0]["message"]]
    assert s["packs_written"] == s["destination_stats"]["packs_written"] >= 1 and s["files"] == 1


def test_cli_quiet_prints_skipped_files_and_exits_1(tmp_path, src, cli_repo):
    (src / "a").write_bytes(b"record\n")
    os.mkfifo(src / "fifo")
    r = run_cli("sync", str(src), str(cli_repo), "-q")
    assert r.returncode == EXIT_WARNING
    assert r.stdout == "" and r.stderr.startswith("replicator: warning: fifo: ")


def test_cli_bad_workers_is_a_usage_error(src, cli_repo):
    r = run_cli("sync", str(src), str(cli_repo), "--workers", "0")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["replicator: error: sync: workers must be a positive integer, not 0"]


# --- SyncOptions -----------------------------------------------------------------------
def test_options_defaults_and_normalisation():
    o = SyncOptions("host:/data", excludes=["*.tmp", "cache"])
    assert o.excludes == ("*.tmp", "cache") and o.use_state and o.cache_dir is None and o.workers is None
    assert o == SyncOptions("host:/data", excludes=("*.tmp", "cache"))
    hash(o)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.workers = 2  # type: ignore[misc]
    assert dataclasses.replace(o, workers=3).workers == 3


@pytest.mark.parametrize("kwargs", [
    {"source": ""}, {"source": "  "}, {"source": None},
    {"excludes": "*.tmp"}, {"excludes": 3}, {"excludes": ["ok", b"bytes"]},
    {"use_state": "yes"}, {"cache_dir": ""}, {"cache_dir": 5},
    {"workers": 0}, {"workers": -1}, {"workers": True}, {"workers": "2"}, {"workers": 1.5},
])
def test_bad_options_raise_a_one_line_usage_error(kwargs):
    args = {"source": "s", **kwargs}
    with pytest.raises(UsageError) as info:
        SyncOptions(**args)
    assert "\n" not in str(info.value) and str(info.value).startswith("sync: ")
    with pytest.raises(UsageError):  # replace() validates too
        dataclasses.replace(SyncOptions("s"), **kwargs)


def test_state_cache_takes_names_that_are_not_utf8(tmp_path, repo, src):
    """A file name is bytes: one that is not UTF-8 (Latin-1 from an old system) must not crash the cache
    (0.1.0: UnicodeEncodeError, exit 70), and the next sync takes it unchanged from the cache."""
    name = os.fsdecode(b"r\xe9sultats-caf\xe9.txt")  # Latin-1 bytes, invalid as UTF-8
    (src / name).write_text("glucose 5.1\n")
    options = SyncOptions("s", cache_dir=str(tmp_path / "cache"))
    first = run(repo, src, options)
    second = run(repo, src, options)
    assert first.files == 1 and second.files_unchanged == 1

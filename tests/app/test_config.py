"""The configuration file: good files load into frozen dataclasses; bad ones are refused
(exit code 2) with one line naming file:line and the key."""
from __future__ import annotations

import dataclasses

import pytest

from replicator.app.config import ConfigError, load_config, parse_mode
from tests.conftest import run_cli

GOOD = """\
state_dir = "/tmp/replicator-state"
metrics_listen = "off"
log_format = "json"

[[job]]
name = "hospitals"
source = "/srv/data"
destination = "ssh://replicator@127.0.0.1:2222/amiens"
identity = "/etc/replicator/key"
known_hosts = "/etc/replicator/known_hosts"
passphrase_file = "/etc/replicator/passphrase"
excludes = ["*.tmp", "cache"]
bwlimit = "20M"
debounce = 1.5

[[job]]
name = "archive"
source = "/srv/archive"
destination = "/srv/replica"
mode = "every 15 minutes"
"""


def test_good_config(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text(GOOD)
    cfg = load_config(str(p), env={"REPLICATOR_PASSPHRASE": "x"})
    assert cfg.metrics_listen is None and cfg.log_format == "json"
    assert cfg.audit_log == "/tmp/replicator-state/audit.jsonl"
    a, b = cfg.jobs
    assert a.remote and a.continuous and a.bwlimit == 20 << 20 and a.excludes == ("*.tmp", "cache")
    assert a.debounce == 1.5 and a.max_delay == 10 and a.rescan_interval == 600
    assert not b.remote and b.interval == 900
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.name = "x"  # type: ignore[misc]


def test_source_guard_keys(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text(JOB + "max_shrink = 0.25\nrequire_marker = \".stfolder\"\nstreams = 8\n" + JOB.replace('"j"', '"k"'))
    a, b = load_config(str(p), env={"REPLICATOR_PASSPHRASE": "x"}).jobs
    assert (a.max_shrink, a.require_marker, a.streams) == (0.25, ".stfolder", 8)
    assert (b.max_shrink, b.require_marker) == (0.5, None)
    assert type(a.streams) is int


def test_modes():
    assert parse_mode("continuous") is None
    assert parse_mode("every 30 seconds") == 30
    assert parse_mode("every 2 h") == 7200
    for bad in ("sometimes", "every minutes", "every 0 s", "every -1 minutes"):
        with pytest.raises(ValueError):
            parse_mode(bad)


JOB = '[[job]]\nname = "j"\nsource = "/srv/data"\ndestination = "/srv/replica"\n'
# (file text, expected line, expected key in the message, words of the message)
BAD = [
    ("syntax", 'state_dir = "/x"\n[[job]]\nname = "j\n', 3, None, "syntax"),
    ("unknown-global", 'state_dir = "/x"\nfrobnicate = 1\n' + JOB, 2, "frobnicate", "unknown key"),
    ("unknown-job-key", JOB + 'colour = "red"\n', 5, "job[0].colour", "unknown key"),
    ("wrong-type", JOB + "debounce = \"soon\"\n", 5, "job[0].debounce", "must be a number"),
    ("wrong-type-str", 'state_dir = 5\n' + JOB, 1, "state_dir", "must be a string"),
    ("missing-source", '\n[[job]]\nname = "j"\ndestination = "/srv/replica"\n', 2, "job[0].source", "missing"),
    ("bad-url", JOB.replace('"/srv/replica"', '"ssh://127.0.0.1:2222/"') + 'identity = "k"\n', 4,
     "job[0].destination", "bad destination"),
    ("bad-port", JOB.replace('"/srv/replica"', '"ssh://u@h:99999/r"'), 4, "job[0].destination", "bad destination"),
    ("bad-mode", JOB + 'mode = "sometimes"\n', 5, "job[0].mode", "bad mode"),
    ("second-job", JOB + JOB.replace('"j"', '"k"') + 'mode = "every z"\n', 9, "job[1].mode", "bad mode"),
    ("no-jobs", 'state_dir = "/x"\n', 1, "job", "no [[job]]"),
    ("ssh-no-known-hosts", JOB.replace('"/srv/replica"', '"ssh://u@h:22/r"') + 'identity = "k"\n', 1 + 0, None,
     "known_hosts"),
    ("bad-bwlimit", JOB + 'bwlimit = "fast"\n', 5, "job[0].bwlimit", "bad rate"),
    ("duplicate", JOB + JOB, 6, "job[1].name", "duplicate"),
    ("bad-metrics", 'metrics_listen = "localhost"\n' + JOB, 1, "metrics_listen", "bad address"),
    # numbers: the type, the range, and TOML's nan/inf (a nan debounce compares false with everything)
    ("streams-float", JOB + "streams = 2.5\n", 5, "job[0].streams", "must be an integer"),
    ("streams-bool", JOB + "streams = true\n", 5, "job[0].streams", "must be an integer"),
    ("streams-zero", JOB + "streams = 0\n", 5, "job[0].streams", "1 to 64"),
    ("streams-huge", JOB + "streams = 1000\n", 5, "job[0].streams", "1 to 64"),
    ("workers-float", JOB + "workers = 2.5\n", 5, "job[0].workers", "positive integer"),
    ("debounce-nan", JOB + "debounce = nan\n", 5, "job[0].debounce", "finite"),
    ("max-delay-inf", JOB + "max_delay = inf\n", 5, "job[0].max_delay", "finite"),
    ("rescan-inf", JOB + "rescan_interval = inf\n", 5, "job[0].rescan_interval", "finite"),
    ("rescan-zero", JOB + "rescan_interval = 0\n", 5, "job[0].rescan_interval", "at least 1"),
    ("max-shrink-percent", JOB + "max_shrink = 50\n", 5, "job[0].max_shrink", "0 to 1"),
    ("max-shrink-string", JOB + 'max_shrink = "50%"\n', 5, "job[0].max_shrink", "must be a number"),
    ("max-shrink-nan", JOB + "max_shrink = nan\n", 5, "job[0].max_shrink", "finite"),
    ("marker-path", JOB + 'require_marker = "mnt/.stfolder"\n', 5, "job[0].require_marker", "plain file name"),
    ("marker-type", JOB + "require_marker = true\n", 5, "job[0].require_marker", "must be a string"),
]


@pytest.mark.parametrize("text,line,key,words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_in_process(tmp_path, text, line, key, words):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(p), env={"REPLICATOR_PASSPHRASE": "x"})
    msg = str(info.value)
    assert "\n" not in msg and words in msg
    if key == "job[0].known_hosts" or (key is None and words == "known_hosts"):
        assert msg.startswith(f"{p}:") and "job[0].known_hosts" in msg
    else:
        assert msg.startswith(f"{p}:{line}:"), msg
    if key:
        assert f" {key}:" in msg, msg


@pytest.mark.parametrize("name", ["syntax", "unknown-job-key", "wrong-type", "missing-source", "bad-url", "bad-mode"])
def test_daemon_refuses_to_start(tmp_path, name):
    _n, text, line, key, words = next(b for b in BAD if b[0] == name)
    p = tmp_path / "bad.toml"
    p.write_text(text)
    r = run_cli("daemon", "--config", str(p), timeout=60)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"replicator: error: {p}:{line}:"), err
    assert words in err and (key is None or key in err)


def test_missing_passphrase_and_file(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text(JOB)
    with pytest.raises(ConfigError, match="passphrase"):
        load_config(str(p), env={})
    r = run_cli("daemon", "--config", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_check_option(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text(JOB.replace("/srv/data", str(tmp_path)))
    r = run_cli("daemon", "--config", str(p), "--check")
    assert r.returncode == 0 and "1 jobs: j" in r.stdout, r.stderr
    p.write_text(JOB)  # /srv/data does not exist here: parsing alone accepts it, --check does not
    assert load_config(str(p), env={"REPLICATOR_PASSPHRASE": "x"}).jobs[0].source == "/srv/data"
    r = run_cli("daemon", "--config", str(p), "--check")
    assert r.returncode == 2 and r.stderr == f"replicator: error: {p}:3: job[0].source: /srv/data does not exist\n"


def test_packaged_example_is_valid():
    from tests.conftest import ROOT

    cfg = load_config(str(ROOT / "packaging" / "replicator.toml"), env={})
    assert [j.name for j in cfg.jobs] == ["hospitals", "archive-local"] and cfg.metrics_listen == ("127.0.0.1", 9464)


# --- what a job syncs: exclude files, tagged directories, one filesystem --------------------------
def test_selection_keys(tmp_path, monkeypatch):
    from replicator.app.config import job_sync_options

    monkeypatch.chdir(tmp_path)
    (tmp_path / "j.exclude").write_text("# PACS scratch\n*.part\n\nspool/\n")
    p = tmp_path / "r.toml"
    p.write_text(JOB + 'excludes = ["*.tmp"]\nexclude_files = ["j.exclude"]\n'
                 'exclude_if_present = [".nobackup", "CACHEDIR.TAG"]\none_file_system = true\n'
                 + JOB.replace('"j"', '"k"'))
    a, b = load_config(str(p), env={"REPLICATOR_PASSPHRASE": "x"}).jobs
    assert a.exclude_files == (str(tmp_path / "j.exclude"),)  # relative to the working directory, as others
    assert a.exclude_if_present == (".nobackup", "CACHEDIR.TAG") and a.one_file_system is True
    assert (b.exclude_files, b.exclude_if_present, b.one_file_system) == ((), (), False)
    o = job_sync_options(a, str(tmp_path / "cache"))
    assert o.excludes == ("*.tmp", "*.part", "spool/") and o.exclude_if_present == (".nobackup", "CACHEDIR.TAG")
    assert o.one_file_system and not o.dry_run and o.cache_dir == str(tmp_path / "cache")
    assert o.source == a.source_name and o.max_shrink == a.max_shrink
    o = job_sync_options(b, "/c")
    assert (o.excludes, o.exclude_if_present, o.one_file_system) == ((), (), False)


def test_exclude_file_read_at_each_run(tmp_path):
    """The daemon reads its exclude files at each sync (an edit counts at the next one, no reload); one
    gone since is that run's one-line usage error."""
    from replicator.app.config import job_sync_options
    from replicator.errors import UsageError

    ex = tmp_path / "j.exclude"
    ex.write_text("*.a\n")
    p = tmp_path / "r.toml"
    p.write_text(JOB + f'exclude_files = ["{ex}"]\n')
    job = load_config(str(p), env={"REPLICATOR_PASSPHRASE": "x"}).jobs[0]
    assert job_sync_options(job, "/c").excludes == ("*.a",)
    ex.write_text("*.b\n")
    assert job_sync_options(job, "/c").excludes == ("*.b",)
    ex.unlink()
    with pytest.raises(UsageError) as info:
        job_sync_options(job, "/c")
    assert str(info.value) == f"exclude file {ex}: does not exist"


SELECTION_BAD = [
    ("exclude-files-string", 'exclude_files = "/etc/x"\n', "job[0].exclude_files", "must be a list of file paths"),
    ("exclude-files-number", "exclude_files = [3]\n", "job[0].exclude_files", "must be a list of file paths"),
    ("exclude-files-empty", 'exclude_files = [""]\n', "job[0].exclude_files", "must be a list of file paths"),
    ("tag-string", 'exclude_if_present = ".nobackup"\n', "job[0].exclude_if_present", "must be a list of file names"),
    ("tag-path", 'exclude_if_present = ["a/.nobackup"]\n', "job[0].exclude_if_present", "plain file name"),
    ("one-fs-string", 'one_file_system = "yes"\n', "job[0].one_file_system", "must be true or false"),
    ("one-fs-number", "one_file_system = 1\n", "job[0].one_file_system", "must be true or false"),
]


@pytest.mark.parametrize("text,key,words", [b[1:] for b in SELECTION_BAD], ids=[b[0] for b in SELECTION_BAD])
def test_bad_selection_keys(tmp_path, text, key, words):
    p = tmp_path / "bad.toml"
    p.write_text(JOB + text)
    with pytest.raises(ConfigError) as info:
        load_config(str(p), env={"REPLICATOR_PASSPHRASE": "x"})
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{p}:5: {key}: ") and words in msg, msg


def test_check_finds_a_missing_or_bad_exclude_file(tmp_path):
    good = tmp_path / "good.exclude"
    good.write_text("*.tmp\n")
    (tmp_path / "binary.exclude").write_bytes(b"\0\0")
    p = tmp_path / "r.toml"
    p.write_text(JOB.replace("/srv/data", str(tmp_path)) + f'exclude_files = ["{good}", "{tmp_path}/gone.exclude", '
                 f'"{tmp_path}/binary.exclude"]\n')
    r = run_cli("daemon", "--config", str(p), "--check")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.splitlines() == [
        f"replicator: error: {p}:5: job[0].exclude_files: exclude file {tmp_path}/gone.exclude: does not exist",
        f"replicator: error: {p}:5: job[0].exclude_files: exclude file {tmp_path}/binary.exclude: is not a text "
        "file (it holds NUL bytes)"]
    p.write_text(JOB.replace("/srv/data", str(tmp_path)) + f'exclude_files = ["{good}"]\n')
    r = run_cli("daemon", "--config", str(p), "--check")
    assert r.returncode == 0, r.stderr


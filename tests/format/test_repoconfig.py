"""The repository config: a compression level outside what the writer uses is refused at open,
in one line, not by zstd in the middle of the first sync."""
from __future__ import annotations

import json

import pytest

from replicator import constants as C
from replicator.core.params import DEFAULT_PARAMS
from replicator.errors import RepositoryError
from replicator.format.repoconfig import make_config, parse_config

REPO_ID = bytes(range(32))


def config_with(level) -> bytes:
    cfg = json.loads(make_config(REPO_ID, DEFAULT_PARAMS, 3, 0))
    if level is None:
        del cfg["compression"]["level"]
    else:
        cfg["compression"]["level"] = level
    return json.dumps(cfg).encode()


@pytest.mark.parametrize("level", [C.COMPRESSION_LEVEL_MIN, 3, C.COMPRESSION_LEVEL_MAX])
def test_levels_in_range_open(level):
    assert parse_config(config_with(level), "r")["compression_level"] == level


def test_missing_level_is_the_default():
    from replicator.core.compress import DEFAULT_LEVEL

    assert parse_config(config_with(None), "r")["compression_level"] == DEFAULT_LEVEL


@pytest.mark.parametrize("level", [0, -5, 20, 22, 23, 100, 2.5, 3.0, "3", True, None, [3]])
def test_level_out_of_range_or_not_an_integer_is_refused(level):
    data = config_with(level) if level is not None else config_with(3).replace(b'"level": 3', b'"level": null')
    with pytest.raises(RepositoryError) as info:
        parse_config(data, "/srv/repo")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("repository /srv/repo: ") and "compression level" in msg
    assert "1 to 19" in msg


def test_other_algorithm_is_refused():
    cfg = json.loads(make_config(REPO_ID, DEFAULT_PARAMS, 3, 0))
    cfg["compression"]["algorithm"] = "lz4"
    with pytest.raises(RepositoryError, match="compression algorithm 'lz4'"):
        parse_config(json.dumps(cfg).encode(), "r")


@pytest.mark.parametrize("level", [0, 20, 2.5, True])
def test_make_config_refuses_what_parse_config_would(level):
    with pytest.raises(ValueError, match="1 to 19"):
        make_config(REPO_ID, DEFAULT_PARAMS, level, 0)


def test_open_of_a_repository_with_a_bad_level_is_a_one_line_error_exit_3(cli, tmp_path):
    repo = tmp_path / "repo"
    assert cli("init", str(repo), "--kdf-work", "14", "-q").returncode == 0
    cfg = json.loads((repo / "config").read_text())
    cfg["compression"]["level"] = 25
    (repo / "config").write_text(json.dumps(cfg))
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    for args in (["snapshots", str(repo)], ["sync", str(src), str(repo)]):
        r = cli(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 3 and len(lines) == 1, r.stderr
        assert lines[0].startswith("replicator: error: repository ") and "compression level 25" in lines[0]


@pytest.mark.parametrize("value", ["0", "20", "-1"])
def test_init_compression_level_out_of_range_is_a_one_line_error_exit_2(cli, tmp_path, value):
    r = cli("init", str(tmp_path / "repo"), "--kdf-work", "14", f"--compression-level={value}")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("replicator: error: --compression-level") and "1 to 19" in lines[0]
    assert not (tmp_path / "repo").exists()

"""``serve --config FILE``: the receiver's TOML, parsed into ServeConfig; every error names file, line and key."""
from __future__ import annotations

import pytest

from replicator.app.serve_config import ServeConfigError, load_serve_config
from replicator.transport.url import parse_size

GOOD = '''\
listen = "0.0.0.0:2222"
host_key = "/etc/replicator/host_key"
metrics_listen = "127.0.0.1:9469"
log_format = "json"

[[repo]]
name = "chu-toulouse"
url = "/srv/replicator/chu-toulouse"
authorized_keys = "/etc/replicator/keys/chu-toulouse.pub"
quota = "2TiB"

[[repo]]
name = "chu-amiens"
url = "s3://bucket/amiens"
quota = 1000000
'''


def _write(tmp_path, text: str):
    p = tmp_path / "serve.toml"
    p.write_text(text)
    return p


def test_good_config(tmp_path):
    cfg = load_serve_config(str(_write(tmp_path, GOOD)))
    assert cfg.listen == ("0.0.0.0", 2222) and cfg.metrics_listen == ("127.0.0.1", 9469)
    assert cfg.log_format == "json" and cfg.host_key == "/etc/replicator/host_key"
    a, b = cfg.repos
    assert (a.name, a.url, a.quota, a.authorized_keys) == (
        "chu-toulouse", "/srv/replicator/chu-toulouse", 2 << 40, "/etc/replicator/keys/chu-toulouse.pub")
    assert (b.name, b.url, b.quota, b.authorized_keys) == ("chu-amiens", "s3://bucket/amiens", 1000000, None)


def test_defaults(tmp_path):
    cfg = load_serve_config(str(_write(tmp_path, '[[repo]]\nname = "a"\nurl = "rel/a"\n')))
    assert cfg.listen is None and cfg.metrics_listen == ("127.0.0.1", 9469) and cfg.log_format == "text"
    assert cfg.repos[0].url == str(tmp_path / "rel" / "a") or cfg.repos[0].url.endswith("/rel/a")
    assert cfg.repos[0].quota is None


@pytest.mark.parametrize("text, expected", [
    ('listen = "x:1"\n[[repo]\n', r"serve.toml:2: TOML syntax error"),
    ('lisen = "0.0.0.0:2222"\n[[repo]]\nname = "a"\nurl = "/a"\n', r"serve.toml:1: lisen: unknown key"),
    ('[[repo]]\nname = "a"\nurl = "/a"\nqouta = 5\n', r"serve.toml:4: repo\[0\].qouta: unknown key"),
    ('[[repo]]\nname = "a"\nurl = "/a"\n[[repo]]\nname = "a"\nurl = "/b"\n',
     r"serve.toml:5: repo\[1\].name: repository 'a' defined twice \(first at line 2\)"),
    ('[[repo]]\nname = "a"\n', r"serve.toml:1: repo\[0\].url: missing required key 'url'"),
    ('[[repo]]\nname = "a b"\nurl = "/a"\n', r"serve.toml:2: repo\[0\].name: bad repository name"),
    ('[[repo]]\nname = "a"\nurl = "/a"\nquota = "2 TB of disk"\n', r"serve.toml:4: repo\[0\].quota: bad size"),
    ('[[repo]]\nname = "a"\nurl = "/a"\nquota = -1\n', r"serve.toml:4: repo\[0\].quota: "),
    ('listen = "nowhere"\n[[repo]]\nname = "a"\nurl = "/a"\n', r"serve.toml:1: listen: bad address"),
    ('log_format = "xml"\n[[repo]]\nname = "a"\nurl = "/a"\n', r"serve.toml:1: log_format: must be one of"),
    ('repo = 3\n', r"serve.toml:1: repo: must be an array of tables"),
])
def test_errors_name_file_line_and_key(tmp_path, text, expected):
    with pytest.raises(ServeConfigError, match=expected) as info:
        load_serve_config(str(_write(tmp_path, text)))
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ServeConfigError, match=r"nope\.toml: cannot read the configuration"):
        load_serve_config(str(tmp_path / "nope.toml"))


def test_no_repo_is_allowed_in_the_file(tmp_path):
    """``--repo`` flags may carry every repository; the file then gives listen, keys, metrics."""
    assert load_serve_config(str(_write(tmp_path, 'listen = "127.0.0.1:2222"\n'))).repos == ()


@pytest.mark.parametrize("text, n", [("0", 0), ("1000", 1000), ("2TiB", 2 << 40), ("1.5 GiB", 3 << 29),
                                     ("10GB", 10 ** 10), ("5 k", 5000), ("7KiB", 7168), ("3 B", 3)])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "x", "-1", "1 XB", "nan", "inf GiB"])
def test_parse_size_refuses(text):
    from replicator.errors import UsageError

    with pytest.raises(UsageError):
        parse_size(text)

"""Offline installation (docs/OPERATIONS.md "Installing"): `make wheel`'s wheelhouse installs into a fresh
virtualenv with the network shut, and the installed binary syncs and restores.

The wheelhouse is built by scripts/build_wheelhouse.py into dist/ and reused while its marker
(dist/wheelhouse/.fresh) records the same sources: a rebuild costs about 15 s here (the Cython
build, and pip downloading the dependencies, from its cache after the first time), the install
and the round trip about 15 s more.  Building needs the package index for the dependencies: without
the network that step, and so this test, is skipped, saying so.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from replicator import __version__
from tests.conftest import PASSPHRASE, ROOT
from tests.treecompare import diff, manifest

pytestmark = pytest.mark.slow

BUILD = ROOT / "scripts" / "build_wheelhouse.py"
HOUSE = ROOT / "dist" / "wheelhouse"


def _load_build_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_wheelhouse", BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    r = subprocess.run([sys.executable, str(BUILD), "--if-stale"], capture_output=True, text=True, timeout=600)
    if r.returncode == _load_build_module().EXIT_NETWORK:
        pytest.skip(f"no network to the package index: the wheelhouse's dependencies cannot be downloaded "
                    f"({r.stderr.strip().splitlines()[0]})")
    assert r.returncode == 0, r.stdout + r.stderr
    return HOUSE


def _offline_env(venv: Path) -> dict:
    env = _load_build_module().offline_env()
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "REPLICATOR_CACHE_DIR"):
        env.pop(name, None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_offline_env_shuts_the_network():
    env = _load_build_module().offline_env()
    assert env["PIP_NO_INDEX"] == "1" and env["PIP_CONFIG_FILE"] == os.devnull
    assert env["https_proxy"] == env["HTTPS_PROXY"] == "http://127.0.0.1:9"
    assert not any(k.startswith("PIP_") and k not in ("PIP_NO_INDEX", "PIP_CONFIG_FILE", "PIP_DISABLE_PIP_VERSION_CHECK")
                   for k in env)


def test_freshness_follows_the_sources(tmp_path, monkeypatch):
    """The marker's digest changes with any source file, so a stale wheelhouse is never reused."""
    mod = _load_build_module()
    before = mod.inputs_digest()
    assert before == mod.inputs_digest()
    fake = tmp_path / "root"
    (fake / "replicator").mkdir(parents=True)
    (fake / "replicator" / "a.py").write_text("x = 1\n")
    (fake / "pyproject.toml").write_text("")
    monkeypatch.setattr(mod, "ROOT", fake)
    one = mod.inputs_digest()
    (fake / "replicator" / "a.py").write_text("x = 2\n")
    assert mod.inputs_digest() != one
    (fake / "replicator" / "__pycache__").mkdir()
    (fake / "replicator" / "__pycache__" / "a.pyc").write_bytes(b"junk")
    two = mod.inputs_digest()
    (fake / "replicator" / "__pycache__" / "a.pyc").write_bytes(b"other junk")
    assert mod.inputs_digest() == two  # caches are not sources


def test_offline_install_syncs_and_restores(wheelhouse, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = _offline_env(venv)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index", "--find-links", str(wheelhouse),
                          "replicator"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert pip.returncode == 0, pip.stdout + pip.stderr

    def rep(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "replicator"), *args], capture_output=True, text=True,
                              env={**env, "REPLICATOR_PASSPHRASE": PASSPHRASE,
                                   "REPLICATOR_CACHE_DIR": str(tmp_path / "cache")},
                              cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL)

    version = rep("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith(f"replicator {__version__} (repository format")
    # The package and its compiled extension come from the venv, not from this checkout.
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import replicator, replicator._ext.cdc as c; print(replicator.__file__); print(c.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(venv)) for line in where.stdout.split()), where.stdout
    assert (venv / "share" / "man" / "man1" / "replicator.1").is_file()
    assert (venv / "share" / "bash-completion" / "completions" / "replicator").is_file()
    assert (venv / "share" / "zsh" / "site-functions" / "_replicator").is_file()
    assert (venv / "share" / "doc" / "replicator" / "OPERATIONS.md").is_file()  # the man page's SEE ALSO

    src = tmp_path / "src"
    (src / "ward" / "a").mkdir(parents=True)
    (src / "ward" / "a" / "record.txt").write_text("patient record\n" * 2000)
    (src / "scan.bin").write_bytes(os.urandom(700_000))
    os.symlink("ward/a/record.txt", src / "latest")
    repo, target = tmp_path / "repo", tmp_path / "restored"
    for args in (("init", str(repo), "--kdf-work", "14"), ("sync", str(src), str(repo), "--name", "hospital"),
                 ("restore", str(repo), str(target))):
        r = rep(*args)
        assert r.returncode == 0, f"replicator {' '.join(args)}: {r.stderr}"
    assert diff(manifest(str(src)), manifest(str(target))) == []


UNIT_BINARY = "/usr/local/bin/replicator"  # the symlink the install step makes to the venv's binary


@pytest.mark.parametrize("unit", ["replicator-daemon.service", "replicator-serve.service"])
def test_units_run_the_linked_binary(unit):
    """pip puts the binary in the venv's bin/; the units run the /usr/local/bin link that "Installing" makes."""
    from replicator.cli import build_parser

    lines = [ln for ln in (ROOT / "packaging" / unit).read_text().splitlines() if ln.startswith("ExecStart=")]
    assert len(lines) == 1
    binary, command = lines[0].removeprefix("ExecStart=").split()[:2]
    assert binary == UNIT_BINARY
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0

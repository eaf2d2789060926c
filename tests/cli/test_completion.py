"""Shell completion and the man page, both generated from the live argument parser (cli.build_parser).

A subcommand someone adds to cli.COMMANDS must appear in the completion scripts and the man page
without anyone touching them: these tests list the subcommands from the parser itself.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from replicator import __version__
from replicator import constants as C
from replicator.cli import build_parser, main
from tests.conftest import ROOT

GEN_SHARE = ROOT / "scripts" / "gen_share.py"


def subcommands(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    raise AssertionError("build_parser has no subcommands")


@pytest.fixture(scope="module")
def share(tmp_path_factory) -> Path:
    """The files `make man completion` installs, generated into a scratch directory."""
    out = tmp_path_factory.mktemp("share")
    r = subprocess.run([sys.executable, str(GEN_SHARE), "--out", str(out)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    return out


def test_subcommands_found():
    names = subcommands(build_parser())
    assert {"init", "sync", "restore", "verify", "completion"} <= set(names)


def test_bash_completion_parses_and_names_every_subcommand(share):
    script = share / "bash-completion" / "completions" / "replicator"
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = script.read_text()
    missing = [name for name in subcommands(build_parser()) if name not in text]
    assert not missing, f"bash completion lacks {missing}"
    assert "complete " in text and "replicator" in text


def test_bash_completion_offers_subcommands_and_options(share):
    """Source the script and ask its completion function, as bash does at a TAB."""
    script = share / "bash-completion" / "completions" / "replicator"
    probe = (f"source {script}\n"
             "COMP_WORDS=(replicator sy); COMP_CWORD=1; COMP_LINE='replicator sy'; COMP_POINT=${#COMP_LINE}\n"
             "_shtab_replicator replicator sy replicator; printf '%s\\n' \"${COMPREPLY[@]}\"; echo ---\n"
             "COMP_WORDS=(replicator sync --dry); COMP_CWORD=2; COMP_LINE='replicator sync --dry'\n"
             "COMP_POINT=${#COMP_LINE}\n"
             "_shtab_replicator replicator --dry sync; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", probe], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    first, _, second = r.stdout.partition("---")
    assert "sync" in first.split()
    assert "--dry-run" in second.split()


def test_zsh_completion_names_every_subcommand(share):
    script = share / "zsh" / "site-functions" / "_replicator"
    text = script.read_text()
    assert text.startswith("#compdef replicator")
    missing = [name for name in subcommands(build_parser()) if name not in text]
    assert not missing, f"zsh completion lacks {missing}"
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed: the zsh script's syntax is not checked (zsh -n)")
    r = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _render(page: Path) -> str:
    env = {**os.environ, "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "100"}
    if shutil.which("man"):
        r = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True, env=env, timeout=60)
    elif shutil.which("groff"):
        r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", str(page)], capture_output=True, text=True, timeout=60)
    else:
        pytest.skip("neither man nor groff is installed: the man page is not rendered")
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_man_page_renders_and_lists_every_subcommand(share):
    page = share / "man" / "man1" / "replicator.1"
    text = _render(page)
    assert "replicator" in text and __version__ in text
    missing = [name for name in subcommands(build_parser()) if f"replicator {name}" not in text]
    assert not missing, f"the man page lacks {missing}"
    assert "--dry-run" in text  # the options of each subcommand, not only its name
    assert "Exit codes" in text


def test_completion_command_prints_the_script(cli):
    r = cli("completion", "bash", passphrase=None)
    assert r.returncode == 0, r.stderr
    assert "_shtab_replicator" in r.stdout and "complete " in r.stdout
    for name in subcommands(build_parser()):
        assert name in r.stdout
    z = cli("completion", "zsh", passphrase=None)
    assert z.returncode == 0, z.stderr
    assert z.stdout.startswith("#compdef replicator")


def test_completion_of_an_unknown_shell_is_a_usage_error(cli):
    r = cli("completion", "fish", passphrase=None)
    assert r.returncode == C.EXIT_USAGE
    assert "Traceback" not in r.stderr
    assert "invalid choice: 'fish'" in r.stderr


def test_completion_completes_paths_for_file_and_directory_arguments(capsys):
    assert main(["completion", "bash"]) == 0
    out = capsys.readouterr().out
    assert "_shtab_compgen_dirs" in out and "_shtab_compgen_files" in out


def test_version_names_format_and_protocol_versions(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"replicator {__version__}")
    from replicator.transport.protocol import PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN

    assert f"repository format {C.FORMAT_VERSION_MIN}" in out
    assert f"protocol {PROTOCOL_VERSION_MIN}" in out and str(PROTOCOL_VERSION_MAX) in out

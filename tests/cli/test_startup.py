"""A command imports the modules it runs, not those of every other command.

Before, building the parser imported all 22 command modules and, through them, every layer (the SSH
server, the FUSE browser, the daemon): 0.45 s before any work, against 0.25 s for what `sync` needs
and 0.13 s for `restore`.  A no-change sync or a restore of a small tree paid it at every run.
"""
from __future__ import annotations

import subprocess
import sys

from replicator.cli import COMMANDS, build_parser
from tests.conftest import ROOT


def _modules_after(argv: list[str]) -> set[str]:
    code = (f"import sys\nfrom replicator.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print(' '.join(m for m in sys.modules if m.startswith('replicator.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    return set(out.stdout.split())


def test_a_command_imports_only_its_own_module(tmp_path):
    loaded = _modules_after(["snapshots", str(tmp_path / "nothing-here")])
    assert "replicator.cli.snapshots_cmd" in loaded
    others = {f"replicator.cli.{m}" for m in COMMANDS} - {"replicator.cli.snapshots_cmd"}
    assert not loaded & others, sorted(loaded & others)


def test_help_and_unknown_commands_still_see_every_command(capsys):
    loaded = _modules_after(["--help"])
    assert {f"replicator.cli.{m}" for m in COMMANDS} <= loaded
    usage = build_parser().format_help()
    for m in COMMANDS:
        assert m.removesuffix("_cmd") in usage


def test_a_lone_command_parser_still_names_every_command_in_its_errors():
    parser = build_parser(only="sync")
    choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(choices) == {m.removesuffix("_cmd") for m in COMMANDS}

"""replicator completion bash|zsh: print a shell completion script generated from the live parser.

This module owns shell completion and is the one importer of ``shtab``.  The script is made from
``cli.build_parser()`` at the moment it is asked for, so every subcommand and option (those added
since, too) is in it; nothing here lists them.  It never reads a repository, the environment or a
passphrase.  ``scripts/gen_share.py`` writes the same scripts into the files a wheel installs.
"""
from __future__ import annotations

import argparse
import sys

SHELLS = ("bash", "zsh")

# Positional and option metavars that name a path: what a TAB offers for them.  REPO may be an
# ssh:// URL too; offering local directories is still what a person typing one wants most often.
_DIRECTORY_METAVARS = frozenset({"DIR", "SRC", "TARGET", "REPO"})
_FILE_METAVARS = frozenset({"FILE"})


def register(sub) -> None:
    p = sub.add_parser("completion", help="print a bash or zsh completion script",
                       description="Print the completion script for SHELL on stdout.  Load it for this shell "
                                   "with: eval \"$(replicator completion bash)\"; a wheel installs both scripts "
                                   "where bash-completion and zsh find them (docs/OPERATIONS.md \"Installing\").")
    p.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash or zsh")
    p.set_defaults(func=run)


def completion_script(shell: str) -> str:
    """The completion script of ``replicator`` for ``shell``.

    :param shell: one of :data:`SHELLS`.
    :returns: the script's text (bash: a function and its ``complete`` line; zsh: a ``#compdef`` file).
    :raises ValueError: another shell.
    """
    from replicator.cli import build_parser

    if shell not in SHELLS:
        raise ValueError(f"no completion for the shell {shell!r} (only {', '.join(SHELLS)})")
    import shtab  # here, not at the top: every other command would pay for its import

    parser = build_parser()
    _mark_paths(parser, shtab)
    return shtab.complete(parser, shell=shell)


def _mark_paths(parser: argparse.ArgumentParser, shtab) -> None:
    """Tell shtab which arguments are files or directories, from their metavar, in every subparser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _mark_paths(child, shtab)
            continue
        metavar = action.metavar if isinstance(action.metavar, str) else None
        if metavar in _FILE_METAVARS:
            action.complete = shtab.FILE  # type: ignore[attr-defined]
        elif metavar in _DIRECTORY_METAVARS:
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]


def run(args) -> int:
    sys.stdout.write(completion_script(args.shell))
    return 0

"""Write the man page and the shell completion scripts, generated from the live argument parser.

    python scripts/gen_share.py [--out build/share]

writes, under OUT (laid out as PREFIX/share, where a wheel installs them through setup.py's data_files):

    man/man1/replicator.1                  one page: every subcommand with its options (argparse-manpage)
    bash-completion/completions/replicator  loaded on demand by bash-completion (shtab)
    zsh/site-functions/_replicator         found on zsh's default $fpath (shtab)
    doc/replicator/*.md                    README.md and docs/*.md, where the man page and the
                                           systemd units' Documentation= point

Nothing here lists a subcommand: they come from ``replicator.cli.build_parser()`` at the time this
runs, so `make wheel` (which runs it) always ships pages that match the code.  Run by `make man`
and `make completion` too.  Needs argparse-manpage (the test extra); the completion scripts come
from ``replicator completion``'s own code (cli/completion_cmd.py), the one importer of shtab.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from replicator import __version__
from replicator.cli import build_parser
from replicator.cli.completion_cmd import completion_script

DEFAULT_OUT = ROOT / "build" / "share"
MAN_PAGE = Path("man", "man1", "replicator.1")
BASH = Path("bash-completion", "completions", "replicator")
ZSH = Path("zsh", "site-functions", "_replicator")
DOC = Path("doc", "replicator")
SHORT = "secure two-site replication engine for file trees"

SEE_ALSO = r"""
Operations (installing, the daemon, failover, exit codes):
.I /usr/share/doc/replicator/OPERATIONS.md
or docs/OPERATIONS.md in the source.
.PP
The state cache is in
.IR $REPLICATOR_CACHE_DIR ,
else
.IR ~/.cache/replicator .
"""


def man_page() -> str:
    """The roff text of replicator(1)."""
    from argparse_manpage.manpage import Manpage

    page = Manpage(build_parser())
    page.source = f"replicator {__version__}"
    page.manual = "replicator manual"
    page.description = SHORT
    page.parser._manpage.append({"heading": "see also", "content": SEE_ALSO.strip()})
    return str(page)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    ap.add_argument("--only", choices=("man", "completion", "doc"),
                    help="write only the man page, only the scripts, or only the documents")
    args = ap.parse_args(argv)
    written = []
    if args.only in (None, "man"):
        try:
            text = man_page()
        except ImportError:
            print("gen_share: argparse-manpage is not installed: pip install -e '.[test]'", file=sys.stderr)
            return 2
        write(args.out / MAN_PAGE, text)
        written.append(MAN_PAGE)
    if args.only in (None, "completion"):
        write(args.out / BASH, completion_script("bash"))
        write(args.out / ZSH, completion_script("zsh"))
        written += [BASH, ZSH]
    if args.only in (None, "doc"):
        for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
            write(args.out / DOC / doc.name, doc.read_text())
            written.append(DOC / doc.name)
    for rel in written:
        print(args.out / rel)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

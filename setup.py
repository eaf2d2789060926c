"""Builds the Cython hot path from ext/ into replicator/_ext/.

The extension is required: if Cython or the C compiler fails, the build fails
loudly.  There is no pure-Python fallback in the package (the plain-Python
reference chunker lives in tests/reference/ only).

The man page and the shell completion scripts are installed under PREFIX/share
when they have been generated into build/share (scripts/gen_share.py, run by
`make wheel`, `make man` and `make completion`); an editable install of a fresh
checkout has none, and installs without them.
"""
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

SHARE = Path(__file__).resolve().parent / "build" / "share"


def share_files() -> list[tuple[str, list[str]]]:
    """data_files for every file under build/share: (share/<dir>, [build/share/<dir>/<file>])."""
    by_dir: dict[str, list[str]] = {}
    for path in sorted(SHARE.rglob("*")) if SHARE.is_dir() else ():
        if path.is_file() and not path.name.endswith(".tmp"):
            rel = path.relative_to(SHARE.parent.parent)
            by_dir.setdefault(str(Path("share", path.parent.relative_to(SHARE))), []).append(str(rel))
    return sorted(by_dir.items())


extensions = [
    Extension(
        "replicator._ext.cdc",
        sources=["ext/cdc.pyx"],
        include_dirs=["ext"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "replicator._ext.ids",
        sources=["ext/ids.pyx"],
        extra_compile_args=["-O3"],
    ),
]

setup(
    data_files=share_files(),
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
)

"""Builds the Cython hot path from ext/ into replicator/_ext/.

The extension is required: if Cython or the C compiler fails, the build fails
loudly.  There is no pure-Python fallback in the package (the plain-Python
reference chunker lives in tests/reference/ only).
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "replicator._ext.cdc",
        sources=["ext/cdc.pyx"],
        include_dirs=["ext"],
        extra_compile_args=["-O3"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
)

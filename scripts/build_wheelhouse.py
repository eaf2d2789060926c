"""Build replicator's binary wheel and a wheelhouse of its runtime dependencies, for offline installs.

    python scripts/build_wheelhouse.py [--dist dist] [--if-stale] [--latest]

makes

    dist/replicator-VERSION-TAG.whl   the package with its compiled extension, man page and completions
    dist/wheelhouse/*.whl             that wheel and a binary wheel of every runtime dependency, for the
                                      Python running this script (same minor version and architecture)

so a server without a compiler or index access installs with

    pip install --no-index --find-links dist/wheelhouse replicator

Steps: the man page and completion scripts are generated from the live parser (scripts/gen_share.py);
the sources are copied to a scratch directory (no stale build/lib, no in-place .so, no other
engineer's half-built tree) and built there with this environment's setuptools and Cython
(``--no-build-isolation``: no download for the build); ``auditwheel repair`` retags it manylinux if
auditwheel is installed, else it stays a plain ``linux_*`` wheel, which installs on machines with
this machine's glibc or newer.  ``pip download --only-binary=:all:`` then fetches the dependencies
(the only step that needs the network: the package index), pinned by default to the versions
installed here, so the wheelhouse holds what the tests ran against.  A last resolve with
``--no-index`` against the wheelhouse alone proves it complete.

``--if-stale``: do nothing when ``dist/wheelhouse/.fresh`` records the same inputs (the hash of
every source file and of this Python's tag); ``tests/integration/test_wheelhouse.py`` uses it.

Exit codes: 0 built (or fresh), 1 a build step failed, 3 the download failed for want of the network.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = ".fresh"
EXIT_NETWORK = 3
# Files and directories a wheel is built from; the hash of them all decides whether a wheelhouse is fresh.
SOURCES = ("pyproject.toml", "setup.py", "README.md", "replicator", "ext")
SCRIPTS = ("scripts/gen_share.py", "scripts/build_wheelhouse.py")
# pip's words for "could not reach the index" (a message, not an exit code, is all pip gives).
NETWORK_TROUBLE = re.compile(
    r"Failed to establish a new connection|Temporary failure in name resolution|Name or service not known|"
    r"Network is unreachable|Connection refused|ProxyError|Max retries exceeded|timed out|Could not fetch URL|"
    r"No route to host", re.IGNORECASE)


class BuildError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _ignored(directory: str, names: list[str]) -> set[str]:
    """What the scratch copy leaves out: caches, built extensions, C files Cython generates."""
    skip = {n for n in names if n in ("__pycache__", ".mypy_cache") or n.endswith((".so", ".pyc"))}
    skip |= {n for n in names if n.endswith(".c") and n[:-2] + ".pyx" in names}
    return skip


def source_files() -> list[Path]:
    files = []
    for name in (*SOURCES, *SCRIPTS):
        path = ROOT / name
        if path.is_dir():
            for sub in sorted(path.rglob("*")):
                generated = sub.suffix == ".c" and sub.with_suffix(".pyx").exists()
                if sub.is_file() and not generated and "__pycache__" not in sub.parts \
                        and sub.suffix not in (".so", ".pyc"):
                    files.append(sub)
        elif path.is_file():
            files.append(path)
    return files


def inputs_digest() -> str:
    """sha256 over every source file (name and bytes) and this interpreter's wheel tag."""
    h = hashlib.sha256()
    h.update(f"{sys.implementation.cache_tag} {sysconfig.get_platform()}\n".encode())
    for path in source_files():
        h.update(str(path.relative_to(ROOT)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def run(cmd: list[str], *, env: dict | None = None, what: str) -> subprocess.CompletedProcess:
    print("+ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
        raise BuildError(f"{what} failed (exit {r.returncode}):\n{tail}")
    return r


def offline_env() -> dict:
    """The environment of a pip that must find everything in the wheelhouse: no config, no index, no proxy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k.lower() not in ("no_proxy",)}
    unroutable = "http://127.0.0.1:9"  # the discard port: a request that slips through fails at once
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               https_proxy=unroutable, http_proxy=unroutable, HTTPS_PROXY=unroutable, HTTP_PROXY=unroutable)
    return env


def build_wheel(out: Path) -> Path:
    """The replicator wheel, built from a scratch copy of the sources.  :returns: its path in ``out``."""
    run([sys.executable, str(ROOT / "scripts" / "gen_share.py")], what="generating the man page and completions")
    with tempfile.TemporaryDirectory(prefix="replicator-wheel-") as tmp:
        src = Path(tmp, "src")
        src.mkdir()
        for name in SOURCES:
            path = ROOT / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=_ignored)
            else:
                shutil.copy2(path, src / name)
        shutil.copytree(ROOT / "build" / "share", src / "build" / "share")
        built = Path(tmp, "wheel")
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
             "-w", str(built), str(src)], what="building the replicator wheel")
        wheels = sorted(built.glob("replicator-*.whl"))
        if len(wheels) != 1:
            raise BuildError(f"expected one replicator wheel, found {[w.name for w in wheels]}")
        wheel = wheels[0]
        auditwheel = shutil.which("auditwheel")
        if auditwheel:
            repaired = Path(tmp, "repaired")
            run([auditwheel, "repair", "-w", str(repaired), str(wheel)], what="auditwheel repair")
            wheel = next(repaired.glob("replicator-*.whl"))
        else:
            print("auditwheel is not installed: keeping the plain linux wheel (installs where glibc is this "
                  "machine's or newer)", flush=True)
        for old in out.glob("replicator-*.whl"):
            old.unlink()
        return Path(shutil.copy2(wheel, out / wheel.name))


def pins() -> list[str]:
    """``name==version`` of every distribution installed here (constraints: only the needed ones apply)."""
    from importlib.metadata import distributions

    found = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name and name.lower() != "replicator":
            found[name.lower()] = f"{name}=={dist.version}"
    return sorted(found.values())


def download_dependencies(wheel: Path, house: Path, *, latest: bool) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(house),
           "--timeout", "20", "--retries", "1", str(wheel)]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="pins-", delete=False) as f:
        f.write("\n".join(pins()) + "\n")
    try:
        if not latest:
            cmd[4:4] = ["--constraint", f.name]
        print("+ " + " ".join(cmd), flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    if r.returncode != 0:
        output = r.stdout + r.stderr
        tail = "\n".join(output.strip().splitlines()[-15:])
        if NETWORK_TROUBLE.search(output):
            raise BuildError(f"cannot download the runtime dependencies: no network to the package index\n{tail}",
                             EXIT_NETWORK)
        raise BuildError(f"downloading the runtime dependencies failed (exit {r.returncode}):\n{tail}")


def check_complete(house: Path) -> None:
    """Resolve replicator from the wheelhouse alone, with the network shut, installing nothing."""
    run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index", "--find-links",
         str(house), "replicator"], env=offline_env(), what="resolving replicator from the wheelhouse alone")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dist", type=Path, default=ROOT / "dist", help="output directory (default: dist/)")
    ap.add_argument("--if-stale", action="store_true", help="do nothing if the wheelhouse's marker is current")
    ap.add_argument("--latest", action="store_true",
                    help="the newest dependency versions, not those installed in this environment")
    args = ap.parse_args(argv)
    dist, house = args.dist.resolve(), args.dist.resolve() / "wheelhouse"
    marker = house / MARKER
    digest = inputs_digest()
    if args.if_stale and marker.is_file():
        try:
            recorded = json.loads(marker.read_text()).get("inputs")
        except ValueError:
            recorded = None
        if recorded == digest:
            print(f"{house} is fresh (inputs {digest[:12]})")
            return 0
    started = time.monotonic()
    try:
        dist.mkdir(parents=True, exist_ok=True)
        house.mkdir(exist_ok=True)
        marker.unlink(missing_ok=True)
        wheel = build_wheel(dist)
        for old in house.glob("replicator-*.whl"):
            old.unlink()
        shutil.copy2(wheel, house / wheel.name)
        download_dependencies(wheel, house, latest=args.latest)
        check_complete(house)
    except BuildError as exc:
        print(f"build_wheelhouse: {exc}", file=sys.stderr)
        return exc.code
    names = sorted(p.name for p in house.glob("*.whl"))
    marker.write_text(json.dumps({"inputs": digest, "wheel": wheel.name, "wheels": names,
                                  "python": sys.implementation.cache_tag}, indent=1) + "\n")
    print(f"{wheel}\n{house}: {len(names)} wheels ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

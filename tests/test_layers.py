"""Import rules, enforced mechanically (STYLE.md "Layers and import rules", docs/ARCHITECTURE.md).

Layers, bottom to top:
constants/errors < _ext < core < format < store < repo < {sync, restore, transport} < app < {daemon, cli}.
A module may import its own layer or lower ones.  Siblings never import each other (sync, restore and
transport; daemon and cli), except that the CLI starts the daemon through its entry point.
Each third-party library has exactly one importer, and that importer exists.
If this test fails, move the code, do not widen the rule.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "replicator"

BASE = 0
RANK = {"_ext": 1, "core": 2, "format": 3, "store": 4, "repo": 5, "sync": 6, "restore": 6, "transport": 6,
        "app": 7, "daemon": 8, "cli": 8}
TOP_LEVEL = {"__init__": BASE, "constants": BASE, "errors": BASE, "times": BASE, "__main__": 9}
# `replicator daemon` starts the service: the one module of the daemon the CLI may import.
DAEMON_PUBLIC = {"replicator.daemon.service"}

OWNERS = {
    "cryptography": "core/crypto.py",
    "zstandard": "core/compress.py",
    "blake3": "core/ids.py",
    "asyncssh": "transport/ssh.py",
    "botocore": "store/s3.py",  # the optional s3 extra (replicator[s3])
    "watchdog": "daemon/watch.py",
    "prometheus_client": "app/metrics.py",
    "tqdm": "cli/common.py",
    "shtab": "cli/completion_cmd.py",
    "tomli": "app/config.py",  # Python 3.10 only; tomllib is the standard library from 3.11
    "mfusepy": "restore/fusefs.py",  # the optional mount extra (replicator[mount])
}


def layer_of(module: str) -> tuple[str, int]:
    """:returns: (layer name, rank) of a dotted module name under replicator."""
    parts = module.split(".")
    assert parts[0] == "replicator"
    if len(parts) == 1:
        return "replicator", BASE
    head = parts[1]
    if head in RANK:
        return head, RANK[head]
    if head in TOP_LEVEL:
        return head, TOP_LEVEL[head]
    raise AssertionError(f"replicator.{head} has no layer: add it to tests/test_layers.py (and docs/ARCHITECTURE.md)")


def module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """:returns: (line, absolute module name) for every import in the file, nested ones included."""
    tree = ast.parse(path.read_text(), str(path))
    mod = module_name(path, root)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # "from replicator import constants" imports the submodule replicator.constants
            for a in node.names:
                sub = root.parent.joinpath(*f"{target}.{a.name}".split("."))
                if target.startswith("replicator") and (sub.with_suffix(".py").exists() or sub.is_dir()):
                    found.append((node.lineno, f"{target}.{a.name}"))
                else:
                    found.append((node.lineno, target))
    return sorted(set(found))


def layer_violations(path: Path, root: Path = PACKAGE) -> list[str]:
    own_layer, own_rank = layer_of(module_name(path, root))
    bad = []
    for line, target in imports(path, root):
        if target != "replicator" and not target.startswith("replicator."):
            continue
        layer, rank = layer_of(target)
        if own_layer == "cli" and target in DAEMON_PUBLIC:
            continue
        if rank > own_rank or (rank == own_rank and layer != own_layer and rank > BASE):
            bad.append(f"{path.relative_to(root.parent)}:{line}: {own_layer} imports {target} ({layer})")
    return bad


def owner_violations(path: Path, root: Path = PACKAGE) -> list[str]:
    rel = path.relative_to(root).as_posix()
    bad = []
    for line, target in imports(path, root):
        top = target.split(".")[0]
        if top in OWNERS and OWNERS[top] != rel:
            bad.append(f"replicator/{rel}:{line}: imports {top}, which only replicator/{OWNERS[top]} may import")
    return bad


SOURCES = sorted(PACKAGE.rglob("*.py"))
IDS = [str(p.relative_to(PACKAGE)) for p in SOURCES]


def test_sources_found():
    names = {module_name(p) for p in SOURCES}
    assert {"replicator.core.crypto", "replicator.repo.repository", "replicator.repo.writer",
            "replicator.format.pack", "replicator.store.lock", "replicator.errors"} <= names


def test_import_resolution():
    """The resolver itself: 'from package import module' names the module."""
    found = {m for _, m in imports(PACKAGE / "repo" / "repository.py")}
    assert "replicator.constants" in found  # from replicator import constants as C
    assert "replicator.core.crypto" in found  # from replicator.core import crypto
    assert "replicator.format.layout" in found  # from replicator.format import layout as L


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_no_upward_imports(path):
    bad = layer_violations(path)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_third_party_owners(path):
    bad = owner_violations(path)
    assert not bad, "\n".join(bad)


def test_every_owner_exists_and_imports_its_library():
    """An owner file that is gone (or no longer imports its library) fails, so the table cannot go stale."""
    for lib, owner in OWNERS.items():
        assert (PACKAGE / owner).exists(), f"owner of {lib}: replicator/{owner} does not exist"
        assert any(t.split(".")[0] == lib for _, t in imports(PACKAGE / owner)), f"{owner} no longer imports {lib}"


def test_every_third_party_library_has_an_owner():
    """A new dependency gets one importer, named here (and its reason in docs/ARCHITECTURE.md)."""
    import sys

    stdlib = set(sys.stdlib_module_names)
    found = {t.split(".")[0] for p in SOURCES for _, t in imports(p)}
    third_party = {m for m in found if m not in stdlib and m not in ("replicator", "__future__")}
    assert third_party <= set(OWNERS), f"no owner for {sorted(third_party - set(OWNERS))}"


def test_checker_catches_planted_violations(tmp_path):
    """The rules can fail: planted offenders in a fake package tree are all found."""
    root = tmp_path / "replicator"
    for d in ("core", "repo", "cli", "daemon"):
        (root / d).mkdir(parents=True)
        (root / d / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "repo" / "x.py").write_text("")
    core_bad = root / "core" / "bad.py"
    core_bad.write_text(
        "from ..repo import x\nimport zstandard.backend_c\ndef f():\n    from replicator.sync import engine\n")
    cli_bad = root / "cli" / "bad.py"
    cli_bad.write_text("from replicator.daemon import service\nfrom cryptography import x509\n")
    cli_ok = root / "cli" / "ok.py"
    cli_ok.write_text("from replicator import errors\nfrom replicator.repo import x\nfrom . import bad\n")

    assert imports(core_bad, root) == [(1, "replicator.repo.x"), (2, "zstandard.backend_c"), (4, "replicator.sync")]
    assert len(layer_violations(core_bad, root)) == 2
    assert len(owner_violations(core_bad, root)) == 1
    assert len(layer_violations(cli_bad, root)) == 1
    assert len(owner_violations(cli_bad, root)) == 1
    assert layer_violations(cli_ok, root) == [] and owner_violations(cli_ok, root) == []


def test_cli_may_call_only_the_daemons_public_modules(tmp_path):
    """cli -> daemon.service is allowed; cli -> other daemon modules and daemon -> cli are not."""
    root = tmp_path / "replicator"
    for d in ("cli", "daemon"):
        (root / d).mkdir(parents=True)
        (root / d / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    for m in ("service", "audit", "watch"):
        (root / "daemon" / f"{m}.py").write_text("")
    (root / "cli" / "x_cmd.py").write_text("")
    ok = root / "cli" / "ok.py"
    ok.write_text("from replicator.daemon import service\n")
    bad = root / "cli" / "bad.py"
    bad.write_text("from replicator.daemon import watch\nfrom replicator.daemon import audit\n")
    up = root / "daemon" / "up.py"
    up.write_text("from replicator.cli import x_cmd\n")
    assert layer_violations(ok, root) == []
    assert len(layer_violations(bad, root)) == 2
    assert len(layer_violations(up, root)) == 1


def test_siblings_and_the_new_layers_are_checked(tmp_path):
    """sync, restore and transport never import each other; format never imports store; store never repo."""
    root = tmp_path / "replicator"
    for d in ("format", "store", "repo", "sync", "restore", "transport", "app"):
        (root / d).mkdir(parents=True)
        (root / d / "__init__.py").write_text("")
        (root / d / "m.py").write_text("")
    (root / "__init__.py").write_text("")
    cases = {
        "sync": "from replicator.transport import m\n",
        "restore": "from replicator.sync import m\n",
        "transport": "from replicator.restore import m\n",
        "format": "from replicator.store import m\n",
        "store": "from replicator.repo import m\n",
        "repo": "from replicator.app import m\n",
    }
    for layer, text in cases.items():
        bad = root / layer / "bad.py"
        bad.write_text(text)
        assert len(layer_violations(bad, root)) == 1, layer
    fine = root / "app" / "fine.py"
    fine.write_text("from replicator.sync import m\nfrom replicator.transport import m\nfrom replicator.repo import m\n")
    assert layer_violations(fine, root) == []

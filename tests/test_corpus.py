"""benchmarks/corpus.py: determinism, size, file-type mix, and what mutate() changes.

Benchmarks compare runs across machines on the same seed, so a determinism failure here means published
numbers stop being comparable.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import corpus  # noqa: E402

SIZE = 3 * 2**20


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of contents (symlinks -> their target, directories -> "dir")."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, corpus.CorpusStats]:
    root = tmp_path_factory.mktemp("base") / "c"
    return root, corpus.generate(root, SIZE, seed=7)


def test_same_seed_same_tree_and_other_seed_differs(base, tmp_path):
    root, _ = base
    corpus.generate(tmp_path / "again", SIZE, seed=7)
    corpus.generate(tmp_path / "other", SIZE, seed=8)
    assert tree(tmp_path / "again") == tree(root)
    assert tree(tmp_path / "other") != tree(root)


def test_size_within_tolerance(base):
    _, stats = base
    assert abs(stats.bytes - SIZE) <= SIZE * 0.10
    assert stats.bytes == sum(stats.bytes_by_type.values())
    assert "MiB" in stats.summary()


def test_file_type_mix(base):
    root, stats = base
    for kind in ("hl7", "json", "dcm", "pdf", "sql", "log"):
        assert stats.files_by_type.get(kind, 0) >= 1, kind
    assert stats.bytes_by_type["dcm"] > stats.bytes_by_type["hl7"] + stats.bytes_by_type["json"]
    assert 0.15 <= stats.bytes_by_type["sql"] / stats.bytes <= 0.35
    assert stats.empty_dirs >= 1 and stats.symlinks == 1 and stats.hardlinks == 2
    link = root / "db" / "current.sql"
    assert not os.path.isabs(os.readlink(link)) and link.resolve() == (root / "db" / "patients.sql").resolve()
    hl7 = next(root.rglob("*.hl7")).read_bytes()
    assert hl7.startswith(b"MSH|^~\\&|") and b"\rPID|" in hl7
    assert next(root.rglob("*.pdf")).read_bytes().startswith(b"%PDF-1.4")


def test_dcm_pixels_partially_compressible(base):
    root, _ = base
    data = max(root.rglob("*.dcm"), key=lambda p: p.stat().st_size).read_bytes()
    assert data[128:132] == b"DICM"
    pixels = data[data.index(b"\xe0\x7f\x10\x00OW") + 12:][: 2**20]
    assert 1.1 < len(pixels) / len(zlib.compress(pixels, 6)) < 4


def test_large_file_option(tmp_path):
    stats = corpus.generate(tmp_path / "c", 256 * 1024, seed=3, large_file_size=3 * 2**20 + 6)
    assert max(p.stat().st_size for p in (tmp_path / "c").rglob("*.dcm")) == 3 * 2**20 + 6
    assert stats.bytes > 3 * 2**20


def test_generate_refuses_non_empty_root(tmp_path):
    (tmp_path / "x").write_text("x")
    with pytest.raises(FileExistsError):
        corpus.generate(tmp_path, SIZE)


@pytest.fixture(scope="module")
def mutated(base, tmp_path_factory) -> tuple[dict, dict, corpus.MutationStats, Path]:
    root, _ = base
    before = tree(root)
    sql_before = (root / "db" / "patients.sql").read_bytes()
    copy = tmp_path_factory.mktemp("mut") / "c"
    corpus.generate(copy, SIZE, seed=7)
    stats = corpus.mutate(copy, rate=0.05, seed=11)
    return before, {"tree": tree(copy), "sql": sql_before}, stats, copy


def test_mutate_changes_deletes_adds_renames(mutated):
    before, after, stats, root = mutated
    now = after["tree"]
    assert stats.edited >= 1 and stats.deleted >= 1 and stats.new_files >= 1 and stats.renamed_dirs == 1
    assert stats.appended >= 1 and "renamed" in stats.summary()
    changed = [p for p in before.keys() & now.keys() if before[p] != now[p] and before[p] != "dir"]
    assert any(p.endswith((".hl7", ".json")) for p in changed)
    assert any(p.endswith(".log") for p in changed)
    assert any(p.endswith(".dcm") for p in now.keys() - before.keys())
    assert any(p.endswith("-merged") and now[p] == "dir" for p in now.keys() - before.keys())
    assert (root / "db" / "current.sql").exists()  # the symlink survives the day


def test_mutate_inserts_in_middle_of_sql(mutated):
    _, after, stats, root = mutated
    old, new = after["sql"], (root / "db" / "patients.sql").read_bytes()
    off = stats.sql_insert_offset
    assert 0 < off < len(old) // 2 and stats.inserted_rows >= 3 and stats.edited_rows >= 1
    assert new[:off] == old[:off] and len(new) > len(old)
    assert new[off:].startswith(b"INSERT INTO patients") and old[off:].startswith(b"-- Name: encounters")
    assert new.endswith(old[old.index(b"-- Indexes"):])


def test_mutate_is_deterministic(mutated, tmp_path):
    _, after, _, _ = mutated
    corpus.generate(tmp_path / "c", SIZE, seed=7)
    corpus.mutate(tmp_path / "c", rate=0.05, seed=11)
    assert tree(tmp_path / "c") == after["tree"]


@pytest.mark.parametrize("text, value", [("64MiB", 64 * 2**20), ("1G", 2**30), ("4096", 4096), ("1.5k", 1536)])
def test_parse_size(text, value):
    assert corpus.parse_size(text) == value


def test_cli_runs_as_script(tmp_path):
    script = ROOT / "benchmarks" / "corpus.py"
    out = subprocess.run([sys.executable, str(script), "generate", str(tmp_path / "c"), "--size", "256KiB"],
                         capture_output=True, text=True, check=True).stdout
    assert "files" in out
    out = subprocess.run([sys.executable, str(script), "mutate", str(tmp_path / "c"), "--rate", "0.1"],
                         capture_output=True, text=True, check=True).stdout
    assert "renamed" in out


def test_small_files_corpus_is_deterministic_and_mutable(tmp_path):
    a = corpus.generate_small(tmp_path / "a", 250, seed=11)
    corpus.generate_small(tmp_path / "b", 250, seed=11)
    assert a.files == 250 and tree(tmp_path / "a") == tree(tmp_path / "b")
    assert 3000 < a.bytes / a.files < 6500  # about 4.6 KB a file: 200,000 files make about 0.93 GB
    before = tree(tmp_path / "a")
    m = corpus.mutate(tmp_path / "a", rate=0.05, seed=2)
    assert m.edited and m.deleted and m.new_files and tree(tmp_path / "a") != before


def test_small_files_corpus_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="below 1"):
        corpus.generate_small(tmp_path / "z", 0)
    (tmp_path / "x").write_text("x")
    with pytest.raises(FileExistsError):
        corpus.generate_small(tmp_path, 10)


def test_one_large_file_is_written_whole_and_never_over_an_existing_one(tmp_path):
    size = corpus.generate_large(tmp_path / "big.dcm", 2 * 2**20 + 4)
    assert size == (tmp_path / "big.dcm").stat().st_size == 2 * 2**20 + 4
    with pytest.raises(FileExistsError):
        corpus.generate_large(tmp_path / "big.dcm", 2**20)

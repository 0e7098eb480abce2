"""The floors of DESIGN.md hold (import-linter), the code is lint-clean (ruff) and the core packages type-check
(mypy, the files listed in pyproject.toml [tool.mypy])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    exe = BIN / name
    if not exe.exists():
        pytest.fail(f"{name} is not installed next to {sys.executable}: pip install -e '.[dev]'")
    return str(exe)


def test_import_floors() -> None:
    """`lint-imports` with the contract in pyproject.toml; an ignore that no longer matches fails too."""
    proc = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def test_no_import_is_excused() -> None:
    """The contracts list no ignored import: an exception is fixed, not recorded."""
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert {c["id"] for c in contracts} >= {"floors", "acyclic"}
    assert [c["id"] for c in contracts if c.get("ignore_imports")] == []
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "medmm").rglob("*/__init__.py")}
    (acyclic,) = [c for c in contracts if c["id"] == "acyclic"]
    assert packages - {"medmm.schemas"} <= set(acyclic["ancestors"]), "a package is left out of the acyclic contract"


def _lint_with(tmp_path: Path, plants: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on a copy of the package with ``plants`` (path -> source) added."""
    import shutil

    pkg = tmp_path / "medmm"
    shutil.copytree(ROOT / "medmm", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for rel, text in plants.items():
        (pkg / rel).write_text(text)
    return subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(tmp_path), "PATH": str(BIN)})


def test_a_new_upward_import_is_caught(tmp_path: Path) -> None:
    """The contract bites: a reader importing the trainer breaks it."""
    proc = _lint_with(tmp_path, {"io/csv_extra.py": "from ..train import trainer  # noqa: F401\n"})
    assert proc.returncode != 0
    assert "medmm.io.csv_extra -> medmm.train.trainer" in proc.stdout


def test_a_cycle_inside_io_is_caught(tmp_path: Path) -> None:
    """Two io modules importing each other (as fhir.py and notes.py once did) break the acyclic contract."""
    proc = _lint_with(tmp_path, {"io/ring_a.py": "from . import ring_b  # noqa: F401\n",
                                 "io/ring_b.py": "def f() -> None:\n    from . import ring_a  # noqa: F401\n"})
    assert proc.returncode != 0
    assert "No cycles are allowed in medmm.io" in proc.stdout
    assert "1 kept, 1 broken" in proc.stdout


def test_ruff_clean() -> None:
    proc = subprocess.run([_tool("ruff"), "check", "--no-cache", "medmm", "tests", "benchmarks"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_mypy_clean_on_the_core_packages() -> None:
    """About a minute of CPU on a cold cache (.mypy_cache makes reruns take seconds)."""
    import tomllib

    files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    assert {"medmm/records.py", "medmm/cohort.py", "medmm/io", "medmm/models", "medmm/preprocess"} <= set(files)
    proc = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Success: no issues found" in proc.stdout


def test_no_private_name_is_imported_across_modules() -> None:
    """A module imports another's public names only (``from .x import _helper`` means the helper
    belongs in a shared, public place)."""
    import ast

    found = []
    for path in sorted((ROOT / "medmm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("medmm")):
                found += [f"{path.relative_to(ROOT)}:{node.lineno} {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []

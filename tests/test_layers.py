"""The floors of DESIGN.md hold (import-linter), and the code is lint-clean (ruff)."""

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
    assert "1 kept, 0 broken" in proc.stdout


def test_a_new_upward_import_is_caught(tmp_path: Path) -> None:
    """The contract bites: a reader importing the trainer breaks it."""
    pkg = tmp_path / "medmm"
    import shutil

    shutil.copytree(ROOT / "medmm", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (pkg / "io" / "csv_extra.py").write_text("from ..train import trainer  # noqa: F401\n")
    proc = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(tmp_path), "PATH": str(BIN)})
    assert proc.returncode != 0
    assert "medmm.io.csv_extra -> medmm.train.trainer" in proc.stdout


def test_ruff_clean() -> None:
    proc = subprocess.run([_tool("ruff"), "check", "--no-cache", "medmm", "tests", "benchmarks"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]

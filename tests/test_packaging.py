"""The built wheel is complete: installed into a fresh virtualenv, medmm validates a manifest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import medmm
    from medmm.cohort import validate_manifest
    from medmm.config import SCHEMA_PATH
    from medmm.schemas import load_schema, schema_names

    report = validate_manifest(Path(sys.argv[1]), check_files=False)
    print(json.dumps({
        "file": medmm.__file__,
        "schemas": schema_names(),
        "experiment_title": json.loads(SCHEMA_PATH.read_text()).get("title"),
        "manifest_id": load_schema("manifest.schema.json")["$id"],
        "errors": [[p.row, p.column] for p in report.errors],
    }))
""")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "medmm", src / "medmm", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-q", "-w", str(out), str(src)])
    (found,) = out.glob("medmm-*.whl")
    return found


def test_wheel_ships_every_schema(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith("medmm/schemas/") and n.endswith(".json")}
    in_tree = {p.name for p in (ROOT / "medmm" / "schemas").glob("*.schema.json")}
    assert in_tree and shipped == in_tree


def test_wheel_in_fresh_venv_validates_a_manifest(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # the dependencies come from this interpreter's site-packages, appended after the venv's own
    # (a plain path line: the .pth files there, such as an editable medmm, are not processed)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)])

    manifest = tmp_path / "work" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text("patient_id,split,sex,index_time,label_tumor\n"
                        "P001,train,F,2021-03-04T10:00:00,1\n"
                        "P002,training,M,2021-03-05T11:30:00,0\n"
                        "P003,test,X,2021-03-06T08:15:00,0\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = _run([str(py), "-c", CHECK, str(manifest)], cwd=manifest.parent, env=env)
    got = json.loads(proc.stdout.strip().splitlines()[-1])

    assert Path(got["file"]).is_relative_to(site), f"medmm imported from {got['file']}, not the wheel"
    assert not Path(got["file"]).is_relative_to(ROOT)
    assert "manifest.schema.json" in got["schemas"] and "experiment.schema.json" in got["schemas"]
    assert got["manifest_id"].endswith("manifest.schema.json")
    assert got["experiment_title"]
    # the schema's enums caught the two bad cells, and only those
    assert sorted(map(tuple, got["errors"])) == [(1, "split"), (2, "sex")]

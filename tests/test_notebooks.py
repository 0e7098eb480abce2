"""The notebooks run top to bottom on small data, and their outputs show what they promise.

Executed with nbclient on the ``python3`` kernel of the running interpreter's environment
(jupyter_client resolves a kernelspec's ``python`` to ``sys.executable``). All three run in the
default suite: every notebook in ``notebooks/`` must run top to bottom in ``make test``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")


def run_notebook(name: str, tmp_path: Path, monkeypatch, timeout: int = 600):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MEDMM_NOTEBOOK_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("MEDMM_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend renders figures as PNG
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return nb


def outputs(nb, mime: str) -> list[str]:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream" and mime == "text/plain":
                out.append(o.get("text", ""))
            data = o.get("data", {})
            if mime in data:
                v = data[mime]
                out.append(v if isinstance(v, str) else json.dumps(v))
    return out


def test_notebooks_are_saved_without_outputs_and_use_the_python3_kernel():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "python3", path
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), path
    assert len(list(NOTEBOOKS.glob("*.ipynb"))) == 3
    assert sys.executable


def test_bring_your_own_data_notebook(tmp_path, monkeypatch):
    nb = run_notebook("02_bring_your_own_data.ipynb", tmp_path, monkeypatch)
    html = "\n".join(outputs(nb, "text/html"))
    # validation found both planted mistakes, then nothing once they were fixed
    assert "does not exist" in html and "sexx" in html and "No problems found." in html
    assert "<b>Cohort</b>" in html and "PatientRecord" in html
    assert "class='finding " in html  # notes with their findings highlighted
    assert 'alt="image slices"' in html  # the viewer
    assert len(outputs(nb, "image/png")) == 1  # the vitals plot, shown once
    assert (tmp_path / "work" / "byod" / "export" / "manifest.csv").exists()


def test_quickstart_notebook(tmp_path, monkeypatch):
    nb = run_notebook("01_quickstart.ipynb", tmp_path, monkeypatch)
    html = "\n".join(outputs(nb, "text/html"))
    assert "<b>Cohort</b>" in html and "PatientRecord" in html and "EvaluationResult" in html
    assert "auroc" in html and "shapley_auroc" in html
    assert len(outputs(nb, "image/png")) >= 1
    report = tmp_path / "work" / "quickstart" / "evaluation" / "report.html"
    assert report.exists() and report.read_text().count("data:image/png;base64,") >= 6
    assert "MLflow run" in "\n".join(outputs(nb, "text/plain"))


def test_cohort_evaluation_notebook(tmp_path, monkeypatch):
    nb = run_notebook("03_cohort_evaluation.ipynb", tmp_path, monkeypatch)
    html = "\n".join(outputs(nb, "text/html"))
    assert "DeLong" in html and "paired bootstrap" in html
    assert "image+notes+vitals+ehr" in html and "<th>attention</th>" in html  # per-pattern comparison
    assert "fusion_helps" in html and "shapley_auroc" in html
    assert len(outputs(nb, "image/png")) >= 4  # ROC overlay, forest plot, heat map, calibration
    text = "\n".join(outputs(nb, "text/plain"))
    assert "sum of Shapley values (tumor)" in text
    # efficiency of the Shapley values, as printed by the notebook
    line = next(t for t in text.splitlines() if t.startswith("sum of Shapley"))
    nums = [float(x) for x in line.replace(":", " ").split() if x.replace(".", "").replace("-", "").isdigit()]
    assert nums[0] == pytest.approx(nums[-1], abs=1e-3)
    assert (tmp_path / "work" / "evaluation" / "report_attention" / "report.html").exists()

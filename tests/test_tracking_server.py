"""Tracking against a real `mlflow server` on 127.0.0.1: log a run, read it back, stop the server.

Marked slow: the server alone takes 10-30 s to start. The SQLite store is covered by the fast
tests in test_experiment_run.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(root: Path, timeout: float = 120.0):
    """Start `mlflow server` bound to 127.0.0.1 on a free port; yield its URI once /health answers;
    always stop it (its whole process group) on the way out."""
    port = _free_port()
    exe = Path(sys.executable).parent / "mlflow"
    cmd = [str(exe) if exe.exists() else "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
           "--artifacts-destination", str(root / "artifacts")]
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server not healthy after {timeout} s")
            time.sleep(0.5)
        proc.server_uri = uri
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        log.close()


@pytest.mark.slow
def test_run_logged_to_a_real_mlflow_server_reads_back(tiny_cohort, tiny_loaded, tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from medmm.config import load_config
    from medmm.experiment import run_experiment

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "server"
    root.mkdir()
    with mlflow_server(root) as server:
        uri = server.server_uri
        cfg = load_config({
            "cohort": {"manifest": str(tiny_cohort)}, "out_dir": str(tmp_path / "out"),
            "model": {"modalities": ["ehr", "notes"], "dim": 16},
            "train": {"epochs": 2, "batch_size": 8, "min_epochs": 1, "device": "cpu"},
            "tracking": {"tracking_uri": uri, "experiment": "server-test", "register_model": "server-model",
                         "plots": False},
        })
        res = run_experiment(config=cfg, cohort=tiny_loaded, progress=False)
        client = MlflowClient(uri)
        run = client.get_run(res.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params["train.epochs"] == "2" and run.data.params["model.modalities"] == "['ehr', 'notes']"
        assert [m.step for m in client.get_metric_history(res.run_id, "val_loss")] == [0, 1]
        assert run.data.metrics["test_auroc_tumor"] == pytest.approx(
            float(res.metrics.query("task == 'tumor' and group == 'all'").auroc.iloc[0]))
        # artifacts go through the server's artifact proxy
        assert load_config(client.download_artifacts(res.run_id, "config/resolved_config.yaml")).train.epochs == 2
        mlflow.set_tracking_uri(uri)
        model = mlflow.pyfunc.load_model("models:/server-model/1")
        table = pd.read_csv(tiny_cohort).head(3)
        for c in ("notes_path", "ehr_path"):
            table[c] = [str(Path(tiny_cohort).parent / v) for v in table[c]]
        out = model.predict(table[["patient_id", "index_time", "notes_path", "ehr_path"]])
        assert len(out) == 3 and out["prob_tumor"].between(0, 1).all()
    assert server.poll() is not None  # stopped
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{uri}/health", timeout=2)

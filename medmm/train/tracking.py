"""MLflow tracking: runs, per-epoch metrics, the resolved config and the model.

The store is ``MLFLOW_TRACKING_URI`` when set, otherwise an SQLite file under the working
directory (``sqlite:///mlflow.db``). Nothing that looks like PHI is logged as a param or
tag: only settings, counts and metrics (contract 5).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

__all__ = ["MlflowTracker", "default_tracking_uri", "flatten"]

# keys that may hold identifying data never become params or tags
_PHI_KEY = re.compile(
    r"(patient_?name|given_?name|family_?name|birth|\bdob\b|address|phone|\bmrn\b|\bssn\b|patient_?id"
    r"|note_?text|free_?text)", re.I)


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


class MlflowTracker:
    """A context manager around one MLflow run; also a trainer callback (``on_epoch_end``)."""

    def __init__(self, *, experiment: str = "medmm", run_name: str | None = None,
                 tracking_uri: str | None = None, tags: dict[str, str] | None = None) -> None:
        self.experiment = experiment
        self.run_name = run_name
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.tags = dict(tags or {})
        self.run_id: str | None = None

    def __enter__(self) -> "MlflowTracker":
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_experiment(self.experiment)
        run = mlflow.start_run(run_name=self.run_name, tags={k: v for k, v in self.tags.items() if not _PHI_KEY.search(k)})
        self.run_id = run.info.run_id
        self.experiment_id = run.info.experiment_id
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        import mlflow

        mlflow.end_run(status="FAILED" if exc_type else "FINISHED")

    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow

        flat = {k: (str(v)[:500] if v is not None else "None") for k, v in flatten(params).items()
                if not _PHI_KEY.search(k.replace(".", " "))}
        mlflow.log_params(flat)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import math

        import mlflow

        clean = {k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(float(v))}
        if clean:
            mlflow.log_metrics(clean, step=step)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.log_metrics(metrics, step=epoch)

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        import mlflow

        mlflow.log_dict(data, name)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        import mlflow

        mlflow.log_artifact(str(path), artifact_path)

    def log_model(self, model_dir: str | Path, *, tasks: tuple[str, ...], registered_model_name: str | None = None) -> str:
        """Log a saved medmm model folder as an MLflow pyfunc model with a signature."""
        import mlflow
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        from .pyfunc import INPUT_COLUMNS, MedmmPyfuncModel, pip_requirements

        signature = ModelSignature(
            inputs=Schema([ColSpec("string", c, required=(c == "patient_id")) for c in INPUT_COLUMNS]),
            outputs=Schema([ColSpec("string", "patient_id"), *[ColSpec("double", f"prob_{t}") for t in tasks]]),
        )
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=MedmmPyfuncModel(),
            artifacts={"medmm_model": str(model_dir)},
            signature=signature,
            pip_requirements=pip_requirements(),
            registered_model_name=registered_model_name,
        )
        return info.model_uri

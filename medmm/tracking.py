"""MLflow tracking, used by training and evaluation alike: runs, batched per-epoch metrics, the resolved config, the environment,
plots and the model.

The store is ``MLFLOW_TRACKING_URI`` when set, otherwise an SQLite file under the working
directory (``sqlite:///mlflow.db``); a real ``mlflow server`` works the same way. Nothing
that looks like PHI is logged as a param or tag: only settings, counts and metrics
(contract 5).
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path
from typing import Any

__all__ = ["MlflowTracker", "NullTracker", "default_tracking_uri", "flatten", "environment_info"]

# the last part of a key that may hold identifying data never becomes a param or tag
_PHI_KEY = re.compile(r"((patient|given|family|first|last|full|maiden)_?name|birth|\bdob\b|address|phone|\bmrn\b|"
                      r"\bssn\b|patient_?id|note_?text|^text$)", re.I)


def _phi_key(key: str) -> bool:
    return bool(_PHI_KEY.search(key.rsplit(".", 1)[-1]))


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def environment_info() -> dict[str, Any]:
    """Python, platform, key package versions, device and git commit (no user or host data)."""
    import platform
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    import torch

    pkgs = {}
    for p in ("medmm", "torch", "monai", "mlflow", "numpy", "pandas", "scikit-learn", "pydantic", "pydicom", "nibabel"):
        try:
            pkgs[p] = version(p)
        except PackageNotFoundError:
            pass
    commit = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": pkgs,
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "world_size": int(os.environ.get("WORLD_SIZE", 1)),
        "git_commit": commit,
    }


class _Prefixed:
    """A trainer callback logging a tracker's metrics under a prefix (``pretrain_image_train_loss``)."""

    def __init__(self, tracker: "MlflowTracker", prefix: str) -> None:
        self.tracker = tracker
        self.prefix = prefix

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.tracker.on_epoch_end(epoch, {f"{self.prefix}{k}": v for k, v in metrics.items()})


class MlflowTracker:
    """A context manager around one MLflow run; also a trainer callback.

    Per-epoch metrics are buffered and sent in one ``log_batch`` call every ``flush_every``
    epochs (and when the run ends). ``run_id`` reopens an existing run (resume);
    ``nested=True`` starts a child of the active run (cross-validation folds).
    """

    def __init__(self, *, experiment: str = "medmm", run_name: str | None = None,
                 tracking_uri: str | None = None, tags: dict[str, str] | None = None,
                 run_id: str | None = None, nested: bool = False, flush_every: int = 1) -> None:
        self.experiment = experiment
        self.run_name = run_name
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.tags = dict(tags or {})
        self.run_id: str | None = run_id
        self.resumed = run_id is not None
        self.nested = nested
        self.flush_every = max(int(flush_every), 1)
        self._buffer: list[Any] = []
        self._epochs_buffered = 0
        self.experiment_id: str | None = None

    # ------------------------------------------------------------------ run lifecycle
    def __enter__(self) -> "MlflowTracker":
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        tags = {k: str(v) for k, v in self.tags.items() if not _phi_key(k)}
        if self.run_id:
            run = mlflow.start_run(run_id=self.run_id, nested=self.nested)
        else:
            if not self.nested:
                mlflow.set_experiment(self.experiment)
            run = mlflow.start_run(run_name=self.run_name, tags=tags, nested=self.nested)
        self.run_id = run.info.run_id
        self.experiment_id = run.info.experiment_id
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        import mlflow

        try:
            self.flush()
        finally:
            status = "KILLED" if exc_type is KeyboardInterrupt else "FAILED" if exc_type else "FINISHED"
            mlflow.end_run(status=status)

    @property
    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.tracking_uri)

    def nested_run(self, *, run_name: str, tags: dict[str, str], resume: bool = False) -> "MlflowTracker":
        """A child run (reopened when ``resume`` and a child with the same tags exists)."""
        run_id = None
        if resume:
            flt = " and ".join([f"tags.mlflow.parentRunId = '{self.run_id}'",
                                *[f"tags.`{k}` = '{v}'" for k, v in tags.items()]])
            found = self.client.search_runs([self.experiment_id], filter_string=flt, max_results=1)
            run_id = found[0].info.run_id if found else None
        return MlflowTracker(experiment=self.experiment, run_name=run_name, tracking_uri=self.tracking_uri,
                             tags=dict(tags), run_id=run_id, nested=True,
                             flush_every=self.flush_every)

    # ------------------------------------------------------------------ params, tags, metrics
    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow

        flat = {k: (str(v)[:500] if v is not None else "None") for k, v in flatten(params).items() if not _phi_key(k)}
        if self.resumed:  # values logged before the interrupt cannot change; only add new keys
            have = self.client.get_run(self.run_id).data.params
            flat = {k: v for k, v in flat.items() if k not in have}
        items = list(flat.items())
        for s in range(0, len(items), 100):
            mlflow.log_params(dict(items[s:s + 100]))

    def set_tags(self, tags: dict[str, Any]) -> None:
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in tags.items() if not _phi_key(k)})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import mlflow

        clean = {k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(float(v))}
        if clean:
            mlflow.log_metrics(clean, step=step)

    def _queue(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        for k, v in metrics.items():
            if v is not None and not math.isnan(float(v)):
                self._buffer.append(Metric(k, float(v), ts, int(step)))

    def flush(self) -> None:
        """Send the buffered per-epoch metrics (one request per 1000 values)."""
        if not self._buffer or not self.run_id:
            return
        buf, self._buffer, self._epochs_buffered = self._buffer, [], 0
        for s in range(0, len(buf), 1000):
            self.client.log_batch(self.run_id, metrics=buf[s:s + 1000])

    # ------------------------------------------------------------------ trainer callback
    def on_train_begin(self, info: dict[str, Any]) -> None:
        self.log_params({"imbalance": info.get("imbalance", {}), "runtime": {
            "world_size": info.get("world_size"), "steps_per_epoch": info.get("steps_per_epoch"),
            "device": info.get("device")}})

    def on_resume(self, history: list[dict[str, float]]) -> None:
        """Log the epochs of ``history`` that never reached MLflow (killed before a flush)."""
        logged = self.client.get_metric_history(self.run_id, "train_loss")
        last = max((m.step for m in logged), default=-1)
        for h in history:
            if h["epoch"] > last:
                self._queue({k: v for k, v in h.items() if k != "epoch"}, int(h["epoch"]))
        self.flush()

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self._queue(metrics, epoch)
        self._epochs_buffered += 1
        if self._epochs_buffered >= self.flush_every:
            self.flush()

    def prefixed(self, prefix: str) -> _Prefixed:
        return _Prefixed(self, prefix)

    # ------------------------------------------------------------------ artifacts and models
    def log_dict(self, data: dict[str, Any], name: str) -> None:
        import mlflow

        mlflow.log_dict(data, name)

    def log_text(self, text: str, name: str) -> None:
        import mlflow

        mlflow.log_text(text, name)

    def log_figure(self, figure: Any, name: str) -> None:
        import matplotlib.pyplot as plt
        import mlflow

        mlflow.log_figure(figure, name)
        plt.close(figure)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        import mlflow

        mlflow.log_artifact(str(path), artifact_path)

    def log_environment(self) -> dict[str, Any]:
        env = environment_info()
        self.log_dict(env, "environment/environment.json")
        self.set_tags({"medmm.git_commit": env["git_commit"] or "unknown", "medmm.torch": env["packages"].get("torch"),
                       "medmm.cuda": env["cuda_available"]})
        return env

    def log_pyfunc(self, *, python_model: Any, artifacts: dict[str, str], signature: Any,
                   pip_requirements: list[str], registered_model_name: str | None = None) -> str:
        """Log an MLflow pyfunc model into the run (registered under ``registered_model_name`` when
        given); the model's URI. :func:`medmm.train.pyfunc.log_medmm_model` logs a medmm model."""
        import mlflow

        info = mlflow.pyfunc.log_model(name="model", python_model=python_model, artifacts=artifacts,
                                       signature=signature, pip_requirements=pip_requirements,
                                       registered_model_name=registered_model_name)
        return info.model_uri


class NullTracker:
    """Stands in for :class:`MlflowTracker` on ranks other than 0 (which never log)."""

    run_id = None
    experiment_id = None
    resumed = False

    def __init__(self, tracking_uri: str | None = None) -> None:
        self.tracking_uri = tracking_uri or default_tracking_uri()

    def __enter__(self) -> "NullTracker":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def nested_run(self, **kw: Any) -> "NullTracker":
        return NullTracker(self.tracking_uri)

    def prefixed(self, prefix: str) -> "NullTracker":
        return self

    def __getattr__(self, name: str):
        if name.startswith("log_") or name.startswith("on_") or name in ("set_tags", "flush"):
            return lambda *a, **k: None
        raise AttributeError(name)

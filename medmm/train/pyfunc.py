"""The MLflow pyfunc flavour of a medmm model: a patient table in, probabilities out.

The input table has manifest columns (``patient_id`` and the modality paths, absolute or
relative to the working directory, plus ``index_time``); the output has ``patient_id`` and
each task's output columns (:mod:`medmm.models.outputs`): ``prob_<task>`` for a binary task,
``prob_<task>.<class>`` and ``pred_<task>`` for a multi-class one, ``value_<task>`` for a
regression, ``risk_score_<task>`` and ``risk_<task>@<horizon>`` for a survival task.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc

__all__ = ["MedmmPyfuncModel", "INPUT_COLUMNS", "pip_requirements", "output_spec", "log_medmm_model"]

INPUT_COLUMNS = ("patient_id", "index_time", "image_path", "notes_path", "vitals_path", "ehr_path")


def pip_requirements() -> list[str]:
    """Pinned requirements (given explicitly so that logging does not infer them: 8 s saved)."""
    from importlib.metadata import version

    pkgs = ["torch", "monai", "pydicom", "nibabel", "scikit-learn", "pandas", "numpy", "mlflow"]
    return [f"{p}=={version(p).split('+')[0]}" for p in pkgs] + ["medmm"]


def output_spec(model_dir: Any, tasks: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """``(column, MLflow type)`` of the pyfunc output of the model saved in ``model_dir``."""
    import numpy as np

    from ..models.outputs import task_outputs
    from .hub import load_model

    try:
        model = load_model(model_dir)
    except Exception:  # noqa: BLE001 - a folder the loader refuses: the binary columns of the old signature
        return [(f"prob_{t}", "double") for t in tasks]
    cols = task_outputs(model, np.zeros((1, model.n_outputs), dtype=np.float32))
    return [(c, "string" if v.dtype == object else "double") for c, v in cols.items()]


class MedmmPyfuncModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from .hub import load_model

        self.model = load_model(context.artifacts["medmm_model"])

    def predict(self, context, model_input, params=None):  # the signature is given at logging, not by type hints
        import pandas as pd

        from ..cohort import row_to_record

        records = [row_to_record(row, modalities=self.model.modalities) for row in model_input.to_dict(orient="records")]
        from ..models.outputs import task_outputs

        probs = self.model.predict_records(records)
        return pd.DataFrame({"patient_id": [r.patient_id for r in records], **task_outputs(self.model, probs)})


def log_medmm_model(tracker: Any, model_dir: Any, *, tasks: tuple[str, ...],
                    registered_model_name: str | None = None) -> str | None:
    """Log a saved medmm model folder through ``tracker`` (a :class:`medmm.tracking.MlflowTracker`)
    as an MLflow pyfunc model with a signature; its URI (``None`` from a rank that does not log)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("string", c, required=(c == "patient_id")) for c in INPUT_COLUMNS]),
        outputs=Schema([ColSpec("string", "patient_id"),
                        *[ColSpec(kind, name) for name, kind in output_spec(model_dir, tasks)]]),
    )
    return tracker.log_pyfunc(python_model=MedmmPyfuncModel(), artifacts={"medmm_model": str(model_dir)},
                              signature=signature, pip_requirements=pip_requirements(),
                              registered_model_name=registered_model_name)

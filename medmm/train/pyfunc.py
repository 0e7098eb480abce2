"""The MLflow pyfunc flavour of a medmm model: a patient table in, probabilities out.

The input table has manifest columns (``patient_id`` and the modality paths, absolute or
relative to the working directory, plus ``index_time``); the output has ``patient_id`` and
one ``prob_<task>`` column per task.
"""

from __future__ import annotations


import mlflow.pyfunc

__all__ = ["MedmmPyfuncModel", "INPUT_COLUMNS", "pip_requirements"]

INPUT_COLUMNS = ("patient_id", "index_time", "image_path", "notes_path", "vitals_path", "ehr_path")


def pip_requirements() -> list[str]:
    """Pinned requirements (given explicitly so that logging does not infer them: 8 s saved)."""
    from importlib.metadata import version

    pkgs = ["torch", "monai", "pydicom", "nibabel", "scikit-learn", "pandas", "numpy", "mlflow"]
    return [f"{p}=={version(p).split('+')[0]}" for p in pkgs] + ["medmm"]


class MedmmPyfuncModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from .hub import load_model

        self.model = load_model(context.artifacts["medmm_model"])

    def predict(self, context, model_input, params=None):  # the signature is given at logging, not by type hints
        import pandas as pd

        from ..cohort import row_to_record

        records = [row_to_record(row, modalities=self.model.modalities) for row in model_input.to_dict(orient="records")]
        probs = self.model.predict_records(records)
        out = pd.DataFrame({"patient_id": [r.patient_id for r in records]})
        for k, t in enumerate(self.model.tasks):
            out[f"prob_{t}"] = probs[:, k].astype(float)
        return out

"""medmm: a medical multimodal research workbench.

Public API (heavy libraries such as torch, monai and mlflow are imported only when used)::

    import medmm
    manifest = medmm.generate_cohort("cohort", n_patients=300, seed=0)
    cohort = medmm.load_cohort(manifest)   # lazy: records built on access, images read on demand
    image = medmm.read_image("series_folder_or_file")
"""

from __future__ import annotations

from ._lazy import lazy_attributes

from .errors import (  # noqa: F401  (light: no third-party imports)
    ConfigError,
    DicomError,
    GeometryError,
    ManifestError,
    MedmmError,
    NotFittedError,
    ReadError,
    SchemaError,
)

__version__ = "0.1.0"

# name -> "module:attribute", resolved on first use
_LAZY = {
    "PatientRecord": "medmm.records:PatientRecord",
    "Missing": "medmm.records:Missing",
    "Image": "medmm.records:Image",
    "Notes": "medmm.records:Notes",
    "Note": "medmm.records:Note",
    "Vitals": "medmm.records:Vitals",
    "Tabular": "medmm.records:Tabular",
    "MODALITIES": "medmm.records:MODALITIES",
    "generate_cohort": "medmm.synth:generate_cohort",
    "load_cohort": "medmm.cohort:load_cohort",
    "validate_manifest": "medmm.cohort:validate_manifest",
    "Cohort": "medmm.cohort:Cohort",
    "read_image": "medmm.io.image:read_image",
    "MultimodalModel": "medmm.models.multimodal:MultimodalModel",
    "ModelConfig": "medmm.models.multimodal:ModelConfig",
    "load_model": "medmm.train.hub:load_model",
    "create_model": "medmm.models.factory:create_model",
    "train": "medmm.train.trainer:train",
    "TrainConfig": "medmm.train.trainer:TrainConfig",
    "run_experiment": "medmm.experiment:run_experiment",
    "resume_experiment": "medmm.experiment:resume_experiment",
    "load_config": "medmm.config:load_config",
    "ExperimentConfig": "medmm.config:ExperimentConfig",
    "evaluate_predictions": "medmm.evaluate.metrics:evaluate_predictions",
    # ``medmm.evaluate`` is the evaluation subpackage, and it is callable: medmm.evaluate(model, manifest)
    "evaluate": "medmm.evaluate:package",
    "evaluate_cohort": "medmm.evaluate.api:evaluate_cohort",
    "EvaluationResult": "medmm.evaluate.api:EvaluationResult",
}

__all__ = sorted(
    [*_LAZY, "__version__", "MedmmError", "ReadError", "DicomError", "GeometryError",
     "SchemaError", "ManifestError", "NotFittedError", "ConfigError"]
)


__getattr__, __dir__, _ = lazy_attributes("medmm", _LAZY, __all__)

"""One way from a model reference to a model: :func:`load_model` (``medmm.load_model``).

A reference is a model folder (a bundle, :mod:`medmm.models.bundle`), an MLflow model URI
(``runs:/RUN_ID/model``, ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``) or an already loaded
model. For a URI only the files are fetched and the medmm bundle logged inside the MLflow model
is read: MLflow's pyfunc loader (which unpickles the logged Python model) is never called, so
loading runs nothing stored with the model either way. Every command and API (predict,
evaluate, drift, compress, export, serve) goes through here.

Export artefacts (TorchScript, ONNX) of a model that was not exported with ``medmm export``
go to :func:`export_cache_dir`, keyed by the model's fingerprint, never into the model folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ReadError

__all__ = ["load_model", "is_mlflow_uri", "model_fingerprint", "export_cache_dir", "MLFLOW_SCHEMES"]

MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")


def is_mlflow_uri(ref: Any) -> bool:
    return isinstance(ref, str) and ref.startswith(MLFLOW_SCHEMES)


def load_model(ref: Any, *, tracking_uri: str | None = None, map_location: Any = "cpu",
               trust_pickle: bool = False) -> Any:
    """The :class:`~medmm.models.multimodal.MultimodalModel` that ``ref`` names.

    Parameters
    ----------
    ref:
        A model folder, an MLflow model URI, or a loaded model (returned as it is).
    tracking_uri:
        MLflow tracking URI for a ``runs:/`` or ``models:/`` reference (default
        ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working directory).
    trust_pickle:
        Read a format 1/2 folder whose preprocessing is a pickle (this runs code stored in the
        folder; convert such folders once with ``medmm model upgrade`` instead).
    """
    from ..models.bundle import read_bundle

    if hasattr(ref, "predict_records") and hasattr(ref, "state_dict"):
        return ref
    if not isinstance(ref, (str, os.PathLike)):
        raise ReadError(f"cannot load a model from a {type(ref).__name__}",
                        hint="give a model folder, an MLflow URI (runs:/RUN_ID/model) or a MultimodalModel")
    if is_mlflow_uri(str(ref)):
        with tempfile.TemporaryDirectory(prefix="medmm-model-") as tmp:
            folder = _fetch_mlflow_bundle(str(ref), tracking_uri, Path(tmp))
            return read_bundle(folder, map_location=map_location, trust_pickle=trust_pickle)
    path = Path(ref)
    if not path.exists():
        hint = "give a model folder (OUT_DIR/model of `medmm train`) or an MLflow URI such as runs:/RUN_ID/model"
        raise ReadError("model not found", path=path, hint=hint)
    return read_bundle(path, map_location=map_location, trust_pickle=trust_pickle)


def _fetch_mlflow_bundle(uri: str, tracking_uri: str | None, dst: Path) -> Path:
    """Download an MLflow model's files and return the medmm bundle folder among them."""
    import mlflow
    import yaml

    from ..tracking import default_tracking_uri

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst),
                                                         tracking_uri=tracking_uri or default_tracking_uri(),
                                                         registry_uri=tracking_uri or None))
    except mlflow.exceptions.MlflowException as exc:
        raise ReadError(f"cannot fetch the MLflow model: {exc.message}", path=uri,
                        hint="check the URI and the tracking URI (--tracking-uri or $MLFLOW_TRACKING_URI)") from exc
    mlmodel = local / "MLmodel"
    if mlmodel.is_file():
        spec = yaml.safe_load(mlmodel.read_text()) or {}
        art = (((spec.get("flavors") or {}).get("python_function") or {}).get("artifacts") or {}).get("medmm_model")
        rel = art.get("path") if isinstance(art, dict) else None
        if rel:
            folder = (local / rel).resolve()
            if local.resolve() in folder.parents and (folder / "medmm_model.json").is_file():
                return folder
    found = sorted(p.parent for p in local.rglob("medmm_model.json"))
    if not found:
        raise ReadError("the MLflow model holds no medmm model folder (medmm_model.json)", path=uri,
                        hint="log medmm models with MlflowTracker.log_model (what `medmm train` does)")
    return found[0]


def model_fingerprint(model: Any) -> str:
    """A hash of a model's config, input shapes, weights and preprocessing state (the same for a
    model and its saved-and-loaded copy)."""
    import torch

    from ..preprocess.state import dump_preprocessor

    h = hashlib.sha256()
    h.update(json.dumps({"config": model.config.to_dict(), "shapes": {m: list(s) for m, s in
                         model.input_shapes.items()}}, sort_keys=True, default=str).encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    if model.preprocessor is not None:
        doc, arrays = dump_preprocessor(model.preprocessor)
        h.update(json.dumps(doc, sort_keys=True).encode())
        for k in sorted(arrays):
            if k.endswith(".skops"):  # a skops file's bytes are not stable across a load; its JSON side is hashed
                continue
            h.update(k.encode())
            h.update(arrays[k].tobytes())
    return h.hexdigest()[:24]


def export_cache_dir(model: Any) -> Path:
    """Where this model's export artefacts are cached: ``$MEDMM_CACHE_DIR/export/<fingerprint>``
    (default ``~/.cache/medmm``), outside any model folder."""
    root = Path(os.environ.get("MEDMM_CACHE_DIR") or Path.home() / ".cache" / "medmm")
    return root / "export" / model_fingerprint(model)

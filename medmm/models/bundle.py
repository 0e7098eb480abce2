"""The model bundle: one folder of data (config, weights, fitted preprocessing), never code.

Layout (format 4, described by ``medmm/schemas/model_bundle.schema.json``)::

    medmm_model.json    format, format_version, model (the kind, default "multimodal"), config, input_shapes, files
    weights.pt          the state dict, read with torch.load(weights_only=True)
    preprocessor.json   the fitted preprocessing's state (kinds from a fixed list, settings)
    preprocessor.npz    its arrays (vocabularies, statistics), read with allow_pickle=False

Reading a bundle builds the model from registered medmm classes only: every name in it (the
model kind in :data:`~medmm.models.registry.BUNDLED_MODELS`, encoders, fusion, heads, preprocessing
kinds) is looked up in a registry or a fixed list, so a bundle someone sent you runs nothing of theirs.
Formats 1 and 2 kept the preprocessing as ``preprocessor.pkl``; they are read only with
``trust_pickle=True`` (a warning says what that means), and :func:`upgrade_bundle` (``medmm
model upgrade``) rewrites them as the current format once. Format 4 added modality kinds
(``config.modality_kinds``) and the wide path (``config.wide``); a format 3 bundle loads as the
four default modalities without a wide path, as it was trained.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..errors import MedmmError, ReadError
from ..schemas import schema_path
from .registry import BUNDLED_MODELS

__all__ = ["FORMAT", "FORMAT_VERSION", "save_bundle", "read_bundle", "upgrade_bundle", "is_bundle",
           "bundle_version", "read_meta", "UntrustedPickleWarning", "SCHEMA_PATH"]

FORMAT = "medmm-model"
#: 1: preprocessor.pkl, attention read-out CLS only; 2: preprocessor.pkl; 3: preprocessing as data;
#: 4: modality kinds and the wide path
FORMAT_VERSION = 4
#: versions read without pickle
DATA_VERSIONS = (3, 4)
META = "medmm_model.json"
WEIGHTS = "weights.pt"
LEGACY_PICKLE = "preprocessor.pkl"
SCHEMA_PATH = schema_path("model_bundle.schema.json")


class UntrustedPickleWarning(UserWarning):
    """A model's preprocessing was unpickled: that ran code stored in the model folder."""


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / META).is_file()


def read_meta(path: str | Path) -> dict[str, Any]:
    """The parsed ``medmm_model.json`` of the model folder ``path`` (JSON only: no weights, no preprocessing)."""
    meta_path = Path(path) / META
    if not meta_path.is_file():
        raise ReadError(f"not a medmm model folder (no {META})", path=path,
                        hint="give the folder written by `medmm train` (OUT_DIR/model), MultimodalModel.save, "
                             "or an MLflow model URI (runs:/RUN_ID/model, models:/NAME/VERSION)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReadError(f"{META} is not valid JSON: {exc}", path=meta_path, hint="the model folder is damaged") from exc
    if not isinstance(meta, dict):
        raise ReadError(f"{META} is not a JSON object", path=meta_path, hint="the model folder is damaged")
    return meta


def bundle_version(path: str | Path) -> int | None:
    """The ``format_version`` of a model folder."""
    return read_meta(path).get("format_version")


def _check_schema(meta: dict[str, Any], meta_path: Path) -> None:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(meta))
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path) or "(top)"
        raise ReadError(f"{META} does not follow the model bundle schema at {where}: {err.message}",
                        path=meta_path, hint=f"see {SCHEMA_PATH.name}; the folder is damaged or not medmm's")


def save_bundle(model: Any, path: str | Path) -> Path:
    """Write ``model`` (a :class:`~medmm.models.multimodal.MultimodalModel`) as a format-3 bundle.

    Files are written under temporary names and renamed, so a reader never sees half a bundle;
    a ``preprocessor.pkl`` left by an older format is removed.
    """
    import torch

    from ..preprocess.state import STATE_JSON, STATE_NPZ, save_state

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if model.preprocessor is None:
        raise MedmmError("a model without its fitted preprocessor cannot be saved",
                         hint="attach the fitted MultimodalPreprocessor (create_model(config, preprocessor))")
    kinds = BUNDLED_MODELS.names(cls=type(model).__name__)
    if not kinds:
        raise MedmmError(f"a {type(model).__name__} cannot be saved as a model bundle",
                         hint=f"bundled model kinds: {list(BUNDLED_MODELS)} (register one in medmm.models.registry.BUNDLED_MODELS)")
    tmp = path / ".writing"
    tmp.mkdir(exist_ok=True)
    save_state(model.preprocessor, tmp)
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp / WEIGHTS)
    from .. import __version__

    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "medmm_version": __version__,
        "model": kinds[0],
        "config": model.config.to_dict(),
        "input_shapes": {m: list(s) for m, s in model.input_shapes.items()},
        "files": {"weights": WEIGHTS, "preprocessor": STATE_JSON, "preprocessor_arrays": STATE_NPZ},
    }
    (tmp / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    for name in (WEIGHTS, STATE_JSON, STATE_NPZ, META):  # the metadata last: it marks a complete bundle
        os.replace(tmp / name, path / name)
    tmp.rmdir()
    (path / LEGACY_PICKLE).unlink(missing_ok=True)
    return path


def _legacy_preprocessor(path: Path, version: int, trust_pickle: bool) -> Any:
    pkl = path / LEGACY_PICKLE
    if not trust_pickle:
        raise ReadError(
            f"this model folder is format {version}: its preprocessing is a pickle, and unpickling runs code "
            "stored in the folder", path=path,
            hint="if you trust where it came from, convert it once with `medmm model upgrade FOLDER` "
                 "(or load it with trust_pickle=True); never do so for a model from an unknown source")
    if not pkl.is_file():
        raise ReadError(f"format {version} model folder without {LEGACY_PICKLE}", path=path,
                        hint="the folder is incomplete")
    warnings.warn(f"unpickling {pkl}: this runs code stored in the model folder; convert it with "
                  "`medmm model upgrade` to stop trusting it", UntrustedPickleWarning, stacklevel=4)
    import pickle

    with open(pkl, "rb") as fh:
        return pickle.load(fh)  # noqa: S301 - the caller opted in (trust_pickle=True)


def read_bundle(path: str | Path, *, map_location: Any = "cpu", trust_pickle: bool = False) -> Any:
    """The :class:`~medmm.models.multimodal.MultimodalModel` in the folder ``path``.

    Format 3 runs nothing from the folder: JSON, a ``weights_only`` state dict and pickle-free
    arrays. Formats 1 and 2 need ``trust_pickle=True`` (see the module docstring).
    """
    import torch

    from ..preprocess.state import read_state

    path = Path(path)
    meta = read_meta(path)
    version = meta.get("format_version")
    if version not in (1, 2, *DATA_VERSIONS):
        raise ReadError(f"model format version {version!r} is not supported", path=path / META,
                        hint=f"this medmm reads versions 1 to {FORMAT_VERSION}; upgrade medmm for newer ones")
    config = meta.get("config")
    if not isinstance(config, dict):
        raise ReadError(f"{META} has no config object", path=path / META, hint="the folder is damaged")
    if version in DATA_VERSIONS:
        _check_schema(meta, path / META)
        pre = read_state(path)
    else:
        if version == 1 and config.get("fusion", {}).get("name") == "attention":
            config["fusion"].setdefault("readout", "cls")  # what version 1 computed
        pre = _legacy_preprocessor(path, version, trust_pickle)
    config = dict(config)
    if version < 4:  # before modality kinds and the wide path: the four defaults, no wide layers
        config.setdefault("wide", False)
    # the weights come from the bundle: an encoder's `pretrained` file is not read again
    config["encoders"] = {m: {k: v for k, v in dict(spec).items() if k != "pretrained"}
                          for m, spec in (config.get("encoders") or {}).items()}
    kind = meta.get("model", "multimodal")  # formats up to 4 hold only the multimodal model
    if kind not in BUNDLED_MODELS:
        raise ReadError(f"unknown model kind {kind!r}", path=path / META,
                        hint=f"this medmm builds {list(BUNDLED_MODELS)}; the folder is from a newer medmm or not medmm's")
    model = BUNDLED_MODELS.create(kind, config=config, input_shapes=meta["input_shapes"], preprocessor=pre)
    weights = path / WEIGHTS
    try:
        state = torch.load(weights, map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise ReadError(f"model folder without {WEIGHTS}", path=path, hint="the folder is incomplete") from exc
    except Exception as exc:  # noqa: BLE001 - weights_only refusals and zip errors alike
        raise ReadError(f"cannot read the weights ({type(exc).__name__}: {exc})", path=weights,
                        hint="weights.pt must be a plain state dict of tensors") from exc
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ReadError(f"the weights do not fit the model's config: {exc}", path=weights,
                        hint="the folder mixes files of different models") from exc
    return model.eval()


def upgrade_bundle(src: str | Path, dst: str | Path | None = None) -> Path:
    """Rewrite a format 1/2 model folder (``preprocessor.pkl``) as format 3, in place or into ``dst``.

    This unpickles the old preprocessing once: run it only on a model you trust.
    """
    src = Path(src)
    version = bundle_version(src)
    if version == FORMAT_VERSION and dst is None:
        return src
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrustedPickleWarning)
        model = read_bundle(src, trust_pickle=True)
    return save_bundle(model, dst if dst is not None else src)

"""Experiment configuration: one YAML file, validated with pydantic.

A config names the cohort, the splits, the preprocessing, the model, the tasks, the
training and the tracking settings::

    cohort: {manifest: cohort/manifest.csv}
    split: {mode: manifest, cv_folds: 0}
    model: {fusion: {name: attention}, dim: 64}
    train: {epochs: 30, lr: 0.002, loss: focal, sampler: balanced}
    tracking: {experiment: tumor-fusion, register_model: tumor-fusion}

:func:`load_config` reads the file and applies ``key=value`` overrides with dotted keys
(``train.lr=0.001``, ``model.fusion.name=concat``); values are parsed as YAML. The JSON
Schema of the file is ``medmm/schemas/experiment.schema.json``, written by
``python -m medmm.config`` from these models. The ``train`` section mirrors
:class:`medmm.train.trainer.TrainConfig` (same fields, same defaults); the ``model`` section is
a typed :class:`ModelSection` that becomes a :class:`medmm.models.multimodal.ModelConfig`.

Every name is checked when the config is loaded, before any file is read and without importing
torch: encoder, fusion and head names against the registries (:mod:`medmm.catalog`, with "did
you mean"), each encoder against its modality, and the preprocessing options against the
preprocessors' settings.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from .errors import ConfigError
from .modelspec import KIND_STEP, EncoderSpec, FusionSpec, ModelSection, check_preprocess_options
from .schemas import schema_path

__all__ = ["ExperimentConfig", "ModelSection", "EncoderSpec", "FusionSpec", "load_config", "apply_overrides", "parse_overrides", "json_schema", "SCHEMA_PATH"]

SCHEMA_PATH = schema_path("experiment.schema.json")

_TRAIN_DOCS = {
    "epochs": "Maximum number of epochs.",
    "batch_size": "Patients per batch (per process under torchrun).",
    "lr": "Peak learning rate.",
    "weight_decay": "Decoupled (AdamW) or L2 (SGD) weight decay.",
    "patience": "Early stopping: epochs without improvement of `monitor` before stopping.",
    "min_epochs": "Early stopping never stops before this many epochs.",
    "grad_clip": "Clip the global gradient norm to this value (0: off).",
    "seed": "Seed of every random draw of the training (sampler, dropout, initialisation).",
    "device": "auto (CUDA when available), cpu, cuda or cuda:N.",
    "monitor": "Validation metric for early stopping and model selection: val_loss, val_auroc_mean, val_auroc_<task>, "
               "or last (keep the last epoch's weights).",
    "max_steps": "Stop after this many optimiser steps (smoke tests).",
    "optimizer": "adamw or sgd.",
    "momentum": "SGD momentum (Nesterov when > 0).",
    "scheduler": "cosine (per epoch), onecycle (per step) or constant.",
    "warmup_epochs": "Linear warm-up length in epochs (for onecycle: the rising phase).",
    "grad_accum": "Micro-batches accumulated per optimiser step.",
    "amp": "Mixed precision on CUDA (ignored on CPU).",
    "amp_dtype": "float16 (with a gradient scaler) or bfloat16.",
    "encoder_lr_scale": "Learning rate of the encoders relative to lr (fine-tuning pretrained encoders).",
    "monitor_mode": "min, max or auto (min when the monitored metric is a loss).",
    "monitor_window": "Early stopping and model selection judge each epoch by the mean of `monitor` over this many "
                      "epochs centred on it (odd; an even number is rounded up): auto is 5 under 200 validation "
                      "patients, 3 under 1000, else 1.",
    "ema_decay": "Exponential moving average of the weights (parameters and BatchNorm statistics), updated after "
                 "each optimiser step with decay min(ema_decay, (1 + n) / (10 + n)) at step n; the average is what "
                 "validation, early stopping, checkpoints' best weights and the saved model use. 0: off.",
    "swa_start": "Stochastic weight averaging: the weights at the end of every epoch from this one to the last are "
                 "averaged (BatchNorm statistics recomputed on the training data) and the average is the result, "
                 "instead of the best validation epoch; early stopping is off. An epoch number (0-based) or a "
                 "fraction of epochs (0.5: the second half). null: off.",
    "loss": "bce, weighted_bce (class-weighted) or focal.",
    "pos_weight": "Positive-class weight of the BCE: null, 'auto' (N_neg/N_pos from the training split), a number or one per task.",
    "focal_gamma": "Focal loss focusing parameter.",
    "focal_alpha": "Focal loss positive-class weight in [0, 1] (null: none).",
    "sampler": "shuffle, or balanced (each class of balance_task equally likely, drawn with replacement).",
    "balance_task": "Task whose classes the balanced sampler evens out (default: the first task).",
    "num_workers": "DataLoader worker processes (seeded per epoch and worker).",
    "deterministic": "Use torch's deterministic algorithms (warn when one has none).",
    "checkpoint_dir": "Folder of last.pt (default: <out_dir>/checkpoints).",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CohortSection(_Section):
    manifest: str = Field(description="Cohort manifest (CSV or Parquet), relative to the config file or absolute.")
    strict: bool = Field(False, description="Stop at the first unreadable file instead of reporting it.")
    audit: bool = Field(True, description="Audit the data after the splits are drawn (leakage suspects, post-index "
                        "data, duplicates across splits, type drift, disguised missing values; see medmm.audit).")
    strict_audit: bool = Field(False, description="Stop before training when the data audit finds anything.")


class SplitSection(_Section):
    mode: Literal["manifest", "assign"] = Field(
        "manifest", description="manifest: use the manifest's split column (patients without one are assigned); "
        "assign: ignore it and draw patient-level train/val/test splits.")
    fractions: tuple[float, float, float] = Field((0.6, 0.2, 0.2), description="train, val, test fractions (assign mode).")
    stratify: str | None = Field(None, description="Task whose label the splits are stratified by (default: the first task).")
    group_by: str | None = Field(None, description="Manifest column (e.g. site) whose groups never straddle two splits.")
    seed: int = Field(0, description="Seed of the split draw.")
    cv_folds: int = Field(0, description="k >= 2: nested k-fold cross-validation on train+val (each outer fold scored by "
                          "a model whose early stopping used an inner validation part of its training part; nested "
                          "MLflow runs, per-fold and pooled metrics, baselines on the same folds), then a final model "
                          "on train+val scored once on the untouched test hold-out.")
    cv_val_fraction: float = Field(0.2, gt=0, lt=1, description="Share of each outer fold's training part held out "
                                   "(by patient) for early stopping and epoch selection.")
    test_groups: list[str] | None = Field(None, description="External validation: the patients of these `group_by` "
                                          "values (e.g. [site_c]) are the test split; the other groups are split "
                                          "into train and val (by patient, `fractions` renormalised).")

    @field_validator("cv_folds")
    @classmethod
    def _folds(cls, v: int) -> int:
        if v == 1 or v < 0:
            raise ValueError("cv_folds is 0 (no cross-validation) or at least 2")
        return v

    @model_validator(mode="after")
    def _external(self) -> "SplitSection":
        if self.test_groups is not None:
            if not self.group_by:
                raise ValueError("test_groups needs group_by (the column whose values they are), e.g. group_by: site")
            if not self.test_groups:
                raise ValueError("test_groups is empty; name at least one group or drop it")
        return self

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(v) < 0 or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError("fractions must be non-negative and sum to 1")
        return v


class EvaluationSection(_Section):
    baselines: bool = Field(True, description="Fit LogisticRegression and HistGradientBoosting (and TF-IDF + LR when "
                            "the model reads notes) on the model's featurised inputs, on the same splits (and CV "
                            "folds), and report each beside the model with a paired bootstrap CI of the AUROC "
                            "difference.")
    baseline_models: list[Literal["logistic_regression", "hist_gradient_boosting", "tfidf_lr"]] | None = Field(
        None, description="Baselines to fit (default: all that apply).")
    n_boot: int = Field(2000, ge=100, description="Bootstrap resamples of the baseline comparison's CI.")




class PreprocessSection(_Section):
    """Per-modality preprocessor settings: the four default names, and any declared modality's
    name (``preprocess.ct: {spatial_size: [32, 32, 32]}``, ``preprocess.labs: {...}``), checked
    against its kind's preprocessor when the cohort's modalities are known."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": {
        "type": "object", "description": "Keyword arguments of a declared modality's preprocessor (by its kind: "
                                         "image, text, series or table)."}})

    image: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of ImagePreprocessor.")
    notes: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of TextPreprocessor.")
    vitals: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of VitalsPreprocessor.")
    ehr: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of TabularPreprocessor.")
    cache_dir: str | None = Field(None, description="On-disk cache of preprocessed images (default: <out_dir>/cache). "
                                  "Images are read in the DataLoader workers (train.num_workers) through it instead of "
                                  "being held in memory, and augmented there when preprocess.image.augment is set; "
                                  "`medmm preprocess` fills it ahead of training.")
    workers: int = Field(0, ge=0, description="Processes that fill the image cache before the first epoch (0: in "
                         "this process).")
    memory_mb: int = Field(64, ge=0, description="When the run's preprocessed images (train, val and test together, "
                           "float32) fit in this many MB, they are kept in memory once read instead of being "
                           "re-read from the cache at every epoch (1,200 images at 16^3 are 20 MB, 400 at 32^3 50 MB); "
                           "a cohort that does not fit streams as usual, so memory stays bounded. 0 always streams.")

    @model_validator(mode="after")
    def _declared_names(self) -> "PreprocessSection":
        from .records import check_modality_name

        for name, options in (self.model_extra or {}).items():
            try:
                check_modality_name(name)
            except Exception as exc:  # noqa: BLE001 - a MedmmError from the name check, as a validation error
                raise ValueError(f"preprocess.{name}: {getattr(exc, 'message', exc)}") from None
            if not isinstance(options, dict):
                raise ValueError(f"preprocess.{name} must be a mapping of preprocessor settings, got "
                                 f"{type(options).__name__}")
        return self

    def options(self, modality: str) -> dict[str, Any]:
        """The settings given for ``modality`` (a default or a declared name); ``{}`` if none."""
        value = getattr(self, modality, None) if modality in type(self).model_fields else \
            (self.model_extra or {}).get(modality)
        return dict(value or {})



class TransferSection(_Section):
    pretrain_epochs: int = Field(0, description="> 0: first train each encoder alone (a unimodal model on the patients "
                                 "who have that modality) for this many epochs, then fuse (MedFuse's two stages).")
    pretrain_modalities: list[str] | None = Field(None, description="Encoders to pretrain (default: every modality).")
    weights: dict[str, str] = Field(default_factory=dict, description="modality -> a medmm model folder or a .pt state "
                                    "dict whose encoder weights initialise that encoder.")
    mode: Literal["finetune", "frozen", "partial"] = Field(
        "finetune", description="What happens to pretrained encoders when fused: finetune (all trained), frozen "
        "(none trained) or partial (only the last `unfreeze_last` blocks trained).")
    unfreeze_last: int = Field(1, description="Blocks left trainable per encoder in partial mode.")


class TrackingSection(_Section):
    experiment: str = Field("medmm", description="MLflow experiment name.")
    run_name: str | None = Field(None, description="MLflow run name.")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory).")
    log_model: bool = Field(True, description="Log the trained model as an MLflow pyfunc model.")
    register_model: str | None = Field(None, description="Register the logged model under this name in the model registry.")
    plots: bool = Field(True, description="Log learning-curve and ROC plots.")
    flush_every: int = Field(5, description="Per-epoch metrics are sent to MLflow in one batch every this many epochs.")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra run tags.")


def _train_section() -> type[BaseModel]:
    from .train.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        fields[f.name] = (hints[f.name], Field(default, description=_TRAIN_DOCS.get(f.name)))
    return create_model("TrainSection", __config__=ConfigDict(extra="forbid"), **fields)


TrainSection = _train_section()


class ExperimentConfig(_Section):
    """One experiment: cohort, splits, preprocessing, model, tasks, training and tracking."""

    model_config = ConfigDict(extra="forbid", title="medmm experiment config", validate_assignment=True)

    cohort: CohortSection
    modalities: dict[str, Any] | None = Field(
        None, description="Modalities beyond the four defaults, as name: kind (image, text, series or table) or "
                          "name: {kind, description}; the manifest then has a <name>_path column. Merged with the "
                          "manifest's sidecar <manifest>.modalities.yaml (schema medmm/schemas/modalities.schema.json).")
    tasks: list[str] | None = Field(None, description="Tasks (label_<task> columns) to train; default: all of them.")
    split: SplitSection = Field(default_factory=SplitSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    preprocess: PreprocessSection = Field(default_factory=PreprocessSection)
    model: ModelSection = Field(default_factory=ModelSection, description="ModelConfig fields (modalities, encoders, "
                                "fusion, dim, modality_dropout, aux_weight, ...); tasks default to binary ones for "
                                "`tasks`. Names are checked against the registries when the config is loaded.")
    train: TrainSection = Field(default_factory=TrainSection)  # type: ignore[valid-type]
    transfer: TransferSection = Field(default_factory=TransferSection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    out_dir: str = Field("medmm_run", description="Folder of the model, predictions, metrics and checkpoints.")

    @field_validator("modalities")
    @classmethod
    def _declared(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        from .cohort import check_modality_declarations

        try:
            check_modality_declarations(dict(v))
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        except Exception as exc:  # a ManifestError: the same schema as the sidecar
            raise ValueError(str(getattr(exc, "message", exc))) from None
        return v

    # ------------------------------------------------------------------ builders
    def train_config(self) -> Any:
        from .train.config import TrainConfig

        d = self.train.model_dump()
        if not d.get("checkpoint_dir"):
            d["checkpoint_dir"] = str(Path(self.out_dir) / "checkpoints")
        return TrainConfig(**d)

    def model_config_for(self, tasks: tuple[str, ...], spec: Any = None, available: Any = None,
                         declared_tasks: Any = None) -> Any:
        """The :class:`~medmm.models.multimodal.ModelConfig` for ``tasks``. ``spec`` is the cohort's
        declared :class:`~medmm.records.ModalitySpec`; ``available`` the modalities its manifest has,
        the default of ``model.modalities``; ``declared_tasks`` the manifest's task types, used when
        ``model.tasks`` is not given. A modality that is not declared, or that the cohort
        does not have, is a :class:`ConfigError` saying what to do."""
        from .models.multimodal import ModelConfig

        section = self.model
        if not isinstance(section, ModelSection):
            try:
                section = ModelSection.model_validate(section)
            except ValidationError as exc:
                first = exc.errors()[0]
                loc = ".".join(str(p) for p in ("model", *first["loc"]))
                raise ConfigError(f"model section: {loc}: {first['msg']}", column=loc,
                                  hint=f"known model keys: {list(ModelSection.model_fields)}") from exc
        d = section.to_config_dict()
        d.setdefault("tasks", {t: dict(declared_tasks or {}).get(t, "binary") for t in tasks})  # the manifest's kinds
        if spec is not None:
            spec = _with_kinds(spec, d.get("modality_kinds"))
            chosen = d.get("modalities")
            if chosen is None:
                if available is not None and not len(available):
                    raise ConfigError("the manifest has no modality to train on: every <name>_path column is absent "
                                      "or empty", column="model.modalities",
                                      hint=f"fill the path columns of the declared modalities {list(spec)}")
                chosen = list(available if available is not None else spec)
            undeclared = [m for m in chosen if m not in spec]
            if undeclared:
                raise ConfigError(f"model.modalities names {undeclared}, which the cohort does not declare",
                                  column="model.modalities",
                                  hint=f"declared: {list(spec)}; declare a modality with its kind in the `modalities:` "
                                       "section (e.g. `modalities: {exam: image}`) or the manifest's sidecar "
                                       "<manifest>.modalities.yaml")
            if available is not None:
                absent = [m for m in chosen if m not in available]
                if absent:
                    have = list(available)
                    raise ConfigError(
                        f"model.modalities asks for {absent}, but the manifest has no file for "
                        f"{'it' if len(absent) == 1 else 'them'} (no non-empty {', '.join(a + '_path' for a in absent)} "
                        "column), so that encoder cannot be trained", column="model.modalities",
                        hint=f"the manifest has {have}: pass --modalities {','.join(have)} (model.modalities="
                             f"[{','.join(have)}]) or leave model.modalities out to train on what the manifest has")
            d["modalities"] = tuple(chosen)
            d["modality_kinds"] = {m: spec.kind(m) for m in chosen}
        if isinstance(d.get("modalities"), list):
            d["modalities"] = tuple(d["modalities"])
        try:
            return ModelConfig(**d)
        except TypeError as exc:
            import dataclasses as dc

            known = [f.name for f in dc.fields(ModelConfig)]
            raise ConfigError(f"model section: {exc}", column="model", hint=f"known model keys: {known}") from exc

    def resolved(self) -> dict[str, Any]:
        """Plain-data form (what is logged with the run)."""
        return json.loads(self.model_dump_json())

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.resolved(), sort_keys=False)


def _with_kinds(spec: Any, kinds: dict[str, str] | None) -> Any:
    from .records import ModalitySpec

    spec = ModalitySpec.coerce(spec)
    return spec.merged(kinds) if kinds else spec


def _parse_value(text: str) -> Any:
    import yaml

    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(v, str):
        try:
            return float(v) if any(c in v for c in ".eE") and v.lower() not in ("nan", "inf") else v
        except ValueError:
            return v
    return v


def parse_overrides(items: list[str] | tuple[str, ...]) -> list[tuple[str, Any]]:
    """``["train.lr=0.001", ...]`` -> ``[("train.lr", 0.001), ...]``."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value", hint="e.g. train.lr=0.001 or model.fusion.name=concat")
        out.append((key.strip(), _parse_value(value)))
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``data`` with dotted ``key=value`` overrides applied."""
    import copy

    data = copy.deepcopy(data)
    for key, value in parse_overrides(overrides):
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return data


def _validate(data: dict[str, Any], source: str | Path | None) -> ExperimentConfig:
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{exc.error_count()} problem(s) in the experiment config; first: {loc}: {first['msg']}",
            path=source, column=loc or None,
            hint="see medmm/schemas/experiment.schema.json or `medmm train --help`") from exc
    try:
        cfg.train_config()  # the trainer's own checks (allowed optimiser, scheduler, loss names)
    except ConfigError as exc:
        raise ConfigError(exc.message, path=source, column=f"train.{exc.column}" if exc.column else "train",
                          hint=exc.hint) from exc
    for m in ("image", "notes", "vitals", "ehr"):
        try:
            check_preprocess_options(m, cfg.preprocess.options(m))
        except ValueError as exc:
            raise ConfigError(str(exc), path=source, column=f"preprocess.{m}",
                              hint="see medmm/schemas/experiment.schema.json") from exc
    return cfg


def load_config(source: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML (or JSON) experiment config, apply ``key=value`` overrides, validate it.

    A relative ``cohort.manifest`` is taken relative to the config file's folder.
    """
    import yaml

    path = None
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        if not path.exists():
            raise ConfigError("config file not found", path=path, hint="give the path of an experiment YAML file")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML: {exc}", path=path) from exc
        if not isinstance(data, dict):
            raise ConfigError("the config must be a mapping of sections", path=path, hint="start with `cohort:`")
    data = apply_overrides(data, overrides)
    cfg = _validate(data, path)
    if path is not None and not Path(cfg.cohort.manifest).is_absolute():
        candidate = path.parent / cfg.cohort.manifest
        if candidate.exists() or not Path(cfg.cohort.manifest).exists():
            cfg.cohort.manifest = str(candidate)
    _check_model_modalities(cfg, path)
    _check_declared_preprocess(cfg, path)
    return cfg


def _declared_modalities(cfg: ExperimentConfig) -> Any:
    """The config's :class:`~medmm.records.ModalitySpec` (defaults, the manifest's sidecar, the
    ``modalities:`` section); ``None`` when the sidecar is bad (reported when the cohort is read)."""
    from .cohort import modality_spec

    try:
        return modality_spec(cfg.cohort.manifest, cfg.modalities)
    except Exception:  # noqa: BLE001 - a bad sidecar is reported when the cohort is read
        return None


def _undeclared(m: str, spec: Any, column: str, source: Any) -> ConfigError:
    from .catalog import suggest

    return ConfigError(f"{column} names {m!r}{suggest(m, list(spec))}, which is not a declared modality",
                       path=source, column=column,
                       hint=f"declared: {list(spec)}; declare it with its kind in the `modalities:` section "
                            "or the manifest's sidecar <manifest>.modalities.yaml")


def _check_declared_preprocess(cfg: ExperimentConfig, source: Any) -> None:
    """``preprocess.<name>`` for a modality beyond the four defaults: a declared modality, with
    its kind's preprocessor settings."""
    extra = cfg.preprocess.model_extra or {}
    spec = _declared_modalities(cfg) if extra else None
    if spec is None:
        return
    for m, options in extra.items():
        if m not in spec:
            raise _undeclared(m, spec, f"preprocess.{m}", source)
        try:
            check_preprocess_options(KIND_STEP[spec.kind(m)], options)
        except ValueError as exc:
            raise ConfigError(f"preprocess.{m} ({spec.kind(m)} modality): {exc}", path=source,
                              column=f"preprocess.{m}", hint="see medmm/schemas/experiment.schema.json") from exc


def _check_model_modalities(cfg: ExperimentConfig, source: Any) -> None:
    """``model.modalities`` names declared modalities, with "did you mean" for a misspelt one."""
    chosen = cfg.model.modalities if isinstance(cfg.model, ModelSection) else None
    spec = _declared_modalities(cfg) if chosen else None
    if spec is None:
        return
    for m in chosen or ():
        if m not in spec:
            raise _undeclared(m, spec, "model.modalities", source)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of an experiment config file."""
    schema = ExperimentConfig.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://medmm.dev/schemas/experiment.schema.json", **schema}


if __name__ == "__main__":  # python -m medmm.config > medmm/schemas/experiment.schema.json
    print(json.dumps(json_schema(), indent=2))

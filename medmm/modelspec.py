"""The model section of an experiment config, checked without torch.

:class:`ModelSection` is the typed ``model:`` section (encoder, fusion and head names checked
against :mod:`medmm.catalog` with "did you mean", each encoder against its modality's kind, its
preprocessing options against the preprocessor's settings). It sits on the models floor but
outside :mod:`medmm.models`, whose package imports torch: a config is checked before torch is.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import ConfigError

__all__ = ["ModelSection", "EncoderSpec", "FusionSpec", "KIND_STEP", "INPUT_STEPS", "LOSSES",
           "preprocessor_class", "check_preprocess_options"]

#: the training losses (:class:`medmm.models.losses.MaskedLoss`), named by ``train.loss``
LOSSES = ("bce", "weighted_bce", "focal")

#: a modality kind -> the preprocessing step (and default modality name) that reads it
KIND_STEP = {"image": "image", "text": "notes", "series": "vitals", "table": "ehr"}

#: an encoder input other than its modality's default -> its preprocessor class
INPUT_STEPS = {"tokens": "medmm.preprocess.tokens:TokenPreprocessor",
               "embedding": "medmm.preprocess.tokens:SentenceEmbeddingPreprocessor"}


def preprocessor_class(key: str) -> type:
    """The preprocessor class of a step (``image``, ``notes``, ``vitals``, ``ehr``: the default step
    of its kind, :data:`medmm.preprocess.DEFAULT_STEPS`) or of an encoder input (``tokens``,
    ``embedding``)."""
    import importlib

    from .preprocess import DEFAULT_STEPS

    paths = {**{KIND_STEP[kind]: path for kind, path in DEFAULT_STEPS.items()}, **INPUT_STEPS}
    module, _, name = paths[key].partition(":")
    return getattr(importlib.import_module(module), name)


def check_preprocess_options(key: str, options: dict[str, Any]) -> None:
    """Unknown settings of the preprocessor ``key`` (a modality or an input kind) and, for images,
    unknown window presets and size modes, as a ValueError with "did you mean"."""
    import inspect

    from .catalog import suggest

    cls = preprocessor_class(key)
    name = cls.__name__
    allowed = [p for p in inspect.signature(cls).parameters if p != "encoder"]
    for k in options:
        if k not in allowed:
            raise ValueError(f"{name} has no setting {k!r}{suggest(k, allowed)}; settings: {allowed}")
    if key == "image":
        from .preprocess.image import SIZE_MODES, WINDOWS

        w = options.get("window")
        choices = [*WINDOWS, "zscore", "zscore_nonzero"]
        if isinstance(w, str) and w not in choices:
            raise ValueError(f"unknown window {w!r}{suggest(w, choices)}; use one of {choices} or [low, high]")
        mode = options.get("size_mode")
        if mode is not None and mode not in SIZE_MODES:
            raise ValueError(f"unknown size_mode {mode!r}{suggest(mode, list(SIZE_MODES))}; use one of {SIZE_MODES}")


class EncoderSpec(BaseModel):
    """One modality's encoder: a registered name, its options, and its preprocessor's options."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="A registered encoder (medmm.models.ENCODERS).")
    preprocess: dict[str, Any] = Field(default_factory=dict,
                                       description="Options of the preprocessor this encoder's input needs.")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from .catalog import check_name

        return check_name("encoder", v)


class FusionSpec(BaseModel):
    """The fusion module: a registered name and its options."""

    model_config = ConfigDict(extra="allow")

    name: str = Field("attention", description="A registered fusion module (medmm.models.FUSIONS).")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from .catalog import check_name

        return check_name("fusion", v)


class ModelSection(BaseModel):
    """The model: mirrors :class:`medmm.models.multimodal.ModelConfig` (same fields and defaults);
    only the fields given here are passed on."""

    model_config = ConfigDict(extra="forbid")

    tasks: dict[str, str | dict[str, Any]] | None = Field(
        None, description="task -> head kind (binary, multiclass, multilabel, regression, survival) or {kind, "
                          "options} (classes; unit; time, event, horizon, horizons, method: cox|discrete; see "
                          "medmm.tasks); default: a binary head for each of `tasks`.")
    modalities: list[str] | None = Field(
        None, description="Modalities the model reads (default: those the manifest has, a <name>_path column with at "
                          "least one file). Names other than image, notes, vitals and ehr are declared with their kind "
                          "in the top-level `modalities` section or the manifest's sidecar.")
    encoders: dict[str, EncoderSpec] = Field(default_factory=dict, description="modality -> encoder (default per "
                                             "kind: image tiny_cnn3d, text tfidf_mlp, series gru, table mlp).")
    fusion: FusionSpec = Field(default_factory=FusionSpec, description="Fusion module.")
    dim: int = Field(64, ge=1, description="Width of every encoder's output and of the fusion.")
    modality_dropout: float | dict[str, float] | None = Field(None, description="ModDrop chance (one, or per modality); "
                                                              "default 0.25, 0 with a single modality.")
    aux_weight: float = Field(0.5, ge=0, description="Weight of the auxiliary unimodal heads' loss.")
    unimodal_residual: bool = Field(True, description="Add the present modalities' unimodal logits to the fused ones.")
    modality_dropout_schedule: dict[str, Any] | None = Field(None, description="{kind: constant} or {kind: linear, "
                                                             "warmup_steps: N}.")
    loss_weighting: Literal["fixed", "uncertainty"] = Field("fixed", description="Multi-task loss weighting.")
    task_weights: dict[str, float] | None = Field(None, description="Fixed per-task loss weights (default 1 each).")
    modality_kinds: dict[str, Literal["image", "text", "series", "table"]] | None = Field(
        None, description="Kinds of the model's modalities (filled from the declarations; needed only for a model "
                          "built outside an experiment).")
    wide: bool = Field(True, description="Wide-and-deep: a linear path (logistic regression) on the feature vector of "
                       "every table and text modality, added to the fused logits.")
    wide_l2: Annotated[float, Field(ge=0)] | Literal["auto"] | None = Field(
        None, description="L2 penalty of the wide path's weights (wide_l2 * ||W||^2); default 1e-3 on a table's row, "
                          "2e-4 on the TF-IDF vocabulary; 'auto': chosen per path and binary task on the validation "
                          "split before training.")
    wide_lr_scale: float | None = Field(None, gt=0, description="Step-size multiplier of the zero-initialised wide path "
                                        "(its weights are stored divided by it, so Adam moves them this much faster); "
                                        "default 1 on a table's row, 30 on the TF-IDF vocabulary.")
    wide_select: bool = Field(True, description="Single-modality models of binary or Cox survival tasks: after "
                              "training, refit the wide path alone as a logistic regression (a ridge Cox model for a "
                              "Cox task; L2 chosen on the validation split) and keep it instead of wide-and-deep unless "
                              "wide-and-deep's validation loss is lower by more than one standard error.")
    residual_select: bool = Field(False, description="Several modalities: after training, each binary task keeps a "
                                  "modality's unimodal residual only where dropping it worsens the validation log loss "
                                  "by more than one standard error (backward elimination).")
    late_fusion: bool = Field(False, description="Several modalities: after training, each binary task's output may "
                              "become a logistic regression on the fused logit, the unimodal logits and the presence "
                              "pattern, fitted on the validation split and kept where its cross-validated log loss "
                              "there is lower by more than one standard error.")

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, v: list[str] | None) -> list[str] | None:
        from .records import check_modality_name

        if v is None:
            return v
        if not v:
            raise ValueError("no modality given; list the modalities to train on, or leave model.modalities out to "
                             "use those the manifest has")
        for m in v:
            try:
                check_modality_name(m)
            except ConfigError as exc:
                raise ValueError(exc.message + (f" ({exc.hint})" if exc.hint else "")) from None
        return v

    @field_validator("tasks")
    @classmethod
    def _heads(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        from .catalog import check_name
        from .errors import MedmmError
        from .tasks import TaskSpec

        for name, spec in (v or {}).items():
            check_name("head", spec if isinstance(spec, str) else spec.get("kind", "binary"))
            try:  # the task's declared options (classes, unit, horizon, ...)
                TaskSpec.from_config(name, spec)
            except MedmmError as exc:
                raise ValueError(f"{exc.message}{'; ' + exc.hint if exc.hint else ''}") from None
        return v

    @model_validator(mode="after")
    def _encoders(self) -> "ModelSection":
        from .catalog import meta, suggest

        from .records import DEFAULT_KINDS

        declared = {**DEFAULT_KINDS, **(self.modality_kinds or {})}
        for m, enc in self.encoders.items():
            if m not in declared and (self.modalities is None or m not in self.modalities):
                raise ValueError(f"encoders names {m!r}{suggest(m, list(declared))}, which is not a modality "
                                 f"({list(declared)}); declare it in the `modalities` section")
            kind = meta("encoder", enc.name)
            mkind = declared.get(m)
            if mkind and kind.get("kind") and kind["kind"] != mkind:
                raise ValueError(f"encoder {enc.name!r} reads {kind['kind']} modalities ({kind.get('modality')}), "
                                 f"not {m} ({mkind})")
            step = KIND_STEP.get(mkind or "") or KIND_STEP.get(kind.get("kind") or "", "ehr")
            needs = kind.get("input")
            key = str(needs) if needs in INPUT_STEPS else step
            try:
                check_preprocess_options(key, enc.preprocess)
            except ValueError as exc:
                raise ValueError(f"encoders.{m}.preprocess: {exc}") from None
        return self

    # dict-style reading, as when the section was a plain dict
    def get(self, key: str, default: Any = None) -> Any:
        return self.to_config_dict().get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.to_config_dict()[key]

    def to_config_dict(self) -> dict[str, Any]:
        """The fields given (defaults left to ModelConfig), as plain data. A top-level ``None`` or
        empty mapping is "the default" too: a config written out as YAML (``--print-config``, a
        logged config) and read back sets every field, ``tasks: null`` and ``encoders: {}`` among them."""
        d = self.model_dump(exclude_unset=True, mode="json")
        return {k: v for k, v in d.items() if v is not None and v != {}}


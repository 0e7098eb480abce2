"""The multimodal model: encoders -> fusion -> one head per task, saved with its preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..metrics import auroc_with_se
from ..records import MODALITIES, ModalitySpec, PatientRecord
from .encoders import ENCODERS, create_encoder
from .encoders.base import Encoder
from .fusion import FUSIONS, create_fusion
from .heads import Head, create_head
from .losses import LossWeighting
from .registry import BUNDLED_MODELS
from .wide import DenseWide, SparseWide

__all__ = ["ModelConfig", "MultimodalModel", "DEFAULT_ENCODERS", "DEFAULT_ENCODER_BY_KIND", "WIDE_KINDS",
           "build_preprocessor", "WIDE_DEFAULTS"]

#: the encoder of each modality kind when the config names none
DEFAULT_ENCODER_BY_KIND: dict[str, dict[str, Any]] = {
    "image": {"name": "tiny_cnn3d"},
    "text": {"name": "tfidf_mlp"},
    "series": {"name": "gru"},
    "table": {"name": "mlp"},
}

DEFAULT_ENCODERS: dict[str, dict[str, Any]] = {
    "image": {"name": "tiny_cnn3d"},
    "notes": {"name": "tfidf_mlp"},
    "vitals": {"name": "gru"},
    "ehr": {"name": "mlp"},
}

#: kinds whose featurised vector gets the wide (linear) path
WIDE_KINDS = ("table", "text")
#: inverse L2 strengths tried for the late-fusion stack (a few logits and presence flags: a strong
#: penalty to none to speak of)
LATE_CS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
#: patients per batch of the passes over a validation split: the training batch's default, so that
#: with images these passes are not the peak of a training run (a batch of 256 32^3 volumes holds
#: ~730 MB more activations than one of 32, at the same speed per patient on CPU)
EVAL_BATCH = 32

#: the wide path's L2 penalty and step multiplier when the config gives none: a TF-IDF row has
#: unit L2 norm spread over tens of n-grams (entries ~0.1), so a logistic regression on it needs
#: weights of several units, which the zero-initialised layer reaches in a few hundred Adam steps
#: only with a larger step, and the same penalty would shrink it far more than a standardised
#: table's. Measured on bench_real_tabular_models' notes task (fold 0, test AUROC; TF-IDF + LR
#: 0.972): scale 1 / l2 1e-3 0.884, scale 10 0.946, scale 30 0.957, scale 30 / l2 2e-4 0.968.
WIDE_DEFAULTS = {"dense": {"l2": 1e-3, "lr_scale": 1.0}, "sparse": {"l2": 2e-4, "lr_scale": 30.0}}

SCHEDULES = ("constant", "linear")


@dataclass
class ModelConfig:
    """What to build: encoders per modality, a fusion module and one head per task.

    ``tasks`` maps a task to a head kind (``"binary"``) or to ``{"kind": ..., **head options}``,
    e.g. ``{"grade": {"kind": "multiclass", "n_classes": 3}}`` (see :mod:`medmm.models.heads`).
    ``encoders[m]`` is ``{"name": ..., **encoder options}``; ``pretrained`` (a local file),
    ``freeze_stages`` and ``preprocess`` (options of the preprocessor it needs, see
    :func:`build_preprocessor`) are understood too.

    Missing-modality learning. The defaults (ModDrop 0.25, auxiliary heads at 0.5, the unimodal
    residual path) are the settings to start from whatever share of a modality is missing, 0 to
    80 %: ModDrop at 0.25 is mild where little is missing and adds to real missingness where much
    is, and the auxiliary heads keep every encoder trained on the rows it has.
    ``benchmarks/bench_missing.py`` measures them against dedicated per-subset models and the
    oracle (``--sweep 0,0.4,0.8`` over missing rates). Measured there with the demo's two-stage
    recipe: within 0.035 AUROC of the oracle up to 40 % missing; at 80 % the image-driven tumour
    task falls well short (0.56 against 0.72: each encoder then sees a fifth of the patients).

    ``modality_dropout``
        The chance, during training only, that a present modality is hidden from the fusion for
        one sample (ModDrop), which teaches the model to predict from any subset of modalities.
        A number, or ``{modality: chance}``; default 0.25, and 0 for a single-modality model.
    ``modality_dropout_schedule``
        ``None``/``{"kind": "constant"}``, or ``{"kind": "linear", "warmup_steps": N}``: the chance
        rises from 0 over the first N training steps (ModDrop's curriculum), so the encoders
        first learn from full inputs.
    ``aux_weight``
        Weight of the auxiliary unimodal heads' loss (each modality's own head, trained on the
        rows where it is present), which keeps every encoder useful on its own.
    ``unimodal_residual``
        Add the present modalities' unimodal logits to the fused logits: a late-fusion path on
        which evidence from conditionally independent modalities adds up in logit space.

    Learned missing tokens live in the fusion modules (``concat``'s and ``gated``'s missing
    embeddings, the never-masked CLS/null tokens of ``attention`` and ``cross_attention``).

    Multi-task: ``loss_weighting`` is ``"fixed"`` (``task_weights``, default 1 each) or
    ``"uncertainty"`` (learned, Kendall et al. 2018); see :mod:`medmm.models.losses`.

    Modalities. ``modalities`` are names; ``modality_kinds`` gives the kind of each name that is
    not one of the four defaults (a :class:`~medmm.records.ModalitySpec` may be passed as
    ``modalities`` instead). Encoders not named in ``encoders`` are their kind's default
    (:data:`DEFAULT_ENCODER_BY_KIND`).

    ``wide``
        The wide part of wide-and-deep (Cheng et al. 2016): each ``table`` and ``text`` modality
        whose encoder reads a feature vector also gets a linear layer on that vector (the
        featurised row, the TF-IDF vector), L2-regularised by ``wide_l2`` (added to the loss as
        ``wide_l2 * ||W||^2``; ``wide_lr_scale`` multiplies its step, see :mod:`medmm.models.wide`;
        both default by input, :data:`WIDE_DEFAULTS`; ``wide_l2="auto"`` chooses it per path and
        binary task on the data before training, :meth:`MultimodalModel.tune_wide_l2`), whose logits join the fused logits on the rows
        where the modality is present (like the unimodal residual heads, and inside them for the auxiliary loss).
        On small data the model then contains a logistic regression on each such modality and
        is not worse than it.
    ``wide_select``
        For a single-modality model with a wide path and binary or Cox survival tasks: after
        training, the wide path alone is refitted as a logistic regression (a ridge Cox model for
        a Cox task) solved to convergence (its L2 strength chosen among
        :data:`medmm.models.wide.WIDE_CS` on the validation split) and kept instead of
        wide-and-deep unless wide-and-deep's validation loss is lower by more than one
        standard error (the deep part is then switched
        off: :meth:`MultimodalModel.select_wide_or_deep`, called by the trainer). Where the deep
        part cannot help (a small table, a few hundred notes), the model is the logistic
        regression; where it can, it stays. Measured in ``benchmarks/bench_real_tabular_models.py``.
    ``residual_select``
        For a model of several modalities with the unimodal residual path: after training, each
        binary task's fused logit keeps a modality's unimodal residual only where the validation
        split says it helps (backward elimination, one-standard-error rule,
        :meth:`MultimodalModel.select_unimodal_paths`, called by the trainer). Off by default.
    ``late_fusion``
        For a model of several modalities with the unimodal residual path: after training, each
        binary task's output may be replaced by a logistic regression on the fused logit, the
        unimodal logits and the presence pattern, fitted on the validation split and kept only
        where its cross-validated log loss there is better by one standard error
        (:meth:`MultimodalModel.fit_late_fusion`, called by the trainer). Off by default.
    """

    tasks: dict[str, Any] = field(default_factory=lambda: {"tumor": "binary", "disease": "binary"})
    modalities: tuple[str, ...] = MODALITIES
    encoders: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_ENCODERS.items()})
    fusion: dict[str, Any] = field(default_factory=lambda: {"name": "attention"})
    dim: int = 64
    modality_dropout: Any = None  # None: 0.25 with several modalities, 0 with one (hiding the only input teaches nothing)
    aux_weight: float = 0.5  # weight of the auxiliary unimodal heads' loss
    unimodal_residual: bool = True  # add the present modalities' unimodal logits to the fused logits
    modality_dropout_schedule: dict[str, Any] | None = None
    loss_weighting: str = "fixed"
    task_weights: dict[str, float] | None = None
    modality_kinds: dict[str, str] | None = None
    wide: bool = True
    wide_l2: float | str | None = None  # None: 1e-3 on a table's row, 2e-4 on the TF-IDF vocabulary; "auto": chosen on the data
    wide_lr_scale: float | None = None  # None: 1 on a table's row, 30 on the TF-IDF vocabulary
    wide_select: bool = True  # keep the wide path alone unless wide-and-deep validates better by 1 SE (single modality, binary or Cox tasks)
    residual_select: bool = False  # after training, drop unimodal residuals that carry nothing on a task (validation, 1-SE rule)
    late_fusion: bool = False  # after training, a stacked late fusion fitted on validation (kept where it validates better by 1 SE)

    def __post_init__(self) -> None:
        if not self.modalities:
            raise ConfigError("no modality given", hint=f"use a non-empty subset of {MODALITIES} or declared ones")
        self.modalities = ModalitySpec.coerce(self.modalities, kinds=self.modality_kinds)
        self.modality_kinds = self.modalities.kinds
        # an empty `preprocess` is no preprocess (a logged config read back gains one): one config, one fingerprint
        self.encoders = {k: {o: x for o, x in dict(v).items() if o != "preprocess" or x}
                         for k, v in (self.encoders or {}).items()}
        for m in self.modalities:
            kind = self.modalities.kind(m)
            spec = self.encoders.setdefault(m, dict(DEFAULT_ENCODER_BY_KIND[kind]))
            name = str(spec.get("name"))
            if name not in ENCODERS:
                raise ConfigError(f"unknown encoder {name!r} for {m}", column=f"encoders.{m}",
                                  hint=f"choose one of {list(ENCODERS)}")
            want = ENCODERS.meta[name].get("kind")
            if want and want != kind:
                raise ConfigError(f"encoder {name!r} reads {want} modalities, but {m!r} is a {kind} modality",
                                  column=f"encoders.{m}",
                                  hint=f"use one of {ENCODERS.names(kind=kind)} for {m}")
        if isinstance(self.wide_l2, str):
            if self.wide_l2 != "auto":
                raise ConfigError(f"wide_l2={self.wide_l2!r} is neither a number nor 'auto'", column="wide_l2",
                                  hint="e.g. wide_l2: 1e-4, or wide_l2: auto (chosen per path and task on the data)")
        elif self.wide_l2 is not None and float(self.wide_l2) < 0:
            raise ConfigError(f"wide_l2 {self.wide_l2} is negative", column="wide_l2")
        if self.wide_lr_scale is not None and float(self.wide_lr_scale) <= 0:
            raise ConfigError(f"wide_lr_scale {self.wide_lr_scale} is not positive", column="wide_lr_scale")
        if not self.tasks:
            raise ConfigError("no task given", hint="set tasks, e.g. {'tumor': 'binary'}")
        if self.modality_dropout is None:
            self.modality_dropout = 0.25 if len(self.modalities) > 1 else 0.0
        rates = self.modality_dropout if isinstance(self.modality_dropout, dict) else {"": self.modality_dropout}
        for m, p in rates.items():
            if m and m not in self.modalities:
                raise ConfigError(f"modality_dropout names {m!r}, which is not among the modalities")
            if not 0.0 <= float(p) < 1.0:
                raise ConfigError(f"modality_dropout {p} is outside [0, 1)")
        kind = (self.modality_dropout_schedule or {}).get("kind", "constant")
        if kind not in SCHEDULES:
            raise ConfigError(f"modality_dropout_schedule kind {kind!r} is not supported", hint=f"use one of {SCHEDULES}")

    def task_spec(self, task: str) -> tuple[str, dict[str, Any]]:
        """``(head kind, head options)`` of a task."""
        spec = self.tasks[task]
        if isinstance(spec, str):
            return spec, {}
        spec = dict(spec)
        return spec.pop("kind", "binary"), spec

    @property
    def modality_spec(self) -> ModalitySpec:
        """``modalities`` as the :class:`~medmm.records.ModalitySpec` ``__post_init__`` made of it."""
        return cast(ModalitySpec, self.modalities)

    def encoder_spec(self, modality: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """``(encoder name, encoder options, preprocessor options)`` of a modality."""
        spec = dict(self.encoders.get(modality) or DEFAULT_ENCODER_BY_KIND[self.modality_spec.kind(modality)])
        pre = dict(spec.pop("preprocess", None) or {})
        return spec.pop("name"), spec, pre

    def to_dict(self) -> dict[str, Any]:
        import copy
        from dataclasses import fields

        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "modalities"}
        d["modalities"] = list(self.modalities)
        d["modality_kinds"] = self.modality_spec.kinds
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return cls(**d)


def _accepted(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The preprocessor's encoder settings that encoder ``name`` takes (a user's encoder may take none)."""
    import inspect

    try:
        params = inspect.signature(ENCODERS._items[name]).parameters
    except (KeyError, TypeError, ValueError):
        return dict(kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}


def _encoder_meta(name: str) -> dict[str, Any]:
    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}", hint=f"choose one of {list(ENCODERS)}")
    return ENCODERS.meta[name]


def _has_survival_task(config: ModelConfig) -> bool:
    # a bare list of task names (binary) has no survival task
    return isinstance(config.tasks, dict) and any(config.task_spec(t)[0] == "survival" for t in config.tasks)


def build_preprocessor(config: ModelConfig, *, preprocess: Any = None, **steps: Any):
    """The :class:`~medmm.preprocess.MultimodalPreprocessor` that ``config``'s encoders need.

    Each modality gets the step of its kind (:data:`medmm.modelspec.KIND_STEP`), or the one its
    encoder's input needs (``text_transformer`` a :class:`~medmm.preprocess.tokens.TokenPreprocessor`,
    ``sentence_mlp`` a :class:`~medmm.preprocess.tokens.SentenceEmbeddingPreprocessor`).
    ``preprocess`` (an experiment config's ``preprocess`` section, or a dict ``{step: options}``)
    sets the options of the default-named modality of each step (``preprocess.image`` for
    ``image``); an encoder's own ``preprocess`` options override them; ``steps`` (``image=...``)
    replace whole steps.
    """
    from ..modelspec import KIND_STEP, preprocessor_class
    from ..preprocess import MultimodalPreprocessor

    built: dict[str, Any] = {}
    for m in config.modalities:
        name, _, pre = config.encoder_spec(m)
        kind = config.modality_spec.kind(m)
        step = KIND_STEP[kind]
        needs = _encoder_meta(name).get("input")
        key = needs if needs in ("tokens", "embedding") else step
        # a default name's section applies when it keeps its default kind; a declared name's by its own name
        section = _section_options(preprocess, m) if m == step or m not in KIND_STEP.values() else {}
        if section and key != step:
            raise ConfigError(f"preprocess.{m} sets {preprocessor_class(step).__name__} options, but encoder "
                              f"{name!r} reads {key}", column=f"preprocess.{m}",
                              hint=f"put them under model.encoders.{m}.preprocess")
        kw = {**section, **pre}
        if key == "notes":  # the full-vocabulary sparse part only feeds a wide path
            kw.setdefault("wide_vocabulary", bool(config.wide) and needs == "vector")
        if key == "ehr" and "numeric_raw" not in kw and _has_survival_task(config):
            kw["numeric_raw"] = True  # Cox models are log-linear in the raw columns (TabularPreprocessor)
        if key == step and not kw:
            continue  # MultimodalPreprocessor's default step
        if "spatial_size" in kw:
            kw["spatial_size"] = tuple(kw["spatial_size"])
        try:
            built[m] = preprocessor_class(key)(**kw)
        except TypeError as exc:
            raise ConfigError(f"preprocess.{m}: {exc}", column=f"preprocess.{m}") from exc
    built.update(steps)
    return MultimodalPreprocessor(modalities=config.modalities, **built)


def _section_options(preprocess: Any, step: str) -> dict[str, Any]:
    if preprocess is None:
        return {}
    if hasattr(preprocess, "options"):  # the experiment config's section: default and declared names
        return preprocess.options(step)
    options = preprocess.get(step) if isinstance(preprocess, dict) else getattr(preprocess, step, None)
    return dict(options or {})


def _sync_deep_switch(module: "MultimodalModel", incompatible_keys: Any) -> None:
    module.deep_enabled = bool(module.deep_on)
    module.late_enabled = bool(module.late_on.any())


def _default_step(module, state_dict, prefix, *args) -> None:
    """Weights saved before the ModDrop schedule (or the wide-only switch) existed load with the
    step count at 0 (and the deep part on)."""
    state_dict.setdefault(prefix + "moddrop_step", torch.zeros((), dtype=torch.long))
    state_dict.setdefault(prefix + "deep_on", torch.ones((), dtype=torch.bool))
    state_dict.setdefault(prefix + "wide_prior", torch.zeros(module.n_outputs))
    state_dict.setdefault(prefix + "uni_gate", torch.ones(len(module.modalities), module.n_outputs))
    state_dict.setdefault(prefix + "late_on", torch.zeros(module.n_outputs, dtype=torch.bool))
    state_dict.setdefault(prefix + "late_coef", torch.zeros(module.n_outputs, 1 + 2 * len(module.modalities)))
    state_dict.setdefault(prefix + "late_bias", torch.zeros(module.n_outputs))


class MultimodalModel(nn.Module):
    """Encoders (one per modality) -> fusion over the presence mask -> heads (one per task).

    ``forward(values, present)`` takes ``{modality: tensor [B, ...]}`` and ``bool[B, M]`` and
    returns logits ``[B, n_outputs]``: each task's outputs in :attr:`tasks` order (one column
    per binary or regression task, so ``[B, T]`` for such tasks); :meth:`predict_proba` applies
    each head's output function. A batch's label columns are :attr:`label_columns_flat`. With a
    fitted ``preprocessor`` attached, :meth:`predict_records` scores raw :class:`PatientRecord`
    objects.
    """

    # buffers (registered in __init__), typed for the checker
    moddrop_rates: torch.Tensor
    moddrop_step: torch.Tensor
    deep_on: torch.Tensor
    wide_prior: torch.Tensor
    uni_gate: torch.Tensor
    late_on: torch.Tensor
    late_coef: torch.Tensor
    late_bias: torch.Tensor

    def __init__(self, config: ModelConfig, input_shapes: dict[str, tuple[int, ...]], preprocessor: Any = None) -> None:
        super().__init__()
        self.config = config
        missing = [m for m in config.modalities if m not in input_shapes]
        if missing:
            raise ConfigError(f"no input shape for {missing}", hint="fit the preprocessor with these modalities")
        self.input_shapes = {m: tuple(int(s) for s in input_shapes[m]) for m in config.modalities}
        empty = [m for m, shp in self.input_shapes.items() if any(s <= 0 for s in shp)]
        if empty:
            raise ConfigError(
                f"the {', '.join(empty)} preprocessing gives no features (input shape "
                f"{[self.input_shapes[m] for m in empty]}): no training patient has {' or '.join(empty)} data",
                column="model.modalities",
                hint=f"train on the modalities the cohort has: drop {empty} from model.modalities (--modalities)")
        self.preprocessor = preprocessor
        self.modalities = ModalitySpec.coerce(config.modalities)
        self.tasks = tuple(config.tasks)
        fspec = dict(config.fusion)
        fname = fspec.pop("name")
        if fname not in FUSIONS:
            raise ConfigError(f"unknown fusion {fname!r}", hint=f"choose one of {list(FUSIONS)}")
        fmeta = FUSIONS.meta[fname]
        self.uses_tokens = bool(fmeta.get("tokens"))
        self.late = fmeta.get("output") == "logits"
        self.encoders = nn.ModuleDict()
        for m in self.modalities:
            name, kw, _ = config.encoder_spec(m)
            meta = _encoder_meta(name)
            step = getattr(preprocessor, "steps", {}).get(m) if preprocessor is not None else None
            kind = getattr(step, "output_kind", None)
            special = ("tokens", "embedding")
            if step is not None and (meta.get("input") in special or kind in special) and kind != meta.get("input"):
                raise ConfigError(
                    f"encoder {name!r} needs {meta.get('input')} input but the {m} preprocessor gives "
                    f"{kind or type(step).__name__}", hint="build the preprocessor with build_preprocessor(config)")
            if step is not None and hasattr(step, "encoder_kwargs"):
                kw = {**_accepted(name, step.encoder_kwargs()), **kw}
            if self.uses_tokens and meta.get("tokens"):
                kw.setdefault("with_tokens", True)
            self.encoders[m] = create_encoder(name, in_shape=self.input_shapes[m], out_dim=config.dim, **kw)
        self.heads = nn.ModuleDict()
        self.output_slices: dict[str, slice] = {}
        self.label_columns: dict[str, list[str]] = {}
        start = 0
        for t in self.tasks:
            kind, kw = config.task_spec(t)
            head = create_head(kind, dim=config.dim, project=not self.late, **kw)
            self.heads[t] = head
            self.output_slices[t] = slice(start, start + head.n_outputs)
            self.label_columns[t] = head.label_columns(t)
            start += head.n_outputs
        self.n_outputs = start
        if self.late:
            fspec.setdefault("n_outputs", self.n_outputs)
        self.fusion = create_fusion(fname, modalities=self.modalities, dim=config.dim, **fspec)
        if config.aux_weight > 0 or config.unimodal_residual:
            self.aux_heads = nn.ModuleDict({m: nn.Linear(config.dim, self.n_outputs) for m in self.modalities})
        self.wide = nn.ModuleDict()
        if config.wide:
            for m in self.modalities:
                name = config.encoder_spec(m)[0]
                if (self.modalities.kind(m) in WIDE_KINDS and _encoder_meta(name).get("input") == "vector"
                        and len(self.input_shapes[m]) == 1):
                    step = getattr(preprocessor, "steps", {}).get(m) if preprocessor is not None else None
                    layout_of = getattr(step, "sparse_layout", None)
                    layout = layout_of() if layout_of is not None else None
                    sparse = "sparse" if layout else "dense"
                    l2 = WIDE_DEFAULTS[sparse]["l2"] if config.wide_l2 in (None, "auto") else float(config.wide_l2)
                    scale = WIDE_DEFAULTS[sparse]["lr_scale"] if config.wide_lr_scale is None else \
                        float(config.wide_lr_scale)
                    if layout:
                        self.wide[m] = SparseWide(layout["n_terms"], self.n_outputs, scale, l2=l2,
                                                  offset=layout["offset"], nnz=layout["nnz"])
                    else:
                        self.wide[m] = DenseWide(self.input_shapes[m][0], self.n_outputs, scale, l2=l2)
        self.loss_weighting = LossWeighting(self.tasks, kind=config.loss_weighting, weights=config.task_weights)
        rates = config.modality_dropout
        rates = [float(rates.get(m, 0.0)) for m in self.modalities] if isinstance(rates, dict) else \
            [float(rates)] * len(self.modalities)
        self.register_buffer("moddrop_rates", torch.tensor(rates), persistent=False)
        self.register_buffer("moddrop_step", torch.zeros((), dtype=torch.long))  # training steps seen (schedule)
        self.register_buffer("deep_on", torch.ones((), dtype=torch.bool))  # False: the wide path alone
        self.register_buffer("wide_prior", torch.zeros(self.n_outputs))  # its logits where the modality is absent
        # which unimodal residuals join each output (select_unimodal_paths): 1 = joins, 0 = dropped
        self.register_buffer("uni_gate", torch.ones(len(self.modalities), self.n_outputs))
        # the late-fusion calibration (fit_late_fusion): per output, on or off, and its coefficients on
        # [fused logit, each modality's unimodal logit where present, each modality's presence]
        self.register_buffer("late_on", torch.zeros(self.n_outputs, dtype=torch.bool))
        self.register_buffer("late_coef", torch.zeros(self.n_outputs, 1 + 2 * len(self.modalities)))
        self.register_buffer("late_bias", torch.zeros(self.n_outputs))
        self.late_enabled = False
        self.register_load_state_dict_pre_hook(_default_step)
        # the switch as a Python bool too: forward branches on it, and torch.export cannot branch on a buffer
        self.deep_enabled = True
        self.register_load_state_dict_post_hook(_sync_deep_switch)

    @property
    def label_columns_flat(self) -> tuple[str, ...]:
        """The label columns a batch must carry (``tasks=`` of :class:`~medmm.data.MultimodalDataset`)."""
        return tuple(c for t in self.tasks for c in self.label_columns[t])

    @property
    def output_columns(self) -> tuple[str, ...]:
        """A name per output column: the task, or ``task.<class>`` / ``task.<label>`` / ``task.log_hazard``
        (each head's ``output_names``)."""
        return tuple(c for t in self.tasks for c in self.head(t).output_names(t))

    def modality_dropout_now(self) -> torch.Tensor:
        """Per-modality ModDrop chance at the current training step."""
        sched = self.config.modality_dropout_schedule or {}
        if sched.get("kind", "constant") == "linear":
            warm = max(1, int(sched.get("warmup_steps", 1)))
            return self.moddrop_rates * min(1.0, float(self.moddrop_step) / warm)
        return self.moddrop_rates

    def forward(self, values: dict[str, torch.Tensor], present: torch.Tensor, return_aux: bool = False):
        """Logits ``[B, n_outputs]``; with ``return_aux`` also ``{modality: (logits [B, n_outputs], present [B])}``
        from the auxiliary unimodal heads (training only)."""
        present = present.bool()
        if not self.deep_enabled:
            logits = self._wide_only(values, present)
            return (logits, {}) if return_aux else logits
        tokens = None
        if self.uses_tokens:
            feats, tokens = {}, {}
            for j, m in enumerate(self.modalities):
                z, tok, valid = self.encoder(m).forward_tokens(values[m], present[:, j])
                feats[m], tokens[m] = z, (tok, valid)
        else:
            feats = {m: self.encoders[m](values[m], present[:, j]) for j, m in enumerate(self.modalities)}
        fused_present = present
        feats_fused = feats
        if self.training:
            p = self.modality_dropout_now()
            self.moddrop_step += 1
            if bool((p > 0).any()):
                keep = torch.rand(present.shape, device=present.device) >= p.to(present.device)
                fused_present = present & keep
                feats_fused = {m: feats[m] * fused_present[:, j : j + 1] for j, m in enumerate(self.modalities)}
        z = self.fusion(feats_fused, fused_present, tokens) if self.uses_tokens else self.fusion(feats_fused, fused_present)
        if self.late:
            logits = torch.cat([self.heads[t](z[:, self.output_slices[t]]) for t in self.tasks], dim=1)
        else:
            logits = torch.cat([self.heads[t](z) for t in self.tasks], dim=1)
        wide = {m: self.wide_logits(m, values[m], present[:, j]) for j, m in enumerate(self.modalities)
                if m in self.wide}
        uni = {}
        if hasattr(self, "aux_heads"):
            uni = {m: self.aux_heads[m](feats[m]) + wide[m] if m in wide else self.aux_heads[m](feats[m])
                   for m in self.modalities}
        if self.config.unimodal_residual:
            # late-fusion path: evidence from conditionally independent modalities adds up in logit space
            for j, m in enumerate(self.modalities):
                logits = logits + uni[m] * fused_present[:, j : j + 1].to(logits.dtype) * self.uni_gate[j].to(logits.dtype)
            if self.late_enabled:
                logits = self._late_fusion(logits, uni, fused_present)
        else:
            for j, m in enumerate(self.modalities):
                if m in wide:
                    logits = logits + wide[m] * fused_present[:, j : j + 1].to(logits.dtype)
        if not return_aux:
            return logits
        aux = {}
        if self.config.aux_weight > 0:
            aux = {m: (uni[m], present[:, j]) for j, m in enumerate(self.modalities)}
        return logits, aux

    def _late_fusion(self, logits: torch.Tensor, uni: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """The calibrated outputs (:meth:`fit_late_fusion`) where switched on, ``logits`` elsewhere."""
        p = present.to(logits.dtype)
        feats = torch.stack([logits, *(uni[m] * p[:, j:j + 1] * self.uni_gate[j].to(logits.dtype)
                                       for j, m in enumerate(self.modalities)),
                             *(p[:, j:j + 1].expand_as(logits) for j in range(len(self.modalities)))], dim=-1)
        stacked = (feats * self.late_coef.to(logits.dtype)).sum(-1) + self.late_bias.to(logits.dtype)
        return torch.where(self.late_on, stacked, logits)

    @torch.no_grad()
    def select_unimodal_paths(self, val_ds: Any, *, margin_se: float = 1.0,
                              signal_se: float | None = 1.0) -> dict[str, Any] | None:
        """Drop the unimodal residuals that carry nothing on a task, judged on the validation split
        (``residual_select=True``).

        Every modality's unimodal logits join every task's fused logit; a modality with no evidence
        on a task (vital signs on a tumour seen in the image and the notes) still fits its training
        patients' noise, which reaches the fused score (on the demo cohort the vitals path's tumour
        logit had a validation AUROC of 0.49-0.52 and cost the fused tumour AUROC 0.006-0.007 on
        four models). Backward elimination with the one-standard-error rule: per binary task, the
        path whose removal changes the validation log loss least is dropped while its removal does
        not worsen that loss by more than ``margin_se`` standard errors of the paired per-patient
        difference (the simpler model unless the data say otherwise), then the next one. A path
        is only a candidate while its own logit shows no evidence on the task: its validation
        AUROC on the patients who have the modality within ``signal_se`` standard errors
        (DeLong) of chance, or below it (``None`` skips this check). The loss rule alone,
        on 77 validation patients, once dropped the EHR path (lactate, WBC) from the demo's
        disease score, a weak but real path (seed 0, 2026-12-02). The
        encoders and the fusion still see every modality; only the residual is gated
        (``uni_gate``, saved with the weights). Returns ``{task: {"dropped": [...], "tried": {...}}}``
        (``None`` where it does not apply)."""
        from .wide import log_losses

        if not self.late_fusion_applies() or val_ds is None or not len(val_ds):
            return None
        was_training = self.training
        self.eval()
        self.uni_gate.fill_(1.0)
        late = self.late_enabled
        self.late_enabled = False
        F, U, P, Y, K = self._validation_outputs(val_ds)
        out: dict[str, Any] = {}
        for t, c, col in self._binary_outputs():
            k = K[:, col]
            if k.sum() < 2:
                continue
            y = Y[k, col]
            z = F[k, c].astype(float)
            kept = list(range(len(self.modalities)))
            dropped: list[str] = []
            tried: dict[str, list[float]] = {}
            own = {self.modalities[j]: auroc_with_se(y[P[k, j] > 0], U[k, c, j][P[k, j] > 0])
                   for j in kept}
            silent = {j for j in kept if signal_se is None or
                      not own[self.modalities[j]][0] - 0.5 > signal_se * own[self.modalities[j]][1]}
            while len(kept) > 1:
                base = log_losses(y, 1 / (1 + np.exp(-z)))
                cands = []
                for j in (j for j in kept if j in silent):
                    d = log_losses(y, 1 / (1 + np.exp(-(z - U[k, c, j])))) - base  # > 0: the path helps
                    se = float(d.std(ddof=1) / np.sqrt(len(d)))
                    cands.append((float(d.mean()), se, j))
                    tried.setdefault(self.modalities[j], []).append(round(float(d.mean()), 5))
                if not cands:
                    break
                mean, se, j = min(cands)
                if mean > margin_se * se:
                    break
                z = z - U[k, c, j]
                kept.remove(j)
                dropped.append(self.modalities[j])
                self.uni_gate[j, c] = 0.0
            out[t] = {"dropped": dropped, "val_loss_change_if_dropped": tried,
                      "own_val_auroc": {m: [round(a, 4), round(e, 4)] for m, (a, e) in own.items()}}
        self.late_enabled = late
        self.train(was_training)
        return out

    def reset_late_fusion(self) -> None:
        """Switch the late-fusion calibration and the residual selection off (training changes the
        logits they were fitted on)."""
        self.uni_gate.fill_(1.0)
        self._late_off()

    def _late_off(self) -> None:
        self.late_on.fill_(False)
        self.late_coef.zero_()
        self.late_bias.zero_()
        self.late_enabled = False

    def _binary_outputs(self):
        """``(task, output column, label column index)`` of each single-output binary task."""
        for t in self.tasks:
            head = self.head(t)
            if head.kind == "binary" and head.n_outputs == 1:
                yield t, self.output_slices[t].start, self.label_columns_flat.index(self.label_columns[t][0])

    @torch.no_grad()
    def _validation_outputs(self, ds: Any) -> tuple[np.ndarray, ...]:
        """Over ``ds`` (in eval mode): the model's logits ``[N, n_outputs]``, each modality's unimodal
        logits where present ``[N, n_outputs, M]`` (zero where absent), the presence ``[N, M]``, the
        labels and their mask ``[N, label columns]``."""
        device = next(self.parameters()).device
        loader = torch.utils.data.DataLoader(ds, batch_size=EVAL_BATCH, shuffle=False, collate_fn=ds.collate)
        fused, unis, pres, labels, known = [], [], [], [], []
        for b in loader:
            bb = b.to(device)
            logits, aux = self(bb.values, bb.present, return_aux=True)
            if not aux:  # no auxiliary heads' outputs (aux_weight 0): the residuals recomputed
                aux = {m: (self.unimodal_logits(m, bb.values[m], bb.present[:, j]), bb.present[:, j])
                       for j, m in enumerate(self.modalities)}
            p = b.present.numpy()
            fused.append(logits.float().cpu().numpy())
            unis.append(np.stack([aux[m][0].float().cpu().numpy() * p[:, [j]] for j, m in enumerate(self.modalities)], -1))
            pres.append(p.astype(float))
            labels.append(b.labels.numpy())
            known.append(b.label_mask.numpy())
        F, U, P, Y, K = (np.concatenate(x) for x in (fused, unis, pres, labels, known))
        return F, U, P, Y, K.astype(bool)

    def late_fusion_applies(self) -> bool:
        """Whether :meth:`select_unimodal_paths` and :meth:`fit_late_fusion` can run: several
        modalities, the unimodal residual path, the deep part on, and a binary task."""
        return (len(self.modalities) > 1 and bool(self.config.unimodal_residual) and hasattr(self, "aux_heads")
                and self.deep_enabled and any(True for _ in self._binary_outputs()))

    def before_training(self, train_ds: Any, val_ds: Any) -> dict[str, Any]:
        """What the trainer calls before the first epoch: the validation-fitted steps of an earlier
        run switched off (training changes the logits they were fitted on), and with
        ``wide_l2="auto"`` the wide paths' L2 chosen (:meth:`tune_wide_l2`). Returns what goes into
        ``TrainResult.loss_info``."""
        self.reset_late_fusion()
        chosen = self.tune_wide_l2(train_ds, val_ds) if self.config.wide_l2 == "auto" else None
        return {"wide_l2": chosen} if chosen else {}

    def after_training(self, train_ds: Any, val_ds: Any, *, seed: int = 0) -> dict[str, Any]:
        """What the trainer calls on the returned weights, in order, each on the validation split:
        the wide-only refit (:meth:`select_wide_or_deep`, ``wide_select``), the residual selection
        (:meth:`select_unimodal_paths`, ``residual_select``) and the late fusion
        (:meth:`fit_late_fusion`, ``late_fusion``). Returns what goes into ``TrainResult.loss_info``."""
        steps = [("wide_or_deep", lambda: self.select_wide_or_deep(train_ds, val_ds, seed=seed)),
                 ("residual_select", lambda: self.select_unimodal_paths(val_ds) if self.config.residual_select else None),
                 ("late_fusion", lambda: self.fit_late_fusion(val_ds, seed=seed) if self.config.late_fusion else None)]
        info = {}
        for key, step in steps:
            done = step()
            if done is not None:
                info[key] = done
        return info

    @torch.no_grad()
    def fit_late_fusion(self, val_ds: Any, *, folds: int = 5, seed: int = 0, margin_se: float = 1.0) -> dict[str, Any] | None:
        """Calibrated late fusion, fitted on the validation split (``late_fusion=True``).

        Per binary task, a logistic regression of the label on the trained model's fused logit, each
        modality's unimodal logit (its auxiliary head plus wide path, zero where absent) and each
        modality's presence: stacked generalisation (Wolpert 1992) on held-out patients. The fused
        logit already adds the unimodal logits, but each unimodal head is trained to be right alone
        on the patients who have its modality, and their scales need not suit a sum: a path whose
        logits are over- or under-confident, or noise on another task, is re-weighted here. Its
        L2 strength is chosen by inner cross-validation (scikit-learn's ``GridSearchCV`` over
        :data:`LATE_CS`, log loss), and the stack is kept for the task only if its **outer** cross-validated log loss on
        the validation patients (each patient scored by a stack that never saw it) beats the model's
        own by more than one standard error of the paired per-patient difference; it is then refitted
        on all validation patients. The validation split also chose the epoch, so the comparison is
        mildly optimistic for both candidates alike. ``margin_se`` is that margin in standard errors
        (0: kept whenever better on average). Returns what was compared and kept per task
        (``None`` where it does not apply)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict

        from .wide import log_losses

        if not self.late_fusion_applies() or val_ds is None or len(val_ds) < 4 * folds:
            return None
        was_training = self.training
        self.eval()
        self._late_off()
        F, U, P, Y, K = self._validation_outputs(val_ds)
        out: dict[str, Any] = {}
        for t, c, col in self._binary_outputs():
            k = K[:, col]
            y = Y[k, col].astype(int)
            if min(np.bincount(y, minlength=2)) < folds:
                out[t] = {"kept": False, "why": f"fewer than {folds} validation patients of a class"}
                continue
            X = np.column_stack([F[k, c], U[k, c, :] * self.uni_gate[:, c].cpu().numpy(), P[k]])  # as forward sees them
            cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
            stack = GridSearchCV(LogisticRegression(max_iter=1000), {"C": list(LATE_CS)}, cv=cv, scoring="neg_log_loss")
            p_cv = cross_val_predict(stack, X, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed + 1),
                                     method="predict_proba")[:, 1]
            d = log_losses(y, 1 / (1 + np.exp(-F[k, c]))) - log_losses(y, p_cv)
            se = float(d.std(ddof=1) / np.sqrt(len(d)))
            keep = bool(d.mean() > margin_se * se)
            info: dict[str, Any] = {"kept": keep, "val_loss_model": round(float(log_losses(y, 1 / (1 + np.exp(-F[k, c]))).mean()), 5),
                                    "val_loss_stacked_cv": round(float(log_losses(y, p_cv).mean()), 5),
                                    "diff_se": round(se, 5)}
            if keep:
                best = stack.fit(X, y).best_estimator_
                coef = np.asarray(best.coef_[0], dtype=float)
                self.late_coef[c] = torch.as_tensor(coef, dtype=self.late_coef.dtype)
                self.late_bias[c] = float(best.intercept_[0])
                self.late_on[c] = True
                info["C"] = float(best.C)
                info["weights"] = {"fused": round(float(coef[0]), 4),
                                   **{m: round(float(w), 4) for m, w in zip(self.modalities, coef[1:1 + len(self.modalities)])}}
            out[t] = info
        self.late_enabled = bool(self.late_on.any())
        self.train(was_training)
        return out

    def _wide_only(self, values: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Logits with the deep part off: the one modality's wide path where it is present, the
        training prior where it is not."""
        j, m = next((j, m) for j, m in enumerate(self.modalities) if m in self.wide)
        out = self.wide[m](values[m])
        return torch.where(present[:, j:j + 1], out, self.wide_prior.to(out.dtype).expand_as(out))

    def head(self, task: str) -> Head:
        """The head of ``task``."""
        return cast(Head, self.heads[task])

    def encoder(self, modality: str) -> Encoder:
        """The encoder of ``modality``."""
        return cast(Encoder, self.encoders[modality])

    def wide_layer(self, modality: str) -> DenseWide | SparseWide:
        """The wide (linear) layer of ``modality`` (a table or text modality with ``config.wide``)."""
        return cast("DenseWide | SparseWide", self.wide[modality])

    def set_deep(self, on: bool) -> None:
        """Switch the deep part on or off (off: the wide path alone, the prior where it is absent);
        saved with the weights as the ``deep_on`` buffer."""
        self.deep_on.fill_(bool(on))
        self.deep_enabled = bool(on)

    def _wide_select_task(self, t: str) -> str | None:
        """``"binary"``, ``"cox"`` or None: how :meth:`select_wide_or_deep` refits task ``t``'s wide path."""
        head = self.head(t)
        if head.kind == "binary" and head.n_outputs == 1:
            return "binary"
        if head.kind == "survival" and getattr(head, "method", None) == "cox":
            return "cox"
        return None

    def wide_select_applies(self) -> bool:
        """Whether :meth:`select_wide_or_deep` can run: one modality, with a wide path, and binary
        or Cox survival tasks only (a Cox task's refit needs the dense row of a table)."""
        if not (bool(self.config.wide_select) and len(self.modalities) == 1 and len(self.wide) == 1):
            return False
        kinds = [self._wide_select_task(t) for t in self.tasks]
        if any(k is None for k in kinds):
            return False
        return "cox" not in kinds or isinstance(self.wide_layer(next(iter(self.wide))), DenseWide)

    @torch.no_grad()
    def select_wide_or_deep(self, train_ds: Any, val_ds: Any, *, seed: int = 0) -> dict[str, Any] | None:
        """Refit the wide path alone (a logistic regression per binary task, a ridge Cox model per
        Cox survival task, its penalty cross-validated with folds drawn by ``seed``) and keep it instead of wide-and-deep unless wide-and-deep's validation
        loss (log loss; for a Cox task, each validation event's negative log partial likelihood
        term) is lower by more than one standard error of the paired per-patient (per-event)
        difference (the one-standard-error rule: the simpler model unless the data say otherwise;
        the deep part's epoch was also chosen on this split); ``None`` where this does not apply
        (see :meth:`wide_select_applies`, or a task with one class, or no event, in a split).
        Returns what was compared and chosen."""
        from .wide import cox_losses, fit_cox_path, fit_logistic_path, log_losses, refit_cox_path, refit_logistic_path

        if not self.wide_select_applies() or val_ds is None or not len(val_ds):
            return None
        m = next(iter(self.wide))
        j = self.modalities.index(m)
        wide = self.wide_layer(m)
        was_training = self.training
        self.eval()
        device = wide.raw.device

        def gather(ds):
            loader = torch.utils.data.DataLoader(ds, batch_size=256, shuffle=False, collate_fn=ds.collate)
            rows, present, labels, known, logits = [], [], [], [], []
            for b in loader:
                bb = b.to(device)
                rows.append(wide.rows(b.values[m]))
                present.append(b.present[:, j].numpy())
                labels.append(b.labels.numpy())
                known.append(b.label_mask.numpy())
                logits.append(self(bb.values, bb.present).float().cpu().numpy())
            if hasattr(rows[0], "tocsr"):
                from scipy import sparse

                X = sparse.vstack(rows).tocsr()
            else:
                X = np.concatenate(rows)
            return (X, np.concatenate(present).astype(bool), np.concatenate(labels),
                    np.concatenate(known).astype(bool), np.concatenate(logits))

        X, pr, y, k, _ = gather(train_ds)
        Xv, prv, yv, kv, deep_logits = gather(val_ds)
        flat = self.label_columns_flat

        def survival_labels(t, labels, known):
            cols = [flat.index(c) for c in self.label_columns[t]]
            time, event, ok = self.head(t)._labels(torch.as_tensor(labels[:, cols]), torch.as_tensor(known[:, cols]))
            return time.numpy().astype(float), event.numpy().astype(bool), ok.numpy().astype(bool)

        fits: list[tuple[str, int, str, Any, float, tuple[Any, ...]]] = []
        loss_wide: list[np.ndarray] = []
        loss_deep: list[np.ndarray] = []
        for t in self.tasks:
            o = self.output_slices[t].start  # the task's output column (a Cox task has two label columns, one output)
            if self._wide_select_task(t) == "cox":
                time, event, ok = survival_labels(t, y, k)
                tv, ev, okv = survival_labels(t, yv, kv)
                tr, va = pr & ok, okv & prv
                cfit = fit_cox_path(X[tr], time[tr], event[tr], Xv[va], tv[va], ev[va], seed=seed,
                                    column_sets=self._cox_column_sets(m, X.shape[1]))
                if cfit is None:
                    self.train(was_training)
                    return None
                z = np.where(prv, np.asarray(Xv @ cfit.coef).ravel(), 0.0)
                loss_wide.append(cox_losses(z[okv], tv[okv], ev[okv]))
                loss_deep.append(cox_losses(deep_logits[okv, o], tv[okv], ev[okv]))
                fits.append((t, o, "cox", cfit, 0.0, (X[tr], time[tr], event[tr], Xv[va], tv[va], ev[va])))
                continue
            c = flat.index(self.label_columns[t][0])
            tr, va = pr & k[:, c], kv[:, c]
            lfit = fit_logistic_path(X[tr], y[tr, c], Xv[va & prv], yv[va & prv, c])
            if lfit is None:
                self.train(was_training)
                return None
            prior = float(np.clip(y[k[:, c], c].mean(), 1e-4, 1 - 1e-4))
            z = np.where(prv, np.asarray(Xv @ lfit.coef).ravel() + lfit.intercept, np.log(prior / (1 - prior)))
            loss_wide.append(log_losses(yv[va, c], 1 / (1 + np.exp(-z[va]))))
            loss_deep.append(log_losses(yv[va, c], 1 / (1 + np.exp(-deep_logits[va, o]))))
            fits.append((t, o, "binary", lfit, prior, (X[tr], y[tr, c], Xv[va & prv], yv[va & prv, c])))
        lw, ld = np.concatenate(loss_wide), np.concatenate(loss_deep)
        d = ld - lw
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
        wide_ok = bool(d.mean() >= -se)  # the deep part must beat the linear model by one standard error
        if wide_ok:
            dtype = wide.raw.dtype
            for _t, o, kind, fitted, prior, parts in fits:
                if kind == "cox":
                    cox = refit_cox_path(fitted, *parts)
                    wide.raw[o] = torch.as_tensor(cox.coef / wide.lr_scale, dtype=dtype, device=device)
                    wide.bias[o] = 0.0  # a Cox model's log hazard has no intercept
                    self.wide_prior[o] = 0.0  # the baseline hazard where the modality is absent
                    continue
                logistic = refit_logistic_path(fitted, *parts)
                wide.raw[o] = torch.as_tensor(logistic.coef / wide.lr_scale, dtype=dtype, device=device)
                wide.bias[o] = logistic.intercept
                self.wide_prior[o] = float(np.log(prior / (1 - prior)))
            self.set_deep(False)
        self.train(was_training)
        out = {"chosen": "wide" if wide_ok else "wide+deep", "modality": m,
               "val_loss_wide": round(float(lw.mean()), 5), "val_loss_wide_and_deep": round(float(ld.mean()), 5),
               "val_loss_diff_se": round(se, 5),
               "wide_C": {t: f.C for t, _, kind, f, _, _ in fits if kind == "binary"}}
        alphas = {t: f.alpha for t, _, kind, f, _, _ in fits if kind == "cox"}
        if alphas:
            out["wide_cox_alpha"] = alphas
            out["wide_cox_columns"] = {t: f.columns_name for t, _, kind, f, _, _ in fits if kind == "cox"}
        return out

    def _cox_column_sets(self, m: str, width: int) -> dict[str, Any] | None:
        """The feature sets a wide-only Cox model of modality ``m`` chooses between (see
        :func:`medmm.models.wide.fit_cox_path`): where its table preprocessor writes each numeric
        column twice (normal scores and, with ``numeric_raw``, its own scale), ``all`` columns
        or ``own_scale`` (the own-scale block, missing indicators and one-hot categories: the
        columns a Cox PH model on the raw table reads); ``None`` (all columns) otherwise."""
        step: Any = getattr(self.preprocessor, "steps", {}).get(m) if self.preprocessor is not None else None
        blocks = step.column_blocks() if step is not None and hasattr(step, "column_blocks") else None
        if not blocks or not len(blocks.get("raw", ())) or not len(blocks["normal"]):
            return None
        if max(int(b.max()) for b in blocks.values() if len(b)) + 1 != width:
            return None  # not the layout the wide path reads
        own = np.sort(np.concatenate([blocks["indicator"], blocks["categorical"], blocks["raw"]]))
        return {"all": None, "own_scale": own}

    @torch.no_grad()
    def tune_wide_l2(self, train_ds: Any, val_ds: Any) -> dict[str, dict[str, dict[str, float]]] | None:
        """Choose each wide path's L2 strength per binary task on the data (``wide_l2="auto"``).

        For every wide modality and binary task, L2 logistic regressions of the task on the
        modality's featurised rows (the training patients who have it) are scored on the
        validation patients who have it (:func:`~medmm.models.wide.fit_logistic_path`: log loss,
        scikit-learn's ``C`` on :data:`~medmm.models.wide.WIDE_CS`); the chosen ``C`` becomes the
        penalty that gives the same optimum inside this model's loss. scikit-learn minimises
        ``C * sum(log loss) + ||w||^2 / 2``; here the path's logit enters the task's loss averaged
        over the N training patients with the label (weight ``task_weight``) and the auxiliary
        loss averaged over the n who have the modality (weight ``aux_weight / n_modalities``), so
        ``l2 = task_weight * (1 / N + aux_weight / (n_modalities * n)) / (2 * C)``.

        Why: one fixed strength cannot fit both a templated note whose evidence is a handful of
        negation-aware findings (where weak L2 lets hundreds of incidental n-grams add noise to the
        path, and through it to every fused score) and a vocabulary-rich real corpus; the validation
        split decides, as for the single-modality wide-only refit (:meth:`select_wide_or_deep`).
        Other task kinds keep the default strength. Returns ``{modality: {task: {"C", "l2", "n"}}}``
        (``None`` without a wide path or validation patients)."""
        from .wide import fit_logistic_path

        if (not len(self.wide) or val_ds is None or not len(val_ds) or not hasattr(train_ds, "items")
                or not hasattr(val_ds, "items")):
            return None
        a = float(self.config.aux_weight) if hasattr(self, "aux_heads") else 0.0
        weights = (self.config.task_weights or {}) if self.config.loss_weighting == "fixed" else {}
        tr_items, va_items = list(train_ds.items), list(val_ds.items)
        chosen: dict[str, dict[str, dict[str, float]]] = {}
        for m in self.wide:
            wide = self.wide_layer(m)

            def rows(items, m=m, wide=wide):
                have = [it for it in items if it["values"].get(m) is not None]
                if not have:
                    return None, have
                return wide.rows(torch.from_numpy(np.stack([np.asarray(it["values"][m], np.float32) for it in have]))), have

            X, have = rows(tr_items)
            Xv, have_v = rows(va_items)
            if X is None or Xv is None:
                continue
            for t in self.tasks:
                head = self.head(t)
                if head.kind != "binary" or head.n_outputs != 1:
                    continue
                col = self.label_columns[t][0]

                def labels(items, col=col):
                    y = np.array([np.nan if it["labels"].get(col) is None else float(it["labels"][col]) for it in items])
                    return y, ~np.isnan(y)

                y, k = labels(have)
                yv, kv = labels(have_v)
                fit = fit_logistic_path(X[np.flatnonzero(k)], y[k], Xv[np.flatnonzero(kv)], yv[kv])
                if fit is None:
                    continue
                n_label = int(labels(tr_items)[1].sum())
                n = int(k.sum())
                l2 = float(weights.get(t, 1.0)) * (1.0 / n_label + a / (len(self.modalities) * n)) / (2.0 * fit.C)
                wide.set_l2(l2, self.output_slices[t].start)
                chosen.setdefault(m, {})[t] = {"C": fit.C, "l2": l2, "n": n}
        return chosen

    def wide_logits(self, modality: str, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The wide (linear) path's logits ``[B, n_outputs]`` of one modality, zero on absent rows."""
        out = self.wide[modality](x)
        return out * mask[:, None].to(out.dtype)

    def wide_penalty(self) -> torch.Tensor:
        """``l2 * ||W||^2`` summed over the wide layers (each output its own ``l2``; 0 when there are none)."""
        terms = [w.penalty() for w in map(self.wide_layer, self.wide) if bool((w.l2 > 0).any())]
        if not terms:
            return next(self.parameters()).new_zeros(())
        return torch.stack(terms).sum()

    def unimodal_logits(self, modality: str, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One modality's own logits: its auxiliary head on its encoder, plus its wide path (the
        wide path alone when the deep part is off)."""
        if not self.deep_enabled:
            return self._wide_only({modality: x}, mask.bool()[:, None])
        out = self.aux_heads[modality](self.encoders[modality](x, mask))
        if modality in self.wide:
            out = out + self.wide_logits(modality, x, mask)
        return out

    def predict_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Each head's output function on its columns (sigmoid, softmax, identity)."""
        return torch.cat([self.head(t).predict(logits[:, self.output_slices[t]]) for t in self.tasks], dim=1)

    def predict_proba(self, values: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Probabilities (values for regression) ``[B, n_outputs]``, columns :attr:`output_columns`."""
        return self.predict_from_logits(self(values, present))

    def training_loss(self, batch: Any, criterion: Any = None) -> torch.Tensor:
        """The multi-task training loss of a batch (:func:`medmm.models.losses.multitask_loss`)."""
        from .losses import multitask_loss

        return multitask_loss(self, batch, criterion)

    # ------------------------------------------------------------------ inference on records
    @torch.no_grad()
    def predict_records(self, records: list[PatientRecord], *, batch_size: int = 64) -> np.ndarray:
        """Probabilities ``[N, n_outputs]`` for raw records (needs the fitted preprocessor); columns
        :attr:`output_columns`, ``[N, T]`` for binary tasks."""
        from ..data import encode_records, collate

        if self.preprocessor is None:
            raise ConfigError("this model has no preprocessor attached", hint="load it with MultimodalModel.load")
        self.eval()
        device = next(self.parameters()).device
        shapes = self.preprocessor.output_shapes()
        out = []
        for s in range(0, len(records), batch_size):
            items = encode_records(records[s:s + batch_size], self.preprocessor)
            batch = collate(items, self.modalities, shapes, ()).to(device)
            out.append(self.predict_proba(batch.values, batch.present).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.n_outputs), dtype=np.float32)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the model and its fitted preprocessing to the folder ``path`` as a data-only
        bundle (:mod:`medmm.models.bundle`)."""
        from .bundle import save_bundle

        return save_bundle(self, path)

    @classmethod
    def load(cls, path: str | Path, *, map_location: str | torch.device = "cpu",
             trust_pickle: bool = False) -> "MultimodalModel":
        """Load a model folder written by :meth:`save` (see :func:`medmm.models.bundle.read_bundle`;
        ``trust_pickle=True`` is needed for folders of format 1 and 2 only). :func:`medmm.load_model`
        also takes MLflow URIs."""
        from .bundle import read_bundle

        return read_bundle(path, map_location=map_location, trust_pickle=trust_pickle)


@BUNDLED_MODELS.register("multimodal", cls="MultimodalModel")
def _from_bundle(*, config: dict[str, Any], input_shapes: dict[str, Any], preprocessor: Any) -> MultimodalModel:
    """A :class:`MultimodalModel` from a model bundle's data (:func:`medmm.models.bundle.read_bundle`)."""
    return MultimodalModel(ModelConfig.from_dict(config), input_shapes, preprocessor)

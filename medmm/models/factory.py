"""``create_model(config, preprocessor)``: one factory over the encoder, fusion and head registries."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, NotFittedError

__all__ = ["create_model"]


def create_model(config: Any = None, preprocessor: Any = None, *, input_shapes: dict[str, tuple[int, ...]] | None = None,
                 tasks: tuple[str, ...] | None = None, **overrides: Any) -> Any:
    """A :class:`~medmm.models.multimodal.MultimodalModel` built from its registries (timm's
    ``create_model`` spirit).

    ``config`` is a :class:`~medmm.models.multimodal.ModelConfig`, a plain dict of its fields,
    the ``model`` section of an :class:`~medmm.config.ExperimentConfig` (or the whole experiment
    config), or ``None`` for the defaults; ``overrides`` replace fields (``dim=32``). Input shapes
    come from the fitted ``preprocessor`` (attached to the model, so it predicts on raw records
    and saves as one bundle) or from ``input_shapes``. ``tasks`` gives binary heads to a config
    without tasks.
    """
    from .multimodal import ModelConfig, MultimodalModel

    cfg = _model_config(config, tasks, overrides)
    if preprocessor is not None:
        if not getattr(preprocessor, "fitted_", False):
            raise NotFittedError("the preprocessor is not fitted",
                                 hint="fit it on the training records first: build_preprocessor(config).fit(train)")
        shapes = preprocessor.output_shapes()
        missing = [m for m in cfg.modalities if m not in shapes]
        if missing:
            raise ConfigError(f"the preprocessor has no step for {missing}",
                              hint="build it with medmm.models.build_preprocessor(config)")
    elif input_shapes is not None:
        shapes = input_shapes
    else:
        raise ConfigError("create_model needs a fitted preprocessor or input_shapes",
                          hint="create_model(config, build_preprocessor(config).fit(train_records))")
    assert isinstance(cfg, ModelConfig)
    return MultimodalModel(cfg, shapes, preprocessor)


def _model_config(config: Any, tasks: tuple[str, ...] | None, overrides: dict[str, Any]) -> Any:
    import dataclasses

    from ..modelspec import ModelSection
    from .multimodal import ModelConfig

    if isinstance(getattr(config, "model", None), ModelSection):  # an ExperimentConfig
        tasks = tasks or tuple(config.tasks or ())
        config = config.model
    if isinstance(config, ModelConfig):
        d = config.to_dict()
    elif isinstance(config, ModelSection):
        d = config.to_config_dict()
    elif isinstance(config, dict) or config is None:
        try:  # the same checks (registry names, "did you mean") as a config file gets
            d = ModelSection.model_validate(dict(config or {})).to_config_dict()
        except Exception as exc:  # pydantic's ValidationError
            errors = getattr(exc, "errors", None)
            first = errors()[0] if callable(errors) else {"loc": (), "msg": str(exc)}
            loc = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"model config: {loc}: {first['msg']}", column=loc or None,
                              hint=f"fields: {[f.name for f in dataclasses.fields(ModelConfig)]}") from exc
    else:
        raise ConfigError(f"cannot build a model from a {type(config).__name__}",
                          hint="give a ModelConfig, a dict of its fields or an experiment config")
    d.update(overrides)
    if not d.get("tasks"):
        if not tasks:
            raise ConfigError("no task given", hint="set config tasks or pass tasks=('tumor', ...)")
        d["tasks"] = {t: "binary" for t in tasks}
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown model fields {unknown}", hint=f"fields: {sorted(known)}")
    d["modalities"] = tuple(d.get("modalities") or ModelConfig().modalities)
    return ModelConfig(**d)

"""Every task's outputs as named columns: the one place that turns a model's output array into
what predictions files, the pyfunc model, ``medmm predict``, the service and the monitor return.

==============  =====================================================================
kind            columns (per task ``t``)
==============  =====================================================================
binary          ``prob_t``
multiclass      ``prob_t.<class>`` per class and ``pred_t`` (the most likely class)
multilabel      ``prob_t.<label>`` per label
regression      ``value_t`` (in the task's ``unit``, see :func:`task_info`)
survival        ``risk_score_t`` (orders patients) and ``risk_t@<h>`` per horizon (the
                absolute risk by ``h``; a Cox head needs its fitted baseline)
==============  =====================================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["task_outputs", "task_info", "structured_outputs"]


def task_info(model: Any) -> dict[str, dict[str, Any]]:
    """Per task what its outputs mean (``head.describe()``): kind, classes, unit, horizons."""
    return {t: model.heads[t].describe() for t in model.tasks}


def task_outputs(model: Any, probs: Any) -> dict[str, np.ndarray]:
    """Named output columns from ``predict_proba`` / ``predict_records`` output ``[N, n_outputs]``."""
    from .survival import SurvivalHead

    p = torch.as_tensor(np.asarray(probs, dtype=np.float32))
    out: dict[str, np.ndarray] = {}
    for t in model.tasks:
        head = model.heads[t]
        sl = p[:, model.output_slices[t]]
        if isinstance(head, SurvivalHead):
            score = sl[:, 0] if head.method == "cox" else head.risk_score_from_output(sl)
            out[f"risk_score_{t}"] = score.numpy().astype(float)
            if head.can_give_risk() and head.horizons:
                risk = 1.0 - head.survival_from_output(sl, head.horizons)
                for j, h in enumerate(head.horizons):
                    out[f"risk_{t}@{h:g}"] = risk[:, j].numpy().astype(float)
        elif head.kind == "multiclass":
            arr = sl.numpy().astype(float)
            for k, c in enumerate(head.classes):
                out[f"prob_{t}.{c}"] = arr[:, k]
            out[f"pred_{t}"] = np.asarray(head.classes, dtype=object)[arr.argmax(axis=1)] if len(arr) else \
                np.zeros(0, dtype=object)
        elif head.kind == "multilabel":
            for k, c in enumerate(head.labels):
                out[f"prob_{t}.{c}"] = sl[:, k].numpy().astype(float)
        elif head.kind == "regression":
            out[f"value_{t}"] = sl[:, 0].numpy().astype(float)
        else:
            out[f"prob_{t}"] = sl[:, 0].numpy().astype(float)
    return out


def structured_outputs(model: Any, probs: Any, i: int = 0) -> dict[str, dict[str, Any]]:
    """One patient's outputs per task as plain data (the service's ``outputs`` field)."""
    cols = task_outputs(model, np.asarray(probs)[i:i + 1])
    res: dict[str, dict[str, Any]] = {}
    for t, info in task_info(model).items():
        kind = info["kind"]
        d: dict[str, Any] = {"kind": kind}
        if kind == "multiclass":
            d["probabilities"] = {c: float(cols[f"prob_{t}.{c}"][0]) for c in info["classes"]}
            d["predicted_class"] = str(cols[f"pred_{t}"][0])
        elif kind == "multilabel":
            d["probabilities"] = {c: float(cols[f"prob_{t}.{c}"][0]) for c in info["labels"]}
        elif kind == "regression":
            d.update(value=float(cols[f"value_{t}"][0]), unit=info.get("unit"))
        elif kind == "survival":
            d.update(risk_score=float(cols[f"risk_score_{t}"][0]), time_unit=info.get("time_unit"),
                     risk={f"{h:g}": float(cols[f"risk_{t}@{h:g}"][0]) for h in info.get("horizons") or []
                           if f"risk_{t}@{h:g}" in cols})
        else:
            d["probability"] = float(cols[f"prob_{t}"][0])
        res[t] = d
    return res


def risk_column(model: Any, name: str) -> str:
    """The :func:`task_outputs` column that is a risk in [0, 1] for ``name``: a binary task (its
    probability), a survival task (its risk by the first horizon), ``task.<class>`` of a multi-class
    task, or a column name itself (``risk_death@365``)."""
    from ..errors import ConfigError

    cols = list(task_outputs(model, np.zeros((1, model.n_outputs), dtype=np.float32)))
    if name in cols:
        return name
    task, _, cls = name.partition(".")
    candidates = {"binary": f"prob_{task}", "multilabel": f"prob_{name}", "multiclass": f"prob_{name}"}
    if task in model.tasks:
        head = model.heads[task]
        if head.kind == "survival" and not cls:
            hs = getattr(head, "horizons", [])
            if hs and f"risk_{task}@{hs[0]:g}" in cols:
                return f"risk_{task}@{hs[0]:g}"
        elif candidates.get(head.kind) in cols:
            return candidates[head.kind]
    risks = [c for c in cols if c.startswith(("prob_", "risk_")) and not c.startswith("risk_score_")]
    raise ConfigError(f"the model has no risk output {name!r}", column="model_task",
                      hint=f"choose one of {risks}")

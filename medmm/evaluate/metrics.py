"""Discrimination metrics per task and per presence pattern (the functions live in
:mod:`medmm.metrics`, below training) and operating-point thresholds."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics import auroc, binary_metrics, brier_score, evaluate_predictions, expected_calibration_error

__all__ = ["binary_metrics", "evaluate_predictions", "auroc", "expected_calibration_error", "brier_score",
           "choose_thresholds"]


def choose_thresholds(y: Any, p: Any, *, target_sensitivity: float | None = 0.9) -> dict[str, float]:
    """Youden's J threshold and the highest threshold that reaches ``target_sensitivity``
    (for choosing operating points on a validation split and applying them to test)."""
    from .bootstrap import OperatingPoints, metric_arrays

    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    keep = ~np.isnan(y)
    ops = OperatingPoints(target_sensitivity=target_sensitivity)
    m = metric_arrays(np.ones((1, int(keep.sum())), np.float32), y[keep], p[keep], ops=ops)
    out = {"youden": float(m["youden.threshold"][0])} if "youden.threshold" in m else {}
    key = f"sensitivity_{target_sensitivity:g}.threshold"
    if target_sensitivity is not None and key in m:
        out[f"sensitivity_{target_sensitivity:g}"] = float(m[key][0])
    return out

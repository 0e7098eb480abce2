"""Discrimination and calibration metrics (numpy and scikit-learn only), used by training's validation and by
:mod:`medmm.evaluate` alike."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["binary_metrics", "evaluate_predictions", "auroc", "auroc_with_se", "delong_components",
           "expected_calibration_error", "brier_score"]


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """AUROC, or NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def delong_components(y: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeLong's structural components from midranks (Sun and Xu's fast algorithm) for ``K`` scores
    of the same patients: ``(aurocs [K], per positive [K, n1], per negative [K, n0])`` -- each
    positive's share of negatives ranked below it (ties one half), each negative's share of
    positives ranked above it. ``y`` is boolean, both classes present."""
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool)
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    n1, n0 = int(y.sum()), int((~y).sum())
    r_all = rankdata(s, axis=1)
    pos = (r_all[:, y] - rankdata(s[:, y], axis=1)) / n0
    neg = 1.0 - (r_all[:, ~y] - rankdata(s[:, ~y], axis=1)) / n1
    return pos.mean(axis=1), pos, neg


def auroc_with_se(y: Any, score: Any) -> tuple[float, float]:
    """AUROC of ``score`` for binary ``y`` and its DeLong standard error; ``(0.5, inf)`` when a
    class is absent (no evidence either way)."""
    y = np.asarray(y) > 0.5
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return 0.5, float("inf")
    a, pos, neg = delong_components(y, score)
    var = (pos[0].var(ddof=1) / n1 if n1 > 1 else 0.0) + (neg[0].var(ddof=1) / n0 if n0 > 1 else 0.0)
    return float(a[0]), float(np.sqrt(var))


def binary_metrics(y: Any, p: Any) -> dict[str, float]:
    """AUROC, AUPRC (average precision), prevalence and counts for one binary task."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    keep = ~np.isnan(y)
    y, p = y[keep], p[keep]
    two = len(np.unique(y)) == 2
    return {
        "auroc": auroc(y, p),
        "auprc": float(average_precision_score(y, p)) if two else float("nan"),
        "n": int(len(y)),
        "n_positive": int(y.sum()),
    }


def evaluate_predictions(predictions, tasks: list[str] | tuple[str, ...], *, by: str | None = "pattern"):
    """Metrics per task (and per value of column ``by``) from a predictions table.

    ``predictions`` has, per task ``t``, columns ``label_t`` and ``prob_t``; ``by`` names a
    grouping column such as the presence ``pattern``. Returns a long DataFrame with columns
    ``task, group, auroc, auprc, n, n_positive`` (``group == 'all'`` for the whole set).
    """
    import pandas as pd

    rows = []
    for t in tasks:
        rows.append({"task": t, "group": "all", **binary_metrics(predictions[f"label_{t}"], predictions[f"prob_{t}"])})
        if by and by in predictions.columns:
            for g, sub in predictions.groupby(by, sort=True):
                rows.append({"task": t, "group": str(g), **binary_metrics(sub[f"label_{t}"], sub[f"prob_{t}"])})
    return pd.DataFrame(rows)


def expected_calibration_error(y: Any, p: Any, *, n_bins: int = 10) -> float:
    """Expected calibration error over ``n_bins`` equal-width bins of predicted probability."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    keep = ~np.isnan(y)
    y, p = y[keep], p[keep]
    if not len(y):
        return float("nan")
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    sp = np.bincount(bins, weights=p, minlength=n_bins)
    sy = np.bincount(bins, weights=y, minlength=n_bins)
    return float(np.abs(sp - sy).sum() / len(y))


def brier_score(y: Any, p: Any) -> float:
    """Mean squared error of the probabilities (lower is better)."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    keep = ~np.isnan(y)
    return float(np.mean((p[keep] - y[keep]) ** 2)) if keep.any() else float("nan")

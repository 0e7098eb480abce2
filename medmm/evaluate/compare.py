"""Paired comparison of two models on the same patients: DeLong for AUROC, bootstrap for the rest."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics import delong_components

__all__ = ["delong_test", "compare_models", "compare_predictions", "compare_by_group"]


def delong_test(y: Any, p1: Any, p2: Any) -> dict[str, float]:
    """DeLong's test for two correlated AUROCs (Sun & Xu's fast algorithm).

    Returns ``auroc_1, auroc_2, difference, se, z, p_value, low, high`` (95% CI of the
    difference, normal approximation).
    """
    from scipy.stats import norm

    y = np.asarray(y, dtype=float)
    keep = ~np.isnan(y)
    y = y[keep].astype(bool)
    preds = np.vstack([np.asarray(p1, float)[keep], np.asarray(p2, float)[keep]])
    m, n = int(y.sum()), int((~y).sum())
    nan = float("nan")
    if m < 2 or n < 2:
        return {"auroc_1": nan, "auroc_2": nan, "difference": nan, "se": nan, "z": nan, "p_value": nan,
                "low": nan, "high": nan}
    aucs, per_pos, per_neg = delong_components(y, preds)
    cov = np.cov(per_pos) / m + np.cov(per_neg) / n
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    if se == 0:
        z, pval = (0.0, 1.0) if diff == 0 else (float(np.sign(diff) * np.inf), 0.0)
    else:
        z = diff / se
        pval = float(2 * norm.sf(abs(z)))
    return {"auroc_1": float(aucs[0]), "auroc_2": float(aucs[1]), "difference": diff, "se": se, "z": float(z),
            "p_value": pval, "low": diff - 1.959964 * se, "high": diff + 1.959964 * se}


def compare_predictions(y: Any, p1: Any, p2: Any, *, n_boot: int = 2000, seed: int = 0,
                        alpha: float = 0.05) -> "Any":
    """Every metric of model 1 minus model 2 on the same patients, with a paired bootstrap CI.

    Both models are bootstrapped over the same resamples (same seed, same patients), so
    the CI of the difference accounts for their correlation. AUROC also gets DeLong's test.
    Returns a DataFrame: ``metric, model_1, model_2, difference, low, high, p_value, method``.
    """
    import pandas as pd

    from .bootstrap import bootstrap_metrics

    a = bootstrap_metrics(y, p1, n_boot=n_boot, seed=seed, keep_samples=True)
    b = bootstrap_metrics(y, p2, n_boot=n_boot, seed=seed, keep_samples=True)
    rows = []
    for k in a["samples"]:
        if k in ("n", "n_positive") or k.endswith(".threshold"):
            continue
        d = a["samples"][k] - b["samples"][k]
        d = d[~np.isnan(d)]
        est = a[k][0] - b[k][0]
        if len(d):
            lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
            pval = float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean())))
        else:
            lo = hi = pval = float("nan")
        rows.append({"metric": k, "model_1": a[k][0], "model_2": b[k][0], "difference": est, "low": float(lo),
                     "high": float(hi), "p_value": pval, "method": "paired bootstrap"})
    dl = delong_test(y, p1, p2)
    rows.insert(0, {"metric": "auroc", "model_1": dl["auroc_1"], "model_2": dl["auroc_2"],
                    "difference": dl["difference"], "low": dl["low"], "high": dl["high"], "p_value": dl["p_value"],
                    "method": "DeLong"})
    return pd.DataFrame(rows)


def compare_models(pred_1, pred_2, tasks: list[str] | tuple[str, ...], *, n_boot: int = 2000, seed: int = 0,
                   names: tuple[str, str] = ("model_1", "model_2")):
    """Compare two prediction tables on the patients they share (joined on ``patient_id``).

    Returns a long DataFrame with a ``task`` column (see :func:`compare_predictions`); the
    model columns are renamed to ``names``.
    """
    import pandas as pd

    from ..errors import ConfigError

    cols = ["patient_id", *[f"label_{t}" for t in tasks], *[f"prob_{t}" for t in tasks]]
    m = pred_1[cols].merge(pred_2[["patient_id", *[f"prob_{t}" for t in tasks]]], on="patient_id",
                           suffixes=("", "__2"))
    if not len(m):
        raise ConfigError("the two prediction tables share no patient_id",
                          hint="score both models on the same cohort")
    out = []
    for t in tasks:
        df = compare_predictions(m[f"label_{t}"], m[f"prob_{t}"], m[f"prob_{t}__2"], n_boot=n_boot, seed=seed)
        df.insert(0, "task", t)
        out.append(df)
    res = pd.concat(out, ignore_index=True)
    if names[0] == names[1]:
        names = (f"{names[0]} (1)", f"{names[1]} (2)")
    return res.rename(columns={"model_1": names[0], "model_2": names[1]})


def compare_by_group(pred_1, pred_2, tasks, by: list[str] | tuple[str, ...], *,
                     names: tuple[str, str] = ("model_1", "model_2")):
    """AUROC of two models per group of each column in ``by`` (``'pattern'``, ``'sex'``,
    ``'site'`` ...), on the patients both scored, with DeLong's test per group.

    Returns ``task, column, group, n, n_positive, <name 1>, <name 2>, difference, low, high,
    p_value``; groups with fewer than two patients of each class give NaN.
    """
    import pandas as pd

    cols = ["patient_id", *by, *[f"label_{t}" for t in tasks], *[f"prob_{t}" for t in tasks]]
    m = pred_1[cols].merge(pred_2[["patient_id", *[f"prob_{t}" for t in tasks]]], on="patient_id",
                           suffixes=("", "__2"))
    if names[0] == names[1]:
        names = (f"{names[0]} (1)", f"{names[1]} (2)")
    rows = []
    for t in tasks:
        for c in by:
            for g, sub in m.groupby(c, sort=True):
                y = sub[f"label_{t}"].to_numpy(float)
                d = delong_test(y, sub[f"prob_{t}"], sub[f"prob_{t}__2"])
                rows.append({"task": t, "column": c, "group": str(g), "n": int((~np.isnan(y)).sum()),
                             "n_positive": int(np.nansum(y)), names[0]: d["auroc_1"], names[1]: d["auroc_2"],
                             "difference": d["difference"], "low": d["low"], "high": d["high"],
                             "p_value": d["p_value"]})
    return pd.DataFrame(rows)

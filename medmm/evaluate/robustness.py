"""Robustness to missing data: metrics per observed presence pattern, with modalities removed
on purpose (every subset), fusion against its unimodal baselines, and per-modality
contributions as Shapley values over modalities (by masking)."""

from __future__ import annotations

from itertools import combinations
from math import factorial
from typing import Any

import numpy as np

from .metrics import auroc

__all__ = ["pattern_metrics", "masking_table", "fusion_table", "shapley_values", "baseline_table"]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def pattern_metrics(predictions, tasks, *, n_boot: int = 500, seed: int = 0, min_n: int = 10):
    """Metrics (with bootstrap CIs) per observed presence pattern; see :func:`subgroup_metrics`."""
    from .subgroups import subgroup_metrics

    return subgroup_metrics(predictions, tasks, by=["pattern"], n_boot=n_boot, seed=seed, min_n=min_n, warn=False)


def _observed(predictions, modalities) -> np.ndarray:
    """``bool [N, M]`` of the modalities each patient actually has, from ``pattern``."""
    pats = predictions["pattern"].astype(str).str.split("+")
    return np.array([[m in set(p) for m in modalities] for p in pats], dtype=bool).reshape(len(predictions),
                                                                                          len(modalities))


def masking_table(scored) -> Any:
    """Per subset of modalities kept (others masked) and task: AUROC, AUPRC and Brier score
    over every patient (``*_all``) and over the patients that have every kept modality
    (``auroc_complete``, ``n_complete``)."""
    import pandas as pd
    from sklearn.metrics import average_precision_score

    preds, tasks, mods = scored.predictions, scored.tasks, scored.modalities
    obs = _observed(preds, mods)
    rows = []
    for name, probs in scored.masked.items():
        kept = [] if name == "none" else name.split("+")
        complete = obs[:, [mods.index(m) for m in kept]].all(axis=1) if kept else np.ones(len(preds), bool)
        for k, t in enumerate(tasks):
            y = preds[f"label_{t}"].to_numpy(float)
            lab = ~np.isnan(y)
            p = probs[:, k]
            two = len(np.unique(y[lab])) == 2
            sel = lab & complete
            rows.append({
                "subset": name, "n_modalities": len(kept), "task": t,
                "auroc_all": auroc(y[lab], p[lab]),
                "auprc_all": float(average_precision_score(y[lab], p[lab])) if two else np.nan,
                "brier_all": float(np.mean((p[lab] - y[lab]) ** 2)) if lab.any() else np.nan,
                "auroc_complete": auroc(y[sel], p[sel]), "n_complete": int(sel.sum()),
            })
    return pd.DataFrame(rows)


def fusion_table(scored, *, n_boot: int = 0) -> Any:
    """Does fusion help? Per task and modality, on the patients that have that modality: the
    fused model (all observed modalities) against the same model given that modality alone,
    with DeLong's test of the AUROC difference."""
    import pandas as pd

    from .compare import delong_test

    preds, tasks, mods = scored.predictions, scored.tasks, scored.modalities
    obs = _observed(preds, mods)
    rows = []
    for j, m in enumerate(mods):
        if m not in scored.masked:
            continue
        for k, t in enumerate(tasks):
            y = preds[f"label_{t}"].to_numpy(float)
            sel = obs[:, j] & ~np.isnan(y)
            fused = preds[f"prob_{t}"].to_numpy(float)[sel]
            uni = scored.masked[m][sel, k]
            d = delong_test(y[sel], fused, uni)
            rows.append({"task": t, "modality": m, "n": int(sel.sum()), "auroc_fused": d["auroc_1"],
                         "auroc_unimodal": d["auroc_2"], "gain": d["difference"], "low": d["low"],
                         "high": d["high"], "p_value": d["p_value"],
                         "fusion_helps": bool(d["low"] > 0) if not np.isnan(d["low"]) else False})
    return pd.DataFrame(rows)


def shapley_values(scored) -> Any:
    """Exact Shapley values over modalities from the masked predictions (needs every subset).

    Two games per task: the cohort's AUROC when only subset ``S`` is kept (``shapley_auroc``;
    the empty set scores the prior, AUROC 0.5) and each patient's logit (its mean absolute
    value is ``mean_abs_logit_shapley``, its mean ``mean_logit_shapley``). Shapley values of a
    game add up to ``v(all) - v(none)``.
    """
    import pandas as pd

    preds, tasks, mods = scored.predictions, scored.tasks, scored.modalities
    from .scoring import subset_name

    need = [subset_name(s) for r in range(len(mods) + 1) for s in combinations(mods, r)]
    missing = [s for s in need if s not in scored.masked]
    if missing:
        from ..errors import ConfigError

        raise ConfigError(f"Shapley values need predictions for every modality subset; missing {missing}",
                          hint="score with subsets=True")
    n = len(mods)
    rows = []
    for k, t in enumerate(tasks):
        y = preds[f"label_{t}"].to_numpy(float)
        lab = ~np.isnan(y)
        v_auc = {}
        v_logit = {}
        for s in need:
            p = scored.masked[s][:, k]
            a = auroc(y[lab], p[lab])
            v_auc[s] = 0.5 if s == "none" or np.isnan(a) else a
            v_logit[s] = _logit(p)
        for m in mods:
            others = [x for x in mods if x != m]
            phi_auc, phi_i = 0.0, np.zeros(len(preds))
            for r in range(n):
                wgt = factorial(r) * factorial(n - r - 1) / factorial(n)
                for s in combinations(others, r):
                    with_m, without = subset_name((*s, m)), subset_name(s)
                    phi_auc += wgt * (v_auc[with_m] - v_auc[without])
                    phi_i += wgt * (v_logit[with_m] - v_logit[without])
            rows.append({"task": t, "modality": m, "shapley_auroc": phi_auc,
                         "mean_abs_logit_shapley": float(np.mean(np.abs(phi_i))) if len(phi_i) else np.nan,
                         "mean_logit_shapley": float(np.mean(phi_i)) if len(phi_i) else np.nan})
    return pd.DataFrame(rows)


def baseline_table(predictions, baselines: dict[str, Any], tasks) -> Any:
    """Does fusion help, against separately trained baselines (unimodal models, say)?

    ``baselines`` maps a name to an :class:`~medmm.evaluate.api.EvaluationResult` (whose
    ``modalities`` say what it uses) or to ``(predictions table, modalities)``. Each is
    compared with the fused model on the patients both scored that have every modality the
    baseline uses (DeLong's test of the AUROC difference).
    """
    import pandas as pd

    from .compare import delong_test

    rows = []
    for name, b in baselines.items():
        if isinstance(b, tuple):
            bpred, bmods = b
        else:
            bpred, bmods = b.predictions, tuple(b.modalities)
        m = predictions[["patient_id", "pattern", *[f"label_{t}" for t in tasks], *[f"prob_{t}" for t in tasks]]].merge(
            bpred[["patient_id", *[f"prob_{t}" for t in tasks]]], on="patient_id", suffixes=("", "__b"))
        has = m["pattern"].astype(str).str.split("+").map(lambda p, bmods=bmods: set(bmods) <= set(p)).to_numpy(bool)
        for t in tasks:
            y = m[f"label_{t}"].to_numpy(float)
            sel = has & ~np.isnan(y)
            d = delong_test(y[sel], m[f"prob_{t}"].to_numpy(float)[sel], m[f"prob_{t}__b"].to_numpy(float)[sel])
            rows.append({"task": t, "baseline": name, "baseline_modalities": "+".join(bmods), "n": int(sel.sum()),
                         "auroc_fused": d["auroc_1"], "auroc_baseline": d["auroc_2"], "gain": d["difference"],
                         "low": d["low"], "high": d["high"], "p_value": d["p_value"],
                         "fusion_helps": bool(d["low"] > 0) if not np.isnan(d["low"]) else False})
    return pd.DataFrame(rows)

"""Metrics per subgroup (sex, age band, site, scanner manufacturer, any manifest column)."""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np

from ..records import Image, PatientRecord, Tabular

__all__ = ["SmallSubgroupWarning", "subgroup_metrics", "DEFAULT_SUBGROUPS", "metrics_table", "AGE_BANDS", "age_band",
           "record_metadata"]

DEFAULT_SUBGROUPS = ("sex", "age_band", "site", "scanner_manufacturer")
#: metrics shown in subgroup and summary tables
TABLE_METRICS = ("auroc", "auprc", "brier", "ece", "youden.sensitivity", "youden.specificity")

#: (upper bound exclusive, label) of the age bands used for subgroups
AGE_BANDS = ((50, "<50"), (65, "50-64"), (80, "65-79"), (float("inf"), "80+"))
_AGE_KEY = re.compile(r"^age(\b|_|\s|$)", re.I)


def age_band(age: Any) -> str:
    try:
        a = float(age)
    except (TypeError, ValueError):
        return "unknown"
    if np.isnan(a):
        return "unknown"
    return next(label for hi, label in AGE_BANDS if a < hi)


def record_metadata(r: PatientRecord) -> dict[str, str]:
    """Subgroup columns of one record: every manifest metadata column, ``age_band`` (from a
    manifest or EHR ``age`` column) and ``scanner_manufacturer`` (from the image header)."""
    out = {str(k): ("unknown" if v is None else str(v)) for k, v in r.meta.items() if not str(k).startswith("_")}
    age = next((v for k, v in r.meta.items() if _AGE_KEY.match(str(k))), None)
    tables = [v for v in r.modalities.values() if isinstance(v, Tabular)]  # the EHR first, then other tables
    for tab in tables:
        if age is None:
            age = next((v for k, v in tab.values.items() if _AGE_KEY.match(str(k))), None)
        if "sex" not in out and tab.values.get("sex") is not None:
            out["sex"] = str(tab.values["sex"])
    out["age_band"] = age_band(age)
    img = next((v for v in r.modalities.values() if isinstance(v, Image)), None)
    manu = None if img is None else (getattr(img, "meta", {}) or {}).get("Manufacturer")
    out["scanner_manufacturer"] = str(manu).strip() if manu else "unknown"
    return out


def _order(value: Any) -> tuple:
    """Age bands in age order, 'unknown' last, everything else alphabetically."""
    bands = [label for _, label in AGE_BANDS]
    v = str(value)
    if v in bands:
        return (0, bands.index(v), v)
    return (2, 0, v) if v in ("unknown", "nan", "None") else (1, 0, v)


class SmallSubgroupWarning(UserWarning):
    """A subgroup has too few patients or events for its metrics to be estimated."""


def metrics_table(y, p, *, n_boot: int = 2000, seed: int = 0, ops=None, fixed_thresholds=None) -> dict[str, Any]:
    """``bootstrap_metrics`` flattened to ``{metric: est, metric_low: lo, metric_high: hi}``."""
    from .bootstrap import OperatingPoints, bootstrap_metrics

    res = bootstrap_metrics(y, p, n_boot=n_boot, seed=seed, ops=ops or OperatingPoints(),
                            fixed_thresholds=fixed_thresholds)
    out: dict[str, Any] = {"n": res["n"], "n_positive": res["n_positive"]}
    for k, v in res.items():
        if isinstance(v, tuple):
            if k in ("n", "n_positive"):
                continue
            out[k], out[f"{k}_low"], out[f"{k}_high"] = v
    return out


def subgroup_metrics(
    predictions,
    tasks,
    *,
    by: list[str] | tuple[str, ...] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    min_n: int = 30,
    min_events: int = 5,
    warn: bool = True,
):
    """Metrics with bootstrap CIs per value of each column in ``by`` (default: those of
    :data:`DEFAULT_SUBGROUPS` present in ``predictions``).

    A subgroup with fewer than ``min_n`` labelled patients, or fewer than ``min_events``
    positives or negatives, is flagged ``too_small`` and a :class:`SmallSubgroupWarning` is
    issued; its estimates are still given but not to be trusted. Returns a DataFrame:
    ``task, column, group, n, n_positive, too_small, <metric>, <metric>_low, <metric>_high``.
    """
    import pandas as pd

    cols = [c for c in (by or DEFAULT_SUBGROUPS) if c in predictions.columns]
    unknown = [c for c in (by or ()) if c not in predictions.columns]
    if unknown:
        from ..errors import ConfigError

        raise ConfigError(f"no column {unknown} in the predictions", hint=f"choose from {list(predictions.columns)}")
    rows, small = [], []
    for t in tasks:
        for c in cols:
            groups = sorted(predictions.groupby(c, sort=False, dropna=False), key=lambda kv: _order(kv[0]))
            for g, sub in groups:
                y = sub[f"label_{t}"].to_numpy(float)
                p = sub[f"prob_{t}"].to_numpy(float)
                lab = ~np.isnan(y)
                npos = int(y[lab].sum())
                nneg = int(lab.sum()) - npos
                too_small = bool(lab.sum() < min_n or min(npos, nneg) < min_events)
                m = metrics_table(y, p, n_boot=n_boot, seed=seed)
                rows.append({"task": t, "column": c, "group": str(g), "too_small": too_small, **m})
                if too_small:
                    small.append(f"{t}: {c}={g} (n={int(lab.sum())}, positives={npos}, negatives={nneg})")
    if warn and small:
        warnings.warn(f"{len(small)} subgroup(s) too small to estimate (fewer than {min_n} patients or "
                      f"{min_events} events): " + "; ".join(small[:10]) + (" ..." if len(small) > 10 else ""),
                      SmallSubgroupWarning, stacklevel=2)
    df = pd.DataFrame(rows)
    if len(df):
        lead = ["task", "column", "group", "n", "n_positive", "too_small"]
        df = df[lead + [c for c in df.columns if c not in lead]]
    return df
